"""Experiment (issue #12.4, not adopted): refine the served model's context and target vectors
by full-softmax cross-entropy, then measure HR@10 with the harness.

The served model's user vector is linear in the context vectors (a decayed, type-weighted sum of
the last items'), so both sides can be trained by gradient descent on the next item with the
worker's own decays: logits = tau * q . target_j, Adam over all items, the constant bias
dimension of the contexts kept. ``tau`` starts where the regression's scores (probabilities)
give the lowest cross-entropy on a probe of 4,096 samples. Results: docs/quality.md,
"What did not work".

    python docs/experiments/softmax_refine.py val EPOCHS LR   # Beauty's validation split
    python docs/experiments/softmax_refine.py test EPOCHS LR  # its test split

(EPOCHS 0 gives the served model as it is.)
"""
import json
import sys
import time

import numpy as np

import streamrec.evaluation.served as served
from indexing.train import train_model as base_train
from streamrec.core.interest import InterestParams

CFG = dict(epochs=int(sys.argv[2]) if len(sys.argv) > 2 else 3, lr=float(sys.argv[3]) if len(sys.argv) > 3 else 0.01,
           L=12, batch=512, wd=float(sys.argv[4]) if len(sys.argv) > 4 else 0.0, ctx=(sys.argv[5] != "0") if len(sys.argv) > 5 else True)


def samples(data, interest):
    users = data.user_of_event()
    n = len(data.items)
    start = data.user_ptr[:-1][users]
    pos = np.arange(n) - start
    w = interest.weight_table()[data.types.astype(np.int64)]
    dt = np.r_[0.0, np.maximum(0.0, np.diff(data.ts))]
    logf = np.log(interest.event_decay) + np.log(0.5) * dt / interest.half_life_s
    logf[pos == 0] = 0.0
    G = np.cumsum(logf)
    repeat = np.r_[False, (data.items[1:] == data.items[:-1]) & (users[1:] == users[:-1])]
    t = np.flatnonzero((pos > 0) & ~repeat)
    L = CFG["L"]
    items = np.full((len(t), L), 0, np.int64)
    coef = np.zeros((len(t), L), np.float32)
    for age in range(L):
        a = t - 1 - age
        ok = a >= start[t]
        items[ok, age] = data.items[a[ok]]
        coef[ok, age] = w[a[ok]] * np.exp(G[t - 1][ok] - G[a[ok]])
    return items, coef, data.items[t]


def refine(data, C, T, interest):
    items, coef, answer = samples(data, interest)
    N, d = T.shape
    rng = np.random.default_rng(0)
    params = [C, T]
    m = [np.zeros_like(p) for p in params]; v = [np.zeros_like(p) for p in params]
    lr_scale = [float(np.sqrt(np.mean(C ** 2))), float(np.sqrt(np.mean(T ** 2)))]
    b1, b2, eps = 0.9, 0.999, 1e-8
    # temperature: the regression's scores are probabilities (tiny); CE needs logits
    probe = rng.permutation(len(answer))[:4096]
    Qp = np.einsum("bl,bld->bd", coef[probe], C[items[probe]]); Sp = Qp @ T.T
    best = None
    for tau in [1, 3, 10, 30, 100, 300, 1000, 3000, 10000]:
        z = tau * Sp; z = z - z.max(1, keepdims=True)
        ce = float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(probe)), answer[probe]]))
        if best is None or ce < best[0]: best = (ce, tau)
    tau = best[1]; print("tau", best, file=sys.stderr)
    T *= np.float32(tau)
    step = 0
    B = CFG["batch"]
    for epoch in range(CFG["epochs"]):
        order = rng.permutation(len(answer))
        loss_sum = 0.0
        t0 = time.time()
        for s in range(0, len(order), B):
            idx = order[s:s + B]
            it, cf, ans = items[idx], coef[idx], answer[idx]
            Q = np.einsum("bl,bld->bd", cf, C[it])
            logits = Q @ T.T
            logits -= logits.max(axis=1, keepdims=True)
            P = np.exp(logits); P /= P.sum(axis=1, keepdims=True)
            loss_sum += -np.log(P[np.arange(len(ans)), ans] + 1e-12).sum()
            P[np.arange(len(ans)), ans] -= 1.0
            P /= len(ans)
            gT = P.T @ Q
            gQ = P @ T
            gC = np.zeros_like(C)
            if CFG["ctx"]:
                np.add.at(gC, it.ravel(), (cf[:, :, None] * gQ[:, None, :]).reshape(-1, d))
                gC[:, -1] = 0.0  # the constant (bias) dimension stays
            step += 1
            for k, (p, g) in enumerate(zip(params, [gC, gT])):
                if CFG["wd"]:
                    g = g + CFG["wd"] * p
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                mh = m[k] / (1 - b1 ** step); vh = v[k] / (1 - b2 ** step)
                p -= (CFG["lr"] * lr_scale[k] * mh / (np.sqrt(vh) + eps)).astype(p.dtype)
        print(f"epoch {epoch} loss {loss_sum / len(answer):.4f} {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    return C, T


def train_model(data, params, interest=None):
    model = base_train(data, params, interest)
    if CFG["epochs"] > 0:
        t0 = time.time()
        refine(data, model.context, model.target, interest or InterestParams())
        model.summary["refine_s"] = time.time() - t0
    return model


served.train_model = train_model

from streamrec.evaluation.data import load_log
from streamrec.evaluation.tune import validation_log
from streamrec.evaluation.protocols import run_leave_one_out
from streamrec.evaluation.served import ServedModel

import os  # noqa: E402

datasets = os.environ.get("STREAMREC_DATASETS_DIR", "../shared/datasets")
log = load_log(f"{datasets}/amazon-beauty/Beauty.txt", "amazon-seq")
which = sys.argv[1]
if which == "val":
    log = validation_log(log, "leave-one-out")
out = run_leave_one_out(ServedModel(), log)
print(json.dumps({"cfg": CFG, "which": which, "metrics": {k: round(v, 4) for k, v in out.metrics.items() if k in ("hr@10", "ndcg@10", "HR@10", "NDCG@10")} or out.metrics, "fit_s": round(out.fit_seconds, 1)}))
