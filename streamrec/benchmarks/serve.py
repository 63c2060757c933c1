"""``streamrec bench --serve``: request latency of ``streamrec serve`` on a real broker.

A worker runs the workload's events so that its users have states; then one ``streamrec
serve`` instance follows the worker's changelog, the catalog and the model, and the bench drives
``GET /v1/users/{user}/recommendations`` at a steady rate (open loop: each request leaves at its
scheduled time whatever the answers before it did, and its latency counts from that time, so a
slow server cannot hide behind a slow client) with an async HTTP client (aiohttp, in the bench's
own process, on the same machine), after 2 s of unmeasured warm-up (connections, caches), for
``duration_s`` seconds. It reports p50/p95/p99 of the latency and checks that the answers equal the worker's
latest list for the same state (the state's newest event is the list's trigger).
While the steady requests run, ``update_rate`` new events per second change users' states (the
replica's changelog delay is measured meanwhile). With ``find_max`` it then steps the rate up
(×1.5, 10 s each, without new events) to find the highest one with p99 ≤ 50 ms.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from streamrec.benchmarks.load import Workload, produce
from streamrec.harness.topics import wait_for_answers
from streamrec.harness.worker import WorkerConfig, WorkerProcess
from streamrec.kafka.admin import COMPACTED, ensure_topics

#: The latency target of the highest-rate search.
P99_TARGET_MS = 50.0


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_s(process: psutil.Process) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    times = process.cpu_times()
    return times.user + times.system


def _percentiles(values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ms = np.asarray(values_s) * 1000.0
    return {"p50": round(float(np.percentile(ms, 50)), 2), "p95": round(float(np.percentile(ms, 95)), 2),
            "p99": round(float(np.percentile(ms, 99)), 2), "max": round(float(ms.max()), 2)}


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_ready(port: int, process: subprocess.Popen, users: int, timeout: float, log_file: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited with {process.returncode}:\n{log_file.read_text()[-3000:]}")
        try:
            status, body = _get(port, "/readyz")
            if status == 200 and body["users"] >= users:
                return body
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"serve not ready with {users} users after {timeout:g} s")


async def drive(port: int, users: list[str], *, rate: float, duration_s: float, k: int = 10,
                seed: int = 0) -> dict[str, object]:
    """GET recommendations of random users at ``rate`` requests/s for ``duration_s`` (open loop)."""
    import aiohttp

    rng = np.random.default_rng(seed)
    n = max(1, int(rate * duration_s))
    chosen = rng.integers(len(users), size=n)
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, base_url=f"http://127.0.0.1:{port}") as session:
        async def one(user: str, due: float) -> None:
            nonlocal errors
            try:
                async with session.get(f"/v1/users/{user}/recommendations", params={"k": str(k)}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append(time.perf_counter() - due)

        loop = asyncio.get_running_loop()
        tasks = []
        start = time.perf_counter() + 0.1
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(one(users[int(chosen[i])], due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"rate": rate, "requests": n, "errors": errors, "achieved_rps": round(n / elapsed, 1),
            "latency_ms": _percentiles(latencies)}


def _fresh_events(workload: Workload, latest: dict, n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` new view events of users who have states, on items of the model, timed now."""
    from indexing.artifact import load_artifact
    from streamrec.contract import Event, encode_event

    rng = np.random.default_rng(7)
    users = sorted(latest)
    item_ids = load_artifact(workload.model_dir, use_gpu=False).item_ids
    now = time.time()
    keys, values = [], []
    for i in range(n):
        user = users[int(rng.integers(len(users)))]
        event = Event(f"fresh-{uuid.uuid4().hex[:12]}", user, item_ids[int(rng.integers(len(item_ids)))], "view", now)
        keys.append(user.encode())
        values.append(encode_event(event))
    return keys, values


