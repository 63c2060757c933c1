"""Pseudonyms: a keyed HMAC-SHA256 that everyone can recompute, with a key nobody sees."""

import logging
import pickle

import pytest
from click.testing import CliRunner

from producers.publisher import EventPublisher
from streamrec.cli import main
from streamrec.config import Settings, get_settings
from streamrec.contract import Event, decode_event
from streamrec.privacy import PseudonymKeyError, Pseudonymizer, pseudonym

KEY = "the-shop-secret-" + "k3y" * 6


def test_the_pseudonym_is_hmac_sha256_as_rfc_4231_and_openssl_compute_it():
    # RFC 4231, test case 6 (a key longer than SHA-256's block).
    assert pseudonym("Test Using Larger Than Block-Size Key - Hash Key First", b"\xaa" * 131) == (
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    # printf %s u-42 | openssl dgst -sha256 -hmac 'a key of sixteen+ chars'
    assert Pseudonymizer("a key of sixteen+ chars")("u-42") == (
        "3cf49b5d7e40cf11315b1eccbb6a9b74624cccf84a89b429bd9dc5a2d76e2f74")
    assert pseudonym("u-42", KEY) != pseudonym("u-43", KEY) != pseudonym("u-42", KEY + "2")


def test_the_key_never_shows(monkeypatch, caplog):
    monkeypatch.setenv("STREAMREC_PRIVACY__USER_ID_KEY", KEY)
    settings = Settings()
    pseudonymizer = Pseudonymizer.from_settings(settings)
    assert KEY not in repr(settings) and KEY not in str(settings.privacy) and KEY not in repr(pseudonymizer)
    with pytest.raises(TypeError):
        pickle.dumps(pseudonymizer)
    with pytest.raises(PseudonymKeyError) as short:
        Pseudonymizer("short-secret")
    assert "short-secret" not in str(short.value) and "at least 16 bytes" in str(short.value)
    with pytest.raises(PseudonymKeyError, match="STREAMREC_PRIVACY__USER_ID_KEY"):
        Pseudonymizer.from_settings(Settings(privacy={"user_id_key": None}))


def test_produce_pseudonymize_sends_only_pseudonyms_and_logs_no_key(monkeypatch, caplog):
    sent = []

    class Producer:
        def __init__(self, config):
            assert KEY not in repr(config)

        def produce(self, topic, value=None, key=None, on_delivery=None):
            sent.append((key, value))
            on_delivery(None, None)

        def poll(self, timeout=0):
            return 0

        def flush(self, timeout=0):
            return 0

        def __len__(self):
            return 0

    with EventPublisher("unused:9092", "events", producer_factory=Producer, pseudonymizer=Pseudonymizer(KEY)) as publisher:
        publisher.publish(Event("e-1", "alice@example.com", "sku-1", "view", 1.0))
    (key, value), = sent
    assert key == pseudonym("alice@example.com", KEY).encode() == decode_event(value).user_id.encode()
    assert b"alice" not in value

    monkeypatch.setenv("STREAMREC_PRIVACY__USER_ID_KEY", KEY)
    get_settings.cache_clear()
    try:
        caplog.set_level(logging.DEBUG)
        runner = CliRunner()
        dry = runner.invoke(main, ["--log-level", "DEBUG", "produce", "--user", "alice", "--item", "sku-1",
                                   "--pseudonymize", "--dry-run"])
        assert dry.exit_code == 0, dry.output
        shown = runner.invoke(main, ["pseudonym", "alice", "bob"])
        assert shown.output.split() == [pseudonym("alice", KEY), pseudonym("bob", KEY)]
        catalog = runner.invoke(main, ["produce", "--catalog-remove", "sku-1", "--pseudonymize", "--dry-run"])
        assert catalog.exit_code == 2 and "carry no user ids" in catalog.output
        monkeypatch.setenv("STREAMREC_PRIVACY__USER_ID_KEY", "tiny-secret")
        get_settings.cache_clear()
        refused = runner.invoke(main, ["pseudonym", "alice"])
        assert refused.exit_code == 1 and "at least 16 bytes" in refused.output
        outputs = dry.output + shown.output + catalog.output + refused.output + caplog.text
        assert KEY not in outputs and "tiny-secret" not in outputs
    finally:
        get_settings.cache_clear()
