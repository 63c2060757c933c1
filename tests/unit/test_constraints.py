"""pyproject.toml's ranges and constraints.txt's pins agree, and the venv runs the pins."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = [*project["dependencies"], *(t for extra in extras for t in project["optional-dependencies"][extra])]
    return [Requirement(text) for text in texts]


def test_every_requirement_is_a_range_that_its_pin_satisfies() -> None:
    pins = _pins()
    for requirement in _requirements("cpu", "gpu", "test"):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} has no pin in constraints.txt"
        assert not any(spec.operator == "==" for spec in requirement.specifier), \
            f"{requirement}: pyproject.toml holds ranges, constraints.txt the exact versions"
        assert any(spec.operator == "<" for spec in requirement.specifier), f"{requirement}: no upper bound"
        assert requirement.specifier.contains(pins[name]), f"the pin {pins[name]} is outside {requirement}"


def test_the_venv_runs_the_pinned_versions() -> None:
    """What the tests run on is what CI pins (`make install` installs with -c constraints.txt)."""
    faiss = "faiss-gpu" if _installed("faiss-gpu") else "faiss-cpu"
    drift = {name: (str(pin), _installed(name)) for name, pin in _pins().items()
             if (not name.startswith("faiss-") or name == faiss) and _installed(name) != str(pin)}
    assert drift == {}, "installed versions differ from constraints.txt (name: (pinned, installed))"


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
