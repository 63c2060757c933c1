"""Install streamrec as a user would (a built wheel, not editable) and run it from another folder.

The wheel is built from a copy of the sources (pip's isolated build, as `pip install .` does)
and installed without dependencies into a fresh venv; the dependencies themselves come from
this venv's site-packages through a ``.pth`` line (installing the pinned set from the index
again would take minutes and need the network for every run). A ``.pth`` line adds a folder
to ``sys.path`` without running the ``.pth`` files inside it, so this venv's editable hook
back to the source tree stays inactive: ``streamrec`` can only come from the wheel.

From a temporary working directory, the installed ``streamrec`` command then checks the
broker's status, trains, runs a worker, produces an event and consumes its recommendation,
and all state must land under that directory (the default home), nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka import KafkaLauncher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STATE = (".kafka", ".worker", "models", ".demo")


def _run(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 120,
         expect: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == expect, (
        f"{' '.join(command)} exited {done.returncode}, expected {expect}\n{done.stdout}\n{done.stderr}")
    return done


def _copy_sources(target: Path) -> Path:
    """What `pip install .` reads: pyproject.toml, README.md and the packages it lists."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    for name in packages:
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def _files_changed_since(folder: Path, since: float) -> list[Path]:
    if not folder.exists():
        return []
    return [path for path in folder.rglob("*") if path.stat().st_mtime >= since]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with streamrec installed from a wheel; returns its ``bin`` folder."""
    base = tmp_path_factory.mktemp("install")
    sources = _copy_sources(base / "src")
    wheels = base / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels), str(sources)],
         cwd=base, env=dict(os.environ), timeout=300)
    (wheel,) = wheels.glob("streamrec-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base, env=dict(os.environ))
    python = venv / "bin" / "python"
    target_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            cwd=base, env=dict(os.environ)).stdout.strip())
    (target_site / "_streamrec_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], cwd=base, env=dict(os.environ), timeout=300)
    return venv / "bin"


@pytest.mark.timeout(300)
def test_installed_commands_run_from_another_folder_with_state_under_the_home(
        installed: Path, kafka_launcher: KafkaLauncher, bootstrap: str, tmp_path: Path) -> None:
    started = time.time()
    home = tmp_path / "shop"
    home.mkdir()
    run = uuid.uuid4().hex[:8]
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("STREAMREC_") and key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({
        "PATH": f"{installed}{os.pathsep}{env.get('PATH', '')}",
        "STREAMREC_KAFKA__BOOTSTRAP": bootstrap,
        "STREAMREC_KAFKA__EVENTS_TOPIC": f"events-{run}",
        "STREAMREC_KAFKA__RECOMMENDATIONS_TOPIC": f"recommendations-{run}",
        "STREAMREC_KAFKA__DLQ_TOPIC": f"events-dlq-{run}",
        "STREAMREC_KAFKA__ITEMS_TOPIC": f"items-{run}",
        "STREAMREC_KAFKA__MODELS_TOPIC": f"models-{run}",
        "STREAMREC_KAFKA__PARTITIONS": "1",
        "STREAMREC_WORKER__APP_ID": f"streamrec-install-{run}",
        "PYTHONUNBUFFERED": "1",
    })
    streamrec = str(installed / "streamrec")

    # The package comes from the venv, not from the source tree.
    where = _run([str(installed / "python"), "-c", "import streamrec, streams; print(streamrec.__file__); "
                  "print(streams.__file__)"], cwd=home, env=env).stdout.split()
    venv = installed.parent
    for module_file in where:
        assert Path(module_file).is_relative_to(venv), f"{module_file} is not the installed copy"

    # No broker in this home: status says so and exits 3; state paths are under the home.
    status = json.loads(_run([streamrec, "kafka", "status", "--json"], cwd=home, env=env, expect=3).stdout)
    assert status["running"] is False
    assert status["home"] == str(home / ".kafka") and status["lib_dir"] == str(home / ".kafka" / "lib")
    # The session's broker, named by its home and ports: running, exit 0.
    session = {"STREAMREC_LOCAL_KAFKA__HOME": str(kafka_launcher.home),
               "STREAMREC_LOCAL_KAFKA__PORT": str(kafka_launcher.settings.port),
               "STREAMREC_LOCAL_KAFKA__CONTROLLER_PORT": str(kafka_launcher.settings.controller_port),
               "STREAMREC_KAFKA_LIB": str(kafka_launcher.lib_dir)}
    status = json.loads(_run([streamrec, "kafka", "status", "--json"], cwd=home, env={**env, **session}).stdout)
    assert (status["running"], status["ready"], status["bootstrap"]) == (True, True, bootstrap)

    meta = json.loads(_run([streamrec, "train", "--synthetic", "--users", "50", "--items", "200", "--events", "3000",
                            "--json"], cwd=home, env=env).stdout)
    version_dir = home / "models" / meta["version"]
    assert (home / "models" / "LATEST").read_text().strip() == meta["version"]
    item = json.loads((version_dir / "item_ids.json").read_text())[0]

    worker = WorkerProcess(WorkerConfig(bootstrap, home / "models", home / ".worker", env["STREAMREC_WORKER__APP_ID"]),
                           log_file=tmp_path / "worker.log")
    with (tmp_path / "worker.log").open("wb") as log:
        worker.process = subprocess.Popen([streamrec, "worker"], cwd=home, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
    worker.started_at = time.monotonic()
    try:
        worker.wait_ready(timeout=90)
        _run([streamrec, "produce", "--user", "u1", "--item", item, "--type", "view", "--event-id", f"install-{run}"],
             cwd=home, env=env)
        lines = _run([streamrec, "consume", "--json", "--from-beginning", "--max-messages", "1", "--timeout", "60"],
                     cwd=home, env=env, timeout=90).stdout.splitlines()
        assert worker.alive(), worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    assert len(lines) == 1, lines
    recommendation = json.loads(lines[0])
    assert (recommendation["user_id"], recommendation["event_id"]) == ("u1", f"install-{run}")
    assert recommendation["model_version"] == meta["version"] and recommendation["items"]

    # State landed under the home ...
    assert any((home / ".worker").rglob("*")), "the worker's tables are not under the home"
    assert (version_dir / "index.faiss").is_file()
    # ... and not beside the installed package, nor in the source tree.
    beside_package = [path for name in STATE for path in venv.rglob(name)]
    assert beside_package == []
    assert [path for name in STATE for path in _files_changed_since(ROOT / name, started)] == []
