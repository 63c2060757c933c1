"""What the tests, the demo, the benchmarks and the evaluation share to drive the real system:
start ``streamrec worker`` processes (:mod:`.worker`) and read topics until a condition holds
(:mod:`.topics`). Not used by the worker itself."""
