"""A bad environment setting ends any command with a sentence per setting, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streamrec.config import get_settings


def _run(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")} | env_extra
    return subprocess.run([sys.executable, "-m", "streamrec.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize(("env", "expected"), [
    ({"STREAMREC_RULES__FACTOR_WEIGHT": "sometimes"},
     ["invalid setting STREAMREC_RULES__FACTOR_WEIGHT (rules.factor_weight) = 'sometimes'", "'auto'"]),
    ({"STREAMREC_RULES__KNN_WEIGHT": "-1"},
     ["STREAMREC_RULES__KNN_WEIGHT", "greater than or equal to 0"]),
    ({"STREAMREC_EXPERIMENTS": "not json"}, ["experiments", "JSON"]),
])
def test_bad_setting_is_one_sentence(env: dict[str, str], expected: list[str]) -> None:
    done = _run(env, "kafka", "status")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    for text in expected:
        assert text in done.stderr
    assert done.stderr.startswith("Error: invalid setting")


def test_two_bad_settings_are_both_named() -> None:
    done = _run({"STREAMREC_RULES__FACTOR_WEIGHT": "x", "STREAMREC_WORKER__BATCH_SIZE": "many"}, "kafka", "status")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2
    assert {line.split()[3 if line.startswith("Error:") else 2] for line in lines} == {
        "STREAMREC_RULES__FACTOR_WEIGHT", "STREAMREC_WORKER__BATCH_SIZE"}


def test_good_settings_still_load() -> None:
    get_settings.cache_clear()
    assert get_settings().rules.factor_weight == "auto"
