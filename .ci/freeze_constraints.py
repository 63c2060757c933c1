"""Write constraints.txt: the exact versions of everything ``streamrec[cpu,test]`` pulls in.

Run from the repository root with the venv CI installs (``make constraints``): it reads
``pip freeze --exclude-editable`` and keeps only the packages reachable from streamrec's own
requirements (its extras ``cpu`` and ``test`` included), so tools installed by hand into the
venv do not end up pinned.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT_EXTRAS = ("cpu", "test")
HEADER = """\
# The exact versions CI installs and tests: `pip install -c constraints.txt -e ".[cpu,test]"`.
# pyproject.toml holds the compatible ranges; regenerate this file with `make constraints`.
"""


def project_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    """The project's own requirements, read from pyproject.toml (not from a stale install)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return [*project["dependencies"], *(text for extra in extras for text in project["optional-dependencies"][extra])]


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of every installed distribution ``requirements`` need, transitively."""
    found: set[str] = set()
    pending: list[tuple[list[str], tuple[str, ...]]] = [(requirements, ())]
    while pending:
        texts, current_extras = pending.pop()
        for text in texts:
            requirement = Requirement(text)
            markers = [{"extra": extra} for extra in ("", *current_extras)]
            if requirement.marker and not any(requirement.marker.evaluate(m) for m in markers):
                continue
            key = canonicalize_name(requirement.name)
            if key not in found:
                found.add(key)
                needs = metadata.distribution(requirement.name).requires or []
                pending.append((needs, tuple(requirement.extras)))
    return found


def main() -> None:
    wanted = closure(project_requirements(Path("pyproject.toml"), ROOT_EXTRAS))
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    pins = sorted((line for line in frozen if "==" in line
                   and canonicalize_name(line.split("==")[0]) in wanted), key=str.lower)
    missing = wanted - {canonicalize_name(line.split("==")[0]) for line in pins}
    if missing:
        raise SystemExit(f"not installed in this venv: {', '.join(sorted(missing))}")
    faiss = next(line.split("==")[1] for line in pins if canonicalize_name(line.split("==")[0]) == "faiss-cpu")
    text = HEADER + "\n".join(pins) + f"\n# `make FAISS=gpu`: the same FAISS release on the GPU.\nfaiss-gpu=={faiss}\n"
    Path("constraints.txt").write_text(text, encoding="utf-8")
    print(f"constraints.txt: {len(pins) + 1} pins")


if __name__ == "__main__":
    main()