def check_equality(port: int, latest: dict, users: list[str], k: int = 10) -> dict[str, object]:
    """Answers against the worker's latest lists for the same state (same order, scores within 1e-5)."""
    compared = identical = not_caught_up = 0
    for user in users:
        status, body = _get(port, f"/v1/users/{user}/recommendations?k={k}")
        rec = latest[user]
        if status != 200 or body["state_event_id"] != rec.event_id:
            not_caught_up += 1
            continue
        compared += 1
        ours = body["items"]
        identical += ([i["item_id"] for i in ours] == [i.item_id for i in rec.items]
                      and all(abs(a["score"] - b.score) <= 1e-5 for a, b in zip(ours, rec.items) if b.source == "model"))
    return {"compared": compared, "identical": identical, "other_state": not_caught_up}


def run_serve_bench(bootstrap: str, workload: Workload, *, rate: float, duration_s: float, workdir: Path,
                    partitions: int, find_max: bool = False, broker_pid: int | None = None, update_rate: float = 200.0, check_users: int = 2000, timeout: float = 900.0,
                    log: Callable[[str], None] = print) -> dict[str, object]:
    run = uuid.uuid4().hex[:6]
    topics = {name: f"{name}-serve-{run}" for name in ("events", "recommendations", "dlq", "items")}
    ensure_topics(bootstrap, {t: partitions for t in topics.values()}, configs={topics["items"]: COMPACTED})
    config = WorkerConfig(bootstrap=bootstrap, models_dir=workload.model_dir, data_dir=workdir / "serve-worker-data",
                          app_id=f"streamrec-serve-{run}", events_topic=topics["events"],
                          recommendations_topic=topics["recommendations"], dlq_topic=topics["dlq"],
                          partitions=partitions, extra_env={"STREAMREC_KAFKA__ITEMS_TOPIC": topics["items"]})
    worker = WorkerProcess(config, log_file=workdir / "serve-worker.log").start()
    serve = None
    try:
        worker.wait_ready()
        log(f"worker: {len(workload):,} events so that users have states")
        produce(bootstrap, topics["events"], workload.keys, workload.values)
        wanted = [event_id.decode() for event_id in workload.last_event_ids()]
        lists = wait_for_answers(bootstrap, topics["recommendations"], wanted, timeout=timeout)
        latest = {rec.user_id: rec for rec, _ in lists}
        users = sorted(latest)
        port = _free_port()
        log_file = workdir / "serve.log"
        with open(log_file, "ab") as out:
            serve = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "--log-level", "INFO", "serve",
                                      "--port", str(port), "--data-dir", str(workdir / "serve-data")],
                                     env=config.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        started = time.monotonic()
        ready = _wait_ready(port, serve, len(users), timeout=300, log_file=log_file)
        ready_s = time.monotonic() - started
        log(f"serve ready in {ready_s:.1f} s with {ready['users']:,} users; checking answers")
        sample = users if len(users) <= check_users else [users[i] for i in
                                                         np.random.default_rng(1).choice(len(users), check_users, replace=False)]
        equality = check_equality(port, latest, sample)
        log(f"equality: {equality}; warming up (2 s, not measured), then {rate:g} requests/s for {duration_s:g} s")
        asyncio.run(drive(port, users, rate=rate, duration_s=2.0, seed=99))
        # Meanwhile shoppers keep shopping: fresh events at ``update_rate``/s, so states change under
        # the requests and the replica's changelog delay is measured.
        updates = _fresh_events(workload, latest, int(update_rate * duration_s)) if update_rate > 0 else ([], [])
        # In a process of its own: a thread here would contend for the load generator's GIL.
        feeder = multiprocessing.get_context("spawn").Process(
            target=produce, args=(bootstrap, topics["events"], *updates), kwargs={"rate": update_rate}, daemon=True)
        if update_rate > 0:
            feeder.start()
        serve_process, bench_process = psutil.Process(serve.pid), psutil.Process()
        others = {"worker": psutil.Process(worker.process.pid)}
        if broker_pid is not None:
            others["broker"] = psutil.Process(broker_pid)
        if update_rate > 0:
            others["event_feeder"] = psutil.Process(feeder.pid)
        cpu_before = (_cpu_s(serve_process), _cpu_s(bench_process), time.perf_counter())
        others_before = {name: _cpu_s(process) for name, process in others.items()}
        machine_before = psutil.cpu_times()
        steady = asyncio.run(drive(port, users, rate=rate, duration_s=duration_s))
        elapsed = time.perf_counter() - cpu_before[2]
        machine_after = psutil.cpu_times()
        cpu = {"serve_cpu_ms_per_request": round((_cpu_s(serve_process) - cpu_before[0]) / steady["requests"] * 1000, 3),
               "client_cpu_ms_per_request":
                   round((_cpu_s(bench_process) - cpu_before[1]) / steady["requests"] * 1000, 3),
               "serve_cores_used": round((_cpu_s(serve_process) - cpu_before[0]) / elapsed, 2),
               "client_cores_used": round((_cpu_s(bench_process) - cpu_before[1]) / elapsed, 2),
               **{f"{name}_cores_used": round((_cpu_s(process) - others_before[name]) / elapsed, 2)
                  for name, process in others.items()},
               # Every process on the machine (other people's work included): busy cores of all.
               "machine_cores_busy": round(
                   (sum(machine_after) - machine_after.idle - machine_after.iowait
                    - (sum(machine_before) - machine_before.idle - machine_before.iowait)) / elapsed, 2)}
        if update_rate > 0:
            feeder.join()
        time.sleep(2.0)
        _, during = _get(port, "/readyz")
        log(f"cpu: {cpu}")
        log(f"steady: {steady}; inside serve: handler {during.get('handler_ms')}, lock wait {during.get('lock_wait_ms')}, "
            f"event-loop lag {during.get('loop_lag_ms')}")
        steps = []
        if find_max:
            step_rate = rate
            while True:
                step_rate *= 1.5
                result = asyncio.run(drive(port, users, rate=step_rate, duration_s=min(duration_s, 10.0), seed=len(steps) + 1))
                steps.append(result)
                log(f"step: {result}")
                p99 = result["latency_ms"]["p99"]  # type: ignore[index]
                if result["errors"] or p99 is None or p99 > P99_TARGET_MS or step_rate > 20_000:
                    break
        passing = [s["rate"] for s in [steady, *steps] if s["latency_ms"]["p99"] is not None  # type: ignore[index]
                   and s["latency_ms"]["p99"] <= P99_TARGET_MS and not s["errors"]]  # type: ignore[index]
    finally:
        if serve is not None and serve.poll() is None:
            serve.terminate()
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                serve.kill()
        worker.stop()
    from indexing.artifact import load_artifact

    model = load_artifact(workload.model_dir, use_gpu=False)
    return {
        "steady": steady,
        "equality": equality,
        "rate_steps": steps,
        "highest_rate_p99_le_50ms": max(passing) if passing else None,
        "serve_ready_s": round(ready_s, 1),
        "cpu": cpu,
        "changelog_delay_ms": during.get("changelog_delay_ms"),
        "server_handler_ms": during.get("handler_ms"),
        "server_lock_wait_ms": during.get("lock_wait_ms"),
        "server_loop_lag_ms": during.get("loop_lag_ms"),
        "server_gc_pause_ms": during.get("gc_pause_ms"),
        "update_events_per_s": update_rate,
        "config": {"items": workload.items, "model_items": model.n_items, "dim": model.dim,
                   "factory": model.meta.get("factory"), "users_with_state": len(users), "events": len(workload),
                   "partitions": partitions, "rate": rate, "duration_s": duration_s, "k": 10},
    }


def serve_text(result: dict) -> str:
    s, e = result["steady"], result["equality"]
    lat = s["latency_ms"]
    text = (f"{s['requests']:,} GET /v1/users/*/recommendations at {s['rate']:g}/s ({s['achieved_rps']:g}/s achieved, "
            f"{s['errors']} errors): p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms; "
            f"answers equal to the worker's latest list: {e['identical']}/{e['compared']}")
    delay = result.get("changelog_delay_ms") or {}
    text += (f"; changelog delay (worker write -> replica applied) with {result['update_events_per_s']:g} new events/s: "
             f"p50 {delay.get('p50')} ms, p99 {delay.get('p99')} ms")
    if result["rate_steps"]:
        text += f"; highest rate with p99 <= 50 ms: {result['highest_rate_p99_le_50ms']}/s"
    return text
