"""What the operations page's funnel costs (docs/operations.md): the events topic's reader
(:class:`streams.panels.EventWindow`) fed ``--events`` seeded synthetic events (no broker: the
messages are handed to it as the consumer would), the memory it then holds (``tracemalloc``),
and one funnel over the window (:func:`streams.panels.funnel_state`, computed when new events
came), checked against the distinct users per stage counted here::

    python -m streamrec.benchmarks.panels --events 100000
"""

from __future__ import annotations

import argparse
import json
import random
import time
import tracemalloc

import orjson

from streamrec.contract import Event
from streams.panels import EventWindow, funnel_state

TYPES = ["view"] * 70 + ["click"] * 20 + ["add_to_cart"] * 7 + ["purchase"] * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    events = [Event(f"e{n}", f"u{rng.randrange(args.users)}", f"i{rng.randrange(5_000)}", rng.choice(TYPES),
                    1_700_000_000 + n * 0.5, category=f"c{rng.randrange(50)}", quantity=1.0) for n in range(args.events)]
    raw = [orjson.dumps(e.to_dict()) for e in events]
    tracemalloc.start()
    window = EventWindow("unused:9092", "events", window_s=args.events * 0.5 + 1, max_events=args.events)
    started = time.perf_counter()
    for value in raw:
        window.handle(None, value)
    read_s = time.perf_counter() - started
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    held_events, *_ = window.snapshot()
    started = time.perf_counter()
    state = funnel_state(held_events)
    funnel_s = time.perf_counter() - started
    expected = {t: len({e.user_id for e in events if e.type == t}) for t in ("view", "click", "add_to_cart", "purchase")}
    if state["users"] != expected:
        raise SystemExit(f"the funnel {state['users']} is not the distinct users per stage {expected}")
    print(json.dumps({"events": len(held_events), "read_events_per_s": round(args.events / read_s),
                      "held_mib": round(held / 2**20, 1), "funnel_ms": round(1000 * funnel_s), "users": state["users"]}))


if __name__ == "__main__":
    main()
