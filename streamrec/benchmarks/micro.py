"""``streamrec bench --micro``: what each step of the worker's pure core costs per event.

Without Kafka or Faust, on the benchmark workload's real events and model: decoding (JSON
alone, the contract, the worker's batch decoder), the state codec on states with a full
history, the vectorised update, one FAISS batch search, encoding recommendations, the whole
``process_batch`` and the naive agent's per-event path. Subtracting ``process_batch`` from
the end-to-end CPU per event of ``streamrec bench`` leaves what Faust, aiokafka and RocksDB
cost around it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import numpy as np
import orjson

from streamrec.benchmarks.load import Workload
from streamrec.config import get_settings
from streams.engine import GC_THRESHOLDS
from streams.shell import interest_params


def _per_call_us(fn: Callable[[], object], units: int, budget_s: float = 0.4) -> float:
    """Microseconds per unit of ``fn()`` (which handles ``units`` units), best of the calls run
    within ``budget_s`` after one warm-up call (best, not mean: the machine is shared)."""
    fn()
    best = float("inf")
    deadline = time.perf_counter() + budget_s
    while True:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() > deadline:
            return 1e6 * best / units


def run_micro(workload: Workload, *, batch_size: int = 1000, budget_s: float = 0.4) -> dict[str, float]:
    """Microseconds per event (per recommendation for the encoders) of each step."""
    from indexing.artifact import load_artifact
    from streamrec.benchmarks.naive_agent import handle_event
    from streamrec.contract import (
        EVENT_TYPE_CODES,
        decode_event,
        decode_events,
        encode_recommendation,
    )
    from streamrec.core.batch import Message, decode_batch, process_batch
    from streamrec.core.interest import update_batch
    from streamrec.core.search import search
    from streamrec.core.state import decode_state, encode_state

    model = load_artifact(workload.model_dir, use_gpu=False)
    params = interest_params(get_settings())  # the worker's: the rules' steps (e.g. STREAMREC_RULES__FACTOR_WEIGHT)
    n = min(len(workload), 20 * batch_size)
    messages = [Message(k, v, 0, i) for i, (k, v) in enumerate(zip(workload.keys[:n], workload.values[:n], strict=True))]
    # Warm the store so states carry history, as they do in a running shop.
    store: dict[str, object] = {}
    for start in range(0, n - batch_size, batch_size):
        result = process_batch(messages[start : start + batch_size], lambda u, _: store.get(u), model, params)
        store.update({user: state for user, (state, _) in result.states.items()})
    batch = messages[n - batch_size :]
    values = [m.value for m in batch]
    decoded, _ = decode_batch(batch)
    events = [e for _, e in decoded]
    states = [s for s in store.values()][:batch_size]
    encoded_states = [encode_state(s) for s in states]  # type: ignore[arg-type]
    users = {user: i for i, user in enumerate(dict.fromkeys(e.user_id for e in events))}
    vectors = np.random.default_rng(0).standard_normal((len(users), model.dim)).astype(np.float32)
    queries = vectors.copy()
    rec_result = process_batch(batch, lambda u, _: store.get(u), model, params)
    recs = rec_result.recommendations

    def update() -> None:
        update_batch(
            vectors.copy(), np.full(len(users), np.nan),
            np.fromiter((users[e.user_id] for e in events), np.int64, len(events)),
            np.fromiter((model.row_of[e.item_id] for e in events), np.int64, len(events)),
            np.fromiter((EVENT_TYPE_CODES[e.type] for e in events), np.int64, len(events)),
            np.fromiter((e.ts for e in events), np.float64, len(events)),
            model.context, params,
        )

    naive_store = dict(store)

    def naive() -> None:
        for message in batch:
            handle_event(message, naive_store.get, model, params)  # type: ignore[arg-type]

    costs = {
        "orjson.loads": _per_call_us(lambda: [orjson.loads(v) for v in values], len(values), budget_s),
        "decode_event (JSON + contract)": _per_call_us(lambda: [decode_event(v) for v in values], len(values), budget_s),
        "decode_events (the batch in one C call)": _per_call_us(lambda: decode_events(values), len(values), budget_s),
        "decode_batch (+ key check)": _per_call_us(lambda: decode_batch(batch), len(batch), budget_s),
        "decode_state (full history)": _per_call_us(lambda: [decode_state(r) for r in encoded_states], len(encoded_states), budget_s),
        "encode_state (full history)": _per_call_us(lambda: [encode_state(s) for s in states], len(states), budget_s),  # type: ignore[arg-type]
        "update_batch (numpy, per event)": _per_call_us(update, len(events), budget_s),
        f"FAISS search {model.meta.get('factory')} (batch {len(queries)}, per query)":
            _per_call_us(lambda: search(model.index, queries, params.k, [set()] * len(queries)), len(queries), budget_s),
        "FAISS search (batch 1, per query)": _per_call_us(lambda: search(model.index, queries[:1], params.k, [set()]), 1, budget_s),
        "encode_recommendation": _per_call_us(lambda: [encode_recommendation(r) for r in recs], len(recs), budget_s),
        "process_batch (whole core, per event)":
            _per_call_us(lambda: process_batch(batch, lambda u, _: store.get(u), model, params), len(batch), budget_s),
        "naive handle_event (whole core, per event)": _per_call_us(naive, len(batch), budget_s),
    }
    # The worker's garbage-collector settings (streams.engine.GC_THRESHOLDS) against Python's
    # defaults, on all the events above as one batch (the worker's batches reach 20,000).
    whole = messages[:n]
    for label, thresholds, freeze in (("default GC", None, False), ("the worker's GC settings", GC_THRESHOLDS, True)):
        previous = gc.get_threshold()
        if freeze:
            gc.collect()
            gc.freeze()
        if thresholds is not None:
            gc.set_threshold(*thresholds)
        try:
            costs[f"process_batch of {len(whole):,} events, {label}"] = _per_call_us(
                lambda: process_batch(whole, lambda u, _: store.get(u), model, params), len(whole), 4 * budget_s)
        finally:
            gc.set_threshold(*previous)
            if freeze:
                gc.unfreeze()
    return {name: round(us, 2) for name, us in costs.items()}
