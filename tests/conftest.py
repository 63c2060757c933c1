"""Shared by every test: the shared datasets, which CI must have and a laptop may lack."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.config import get_settings


def in_ci() -> bool:
    """True when the environment says this is CI (``CI`` set to anything but empty/0/false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_dataset(*parts: str) -> Path:
    """The shared datasets folder, or a file or folder in it.

    When it is missing the test is skipped, except in CI, where a missing dataset means
    the machine is not set up as it should be: the test fails instead of passing silently.
    """
    path = get_settings().datasets_dir.joinpath(*parts)
    if not path.exists():
        message = (f"{path} is missing: the shared datasets are absent (set STREAMREC_DATASETS_DIR, "
                   "see ../shared/datasets/README.md)")
        if in_ci():
            pytest.fail(f"{message}; CI must have them", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dataset() -> Callable[..., Path]:
    """``shared_dataset("amazon-beauty", "Beauty.txt")``: the path, or skip (fail in CI)."""
    return require_dataset


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Every test marked ``datasets`` needs the folder, whether or not it asks for a file."""
    if item.get_closest_marker("datasets") is not None:
        require_dataset()
