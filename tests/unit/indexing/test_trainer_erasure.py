"""The trainer's window forgets a user at their erasure request; later events are a new user's."""

from types import SimpleNamespace

import numpy as np

from indexing.trainer import EventWindow, Trainer, TrainerParams
from streamrec.contract import ErasureRequest, Event, encode_erasure, encode_event


def ev(n: int, user: str, item: str = "i") -> Event:
    return Event(f"e{n}", user, f"{item}{n % 3}", "view", float(n))


def window_rows(window: EventWindow) -> list[tuple[str, str, float]]:
    snap = window.snapshot()
    users = {code: user for user, code in window._user_codes.items()}
    return [(users[u], snap.item_keys[i], t) for u, i, t in zip(snap.users, snap.items, snap.ts)]


def test_forget_drops_every_event_of_the_user_even_in_a_wrapped_ring():
    window = EventWindow(capacity=6)
    events = [ev(n, "a" if n % 2 else "b") for n in range(9)]  # the ring wrapped: the newest 6 are kept
    window.extend(events)
    assert window.forget("a") == 3
    assert window_rows(window) == [("b", f"i{n % 3}", float(n)) for n in (4, 6, 8)]
    window.extend([ev(9, "a"), ev(10, "c")])  # "a" comes back: a new user with only this event
    assert window_rows(window)[-2:] == [("a", "i0", 9.0), ("c", "i1", 10.0)]
    assert window.forget("nobody") == 0
    assert len(set(window._user_codes.values())) == len(window._user_codes) == 3


def test_the_trainer_reads_an_erasure_request_in_the_events_topic_and_forgets_the_user():
    def message(value: bytes, offset: int) -> SimpleNamespace:
        return SimpleNamespace(error=lambda: None, partition=lambda: 0, offset=lambda: offset, value=lambda: value)

    before = [ev(n, "a") for n in range(3)] + [ev(3, "b")]
    after = [ev(4, "a")]
    stream = [encode_event(e) for e in before] + [encode_erasure(ErasureRequest("a", 99.0))] + [encode_event(e) for e in after]
    trainer = Trainer.__new__(Trainer)  # no Kafka: only the reading of one batch
    trainer.window, trainer.skipped = EventWindow(100), 0
    trainer.metrics = SimpleNamespace(events=SimpleNamespace(inc=lambda n: None), skipped=SimpleNamespace(inc=lambda n: None),
                                      window=SimpleNamespace(set=lambda n: None))
    trainer.params = TrainerParams()
    trainer._consumer = SimpleNamespace(consume=lambda n, timeout: [message(v, o) for o, v in enumerate(stream)])
    added, positions = trainer._read()
    assert added == 5 and trainer.skipped == 0 and positions == {0: 6}
    rows = window_rows(trainer.window)
    assert rows == [("b", "i0", 3.0), ("a", "i1", 4.0)]
    assert np.array_equal(trainer.window.snapshot().ts, [3.0, 4.0])
