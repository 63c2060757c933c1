"""``forget``: one erasure request, keyed by the user, to the erasures topic and then the events topic."""

import pytest

from producers.erasure import forget
from streamrec.contract import ErasureRequest, decode_erasure
from streamrec.privacy import Pseudonymizer, pseudonym


class Recorder:
    sent: list = []

    def __init__(self, config):
        self.config = config

    def produce(self, topic, value=None, key=None, on_delivery=None):
        Recorder.sent.append((topic, key, value))
        on_delivery(None, None)

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        return 0

    def __len__(self):
        return 0


def test_forget_sends_the_request_to_both_topics_keyed_by_the_user():
    Recorder.sent = []
    request = forget("u-42", bootstrap="b:9092", events_topic="ev", erasures_topic="er", requested_at=5.0,
                     producer_factory=Recorder)
    assert request == ErasureRequest("u-42", 5.0)
    assert [(topic, key, decode_erasure(value)) for topic, key, value in Recorder.sent] == [
        ("er", b"u-42", request), ("ev", b"u-42", request)]


def test_forget_uses_the_partitioner_of_the_shops_producers():
    configs = []

    class Remember(Recorder):
        def __init__(self, config):
            configs.append(config)

    forget("u-1", bootstrap="b", events_topic="ev", erasures_topic="er", partitioner="murmur2_random",
           producer_factory=Remember)
    assert [c["partitioner"] for c in configs] == ["murmur2_random", "murmur2_random"]
    configs.clear()
    forget("u-1", bootstrap="b", events_topic="ev", erasures_topic="er", producer_factory=Remember)
    assert all("partitioner" not in c for c in configs) and len(configs) == 2


def test_forget_a_raw_id_by_its_pseudonym_and_refuse_a_blank_one():
    Recorder.sent = []
    key = "sixteen-or-more-bytes"
    request = forget("alice", bootstrap="b", events_topic="ev", erasures_topic="er", pseudonymizer=Pseudonymizer(key),
                     producer_factory=Recorder)
    assert request.user_id == pseudonym("alice", key)
    assert {k for _, k, _ in Recorder.sent} == {pseudonym("alice", key).encode()}
    assert all(b"alice" not in v for _, _, v in Recorder.sent)
    with pytest.raises(ValueError, match="must not be empty"):
        forget("  ", bootstrap="b", events_topic="ev", erasures_topic="er", producer_factory=Recorder)
