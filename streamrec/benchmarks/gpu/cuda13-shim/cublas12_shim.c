/* libcublas.so.12 shim: exports the 8 cuBLAS symbols that faiss-gpu-cu12 1.14.1.post1 imports
   (versioned @libcublas.so.12) and forwards them to the CUDA 13 libcublas.so.13 found at runtime. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
typedef int st; typedef void *H;
static void *lib;
static void *sym(const char *n) {
  if (!lib) { lib = dlopen("libcublas.so.13", RTLD_NOW | RTLD_GLOBAL);
    if (!lib) { fprintf(stderr, "cublas12 shim: %s\n", dlerror()); abort(); } }
  void *p = dlsym(lib, n); if (!p) { fprintf(stderr, "cublas12 shim: no %s\n", n); abort(); } return p;
}
#define F(name, params, args) st name params { static st (*f) params; if (!f) f = (st (*) params) sym(#name); return f args; }
F(cublasCreate_v2, (H *h), (h))
F(cublasDestroy_v2, (H h), (h))
F(cublasSetStream_v2, (H h, void *s), (h, s))
F(cublasGetMathMode, (H h, int *m), (h, m))
F(cublasSetMathMode, (H h, int m), (h, m))
F(cublasSgemmEx, (H h, int ta, int tb, int m, int n, int k, const float *al, const void *A, int At, int lda,
                  const void *B, int Bt, int ldb, const float *be, void *C, int Ct, int ldc),
  (h, ta, tb, m, n, k, al, A, At, lda, B, Bt, ldb, be, C, Ct, ldc))
F(cublasGemmEx, (H h, int ta, int tb, int m, int n, int k, const void *al, const void *A, int At, int lda,
                 const void *B, int Bt, int ldb, const void *be, void *C, int Ct, int ldc, int ct, int algo),
  (h, ta, tb, m, n, k, al, A, At, lda, B, Bt, ldb, be, C, Ct, ldc, ct, algo))
F(cublasGemmStridedBatchedEx, (H h, int ta, int tb, int m, int n, int k, const void *al, const void *A, int At,
                 int lda, long long sA, const void *B, int Bt, int ldb, long long sB, const void *be, void *C,
                 int Ct, int ldc, long long sC, int bc, int ct, int algo),
  (h, ta, tb, m, n, k, al, A, At, lda, sA, B, Bt, ldb, sB, be, C, Ct, ldc, sC, bc, ct, algo))
