"""Index settings: the calibration's target recall and the optional effort override."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamrec.config import Settings


def test_target_recall_comes_from_the_environment_and_nprobe_is_only_an_override(monkeypatch):
    assert Settings().index.target_recall == 0.95 and Settings().index.nprobe is None
    monkeypatch.setenv("STREAMREC_INDEX__TARGET_RECALL", "0.99")
    monkeypatch.setenv("STREAMREC_INDEX__NPROBE", "24")
    index = Settings().index
    assert index.target_recall == 0.99 and index.nprobe == 24


@pytest.mark.parametrize("value", ["0", "1.5", "high"])
def test_a_target_recall_outside_0_to_1_is_refused(monkeypatch, value):
    monkeypatch.setenv("STREAMREC_INDEX__TARGET_RECALL", value)
    with pytest.raises(ValidationError, match="target_recall"):
        Settings()
