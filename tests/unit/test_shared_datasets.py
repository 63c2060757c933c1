"""The shared-datasets guard: skip on a machine without them, fail in CI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.config import get_settings


@pytest.fixture
def datasets_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("STREAMREC_DATASETS_DIR", str(tmp_path / "datasets"))
    get_settings.cache_clear()
    yield tmp_path / "datasets"
    get_settings.cache_clear()


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_missing_datasets_fail_in_ci(shared_dataset: Callable[..., Path], datasets_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI must have them"):
        shared_dataset("amazon-beauty", "Beauty.txt")


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_datasets_skip_elsewhere(shared_dataset: Callable[..., Path], datasets_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=str(datasets_dir / "amazon-beauty")):
        shared_dataset("amazon-beauty", "Beauty.txt")


def test_present_datasets_are_returned(shared_dataset: Callable[..., Path], datasets_dir: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    (datasets_dir / "amazon-beauty").mkdir(parents=True)
    (datasets_dir / "amazon-beauty" / "Beauty.txt").write_text("1 2 3\n")
    assert shared_dataset("amazon-beauty", "Beauty.txt") == datasets_dir / "amazon-beauty" / "Beauty.txt"
    assert shared_dataset() == datasets_dir
