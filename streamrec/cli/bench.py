"""``streamrec bench``: the worker against the naive per-event agent on a real broker, or
``--index-only``: FAISS index types without Kafka. See docs/performance.md.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import click

from streamrec.benchmarks.load import DEFAULT_CACHE_DIR, DEFAULT_SHOP_RATE

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _int_list(value: str | None, flag: str) -> list[int] | None:
    if value is None:
        return None
    try:
        numbers = [int(part.replace("_", "")) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers like 12000,100000, got {value!r}",
                                 param_hint=flag) from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"expected numbers >= 1, got {value!r}", param_hint=flag)
    return numbers


def _check_factory(factory: str, flag: str) -> None:
    if factory == "auto":
        return
    import faiss

    try:
        faiss.index_factory(128, factory, faiss.METRIC_INNER_PRODUCT)  # the bench's dimension
    except RuntimeError:
        raise click.BadParameter(f"{factory!r} is not a FAISS factory string (try Flat, HNSW32 or IVF1024,Flat)",
                                 param_hint=flag) from None


def _floor_text(floor: dict) -> str:  # type: ignore[type-arg]
    lines = []
    for name, values in floor.items():
        lines.append(name + ": " + ", ".join(f"{key} {value:,.2f}" for key, value in values.items()))
    return "\n".join(lines)


@click.command("bench")
@click.option("--items", default=12_000, show_default=True, type=click.IntRange(min=100), help="Catalog size.")
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=1), help="Shoppers in the shop.")
@click.option("--events", default=200_000, show_default=True, type=click.IntRange(min=100),
              help="Events driven through the worker.")
@click.option("--naive-events", type=click.IntRange(min=100),
              help="Events driven through the naive agent (the first N of the same stream) [default: --events, "
              "the same as the worker's]; the report says when they differ.")
@click.option("--rate", type=click.FloatRange(min=1), help="Produce at this many events/s while the side runs "
              "(latency mode) [default: flat out: a backlog produced before the side starts].")
@click.option("--steady-rate", default=5000.0, show_default=True, type=click.FloatRange(min=0),
              help="Flat out only: then also run a fresh worker at this steady rate and report its latency, "
              "start-up included (0: skip).")
@click.option("--steady-events", default=30_000, show_default=True, type=click.IntRange(min=100),
              help="Events of the steady-rate run.")
@click.option("--naive/--no-naive", default=True, show_default=True, help="Also run the naive per-event agent.")
@click.option("--first", "first_side", type=click.Choice(["worker", "naive"]), default="worker", show_default=True,
              help="Which side runs first (alternate it between runs: the second side finds a broker that has "
              "served the first one for minutes).")
@click.option("--factory", default="auto", show_default=True, help="FAISS factory string of the model's index, or auto.")
@click.option("--nprobe", type=click.IntRange(min=1), help="IVF nprobe / HNSW efSearch [default: the worker's setting].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Worker micro-batch size [default: the worker's setting].")
@click.option("--faiss-threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="OpenMP threads FAISS may use in both sides (and --index-only); 0 = FAISS's default (all cores).")
@click.option("--partitions", default=4, show_default=True, type=click.IntRange(min=1), help="Partitions per topic.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the synthetic shop.")
@click.option("--dim", default=128, show_default=True, type=click.IntRange(min=2),
              help="Dimension of the bench's item vectors (the served default model has 256).")
@click.option("--refine-epochs", default=0, show_default=True, type=click.IntRange(min=0),
              help="Passes of the softmax refinement when the bench trains its item vectors (the served "
              "default trains 5; the worker's work per event is the same, only the vectors' values differ).")
@click.option("--shop-rate", type=click.FloatRange(min=1),
              help=f"Events per second of event time in the shop [default: --rate, else {DEFAULT_SHOP_RATE:g}].")
@click.option("--bootstrap", help="Use this running broker [default: start one in a temporary folder and stop it after].")
@click.option("--warmup-events", default=20_000, show_default=True, type=click.IntRange(min=0),
              help="Drive this many events through a throw-away worker first, so the broker's JVM has compiled "
              "its hot paths before anything is measured (the side run second gets a warm broker anyway).")
@click.option("--timeout", default=900.0, show_default=True, type=click.FloatRange(min=10),
              help="Seconds a side may take to answer every user's last event.")
@click.option("--profile", is_flag=True, help="Profile the worker with py-spy and summarise where its time goes.")
@click.option("--output", type=click.Path(file_okay=False, path_type=Path),
              help="Write result.json, lag.csv, latency.csv and lag-latency.png (and the profile) here.")
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=False, type=click.Path(file_okay=False, path_type=Path),
              help="Where generated workloads are cached [default: streamrec/benchmarks/results/tmp/cache].")
@click.option("--index-only", is_flag=True, help="Only benchmark FAISS index types (no Kafka).")
@click.option("--micro", is_flag=True, help="Only measure the per-event cost of each step of the pure core (no Kafka).")
@click.option("--floor", is_flag=True, help="Only measure the clients' and the broker's own costs: librdkafka and a "
              "do-nothing Faust agent consuming small events, and the broker's CPU per request.")
@click.option("--stock-churn", is_flag=True, help="Only measure how soon items that go out of stock leave every list, "
              "while the events flow at --rate (default 2000/s); see streamrec/benchmarks/stock.py.")
@click.option("--index-sizes", default="12000,100000", show_default=True,
              help="--index-only: catalog sizes, comma-separated (add 1000000 for the large run).")
@click.option("--index-factory", "index_factories", multiple=True,
              help="--index-only: a factory string to test (repeatable) [default: Flat, HNSW32, IVF<n>,Flat/SQ8/PQ32].")
@click.option("--index-batch-sizes", default="1,64,1024", show_default=True, help="--index-only: query batch sizes.")
@click.option("--index-queries", default=2048, show_default=True, type=click.IntRange(min=10),
              help="--index-only: user vectors used as queries.")
@click.option("--index-datasets", default="amazon-beauty,yoochoose,taobao,online-retail", show_default=True,
              help="--index-only: real logs (in the shared datasets folder, STREAMREC_DATASETS_DIR) to train the served "
              "model on and measure at their own size, queried by their users' vectors; empty for none.")
@click.option("--index-grow/--no-index-grow", default=True, show_default=True,
              help="--index-only: also measure catalogs of --index-sizes grown from the Amazon Beauty model's vectors.")
@click.option("--index-structural/--no-index-structural", default=True, show_default=True,
              help="--index-only: also measure the bench's structural (synthetic) catalogs of --index-sizes.")
@click.option("--index-raw-ip", is_flag=True, help="--index-only: build approximate indexes on the raw vectors with "
              "inner product instead of the Euclidean reduction the worker serves (to compare the two).")
@click.option("--index-targets", default="0.95,0.99", show_default=True,
              help="--index-only: recall@10 targets each approximate index is calibrated to.")
@click.option("--fill-users", is_flag=True, help="Drive one event for each of the --users users (not the shop's "
              "sessions), so the table ends with every user: measures state per user and RSS at that many users.")
@click.option("--serve", "serve_bench", is_flag=True, help="Only measure `streamrec serve`: a worker gives --users "
              "states from --events events, then GET requests at --rate per second (default 500) for --duration "
              "seconds; p50/p95/p99 and whether answers equal the worker's lists; see streamrec/benchmarks/serve.py.")
@click.option("--duration", default=30.0, show_default=True, type=click.FloatRange(min=1),
              help="--serve: seconds of requests at the steady rate.")
@click.option("--update-rate", default=200.0, show_default=True, type=click.FloatRange(min=0),
              help="--serve: new events per second produced while the requests run (states change under them).")
@click.option("--find-max", is_flag=True, help="--serve: then step the rate up (x1.5, 10 s each, no new events meanwhile) to the highest with "
              "p99 <= 50 ms.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
def bench(**options: object) -> None:
    """Benchmark the streamrec worker against a naive per-event Faust agent on a real broker."""
    import faulthandler

    faulthandler.enable()  # a crash in a native library (librdkafka, FAISS) says where
    as_json = bool(options["as_json"])
    quiet = as_json

    def log(text: str) -> None:
        if not quiet:
            click.echo(f"[bench] {text}", err=True)

    if options["index_only"]:
        _index_only(options, log)
        return
    if options["micro"]:
        _micro(options, log)
        return
    if options["serve_bench"]:
        _serve(options, log)
        return
    _check_factory(str(options["factory"]), "--factory")
    measured = _end_to_end(options, log)
    if measured is None:  # --floor printed its own result
        return
    result, sides, title, steady_side = measured
    output = options["output"]
    if output is not None:
        from streamrec.benchmarks.report import plot, write_csvs, write_output

        write_output(Path(str(output)), result, sides, title)
        if steady_side is not None:
            folder = Path(str(output)) / "steady"
            folder.mkdir(parents=True, exist_ok=True)
            write_csvs(folder, [steady_side])
            plot(folder / "lag-latency.png", [steady_side],
                 f"{title.rsplit(',', 1)[0]}, a fresh worker at a steady {result['steady']['rate']:,.0f} events/s")
        log(f"wrote {output}")
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        from streamrec.benchmarks.report import side_table

        console = Console()
        console.print(side_table(result, title))
        if result["ratio"] is not None:
            console.print(f"worker / naive events/s: [bold]{result['ratio']:.1f}x[/bold]")
        if result.get("lists_ratio") is not None:
            console.print(f"worker / naive lists/s: [bold]{result['lists_ratio']:.2f}x[/bold]")
        found = result.get("agreement")
        if found:
            console.print(f"same recommendations (worker vs naive, same trigger event): "
                          f"{found['identical']:,} identical and {found['identical_up_to_ties']:,} identical up to "
                          f"float ties of {found['compared']:,}, mean top-10 overlap {found['mean_overlap']}")
        steady = result.get("steady")
        if steady:
            latency, after = steady["latency_ms"], steady.get("latency_ms_steady") or {}
            console.print(f"worker at a steady {steady['rate']:,.0f} events/s (a fresh worker, start-up included): "
                          f"p50 {latency['p50']:,.1f} / p95 {latency['p95']:,.1f} / p99 [bold]{latency['p99']:,.1f}[/bold] ms; "
                          f"after the first 2 s p99 {after.get('p99') or 0:,.1f} ms; max lag {steady['max_lag']}")
        per_user = result.get("per_user")
        if per_user:
            console.print(f"per user: {per_user['state_bytes_per_user']} bytes per state, {per_user['disk_bytes_per_user']} "
                          f"bytes of RocksDB ({per_user['users']:,} users); at {per_user['extrapolated_users']:,} users: "
                          f"{per_user['rocksdb_gb_at_extrapolated']} GB of RocksDB, {per_user['changelog_gb_at_extrapolated']} GB of changelog")
        console.print(f"order: {' then '.join(result['config']['order'])}")
        for difference in result["config"]["differences"]:
            console.print(f"[yellow]the sides differ: {difference}[/yellow]")
        if result.get("profile"):
            console.print("worker profile (share of samples):")
            for kind, share in result["profile"]["shares"].items():
                console.print(f"  {kind:<34} {share:6.1%}")
    failure = agreement_failure(result)
    if failure is not None:
        raise click.ClickException(failure)


#: The user count the state's memory is extrapolated to (issue #13).
EXTRAPOLATE_TO_USERS = 10_000_000


def per_user_memory(side: dict[str, object]) -> dict[str, object] | None:
    """What a user costs the worker, from the side's table after the run, and that cost at
    :data:`EXTRAPOLATE_TO_USERS` users: states live in RocksDB on disk and in the changelog
    topic, so those grow by the measured bytes per user. The peak RSS is reported as measured;
    docs/performance.md compares it at two user counts (``--fill-users``) for its slope."""
    table = side.get("table") or {}
    users = table.get("users")  # type: ignore[union-attr]
    if not users:
        return None
    per_user = table.get("disk_bytes_per_user")  # type: ignore[union-attr]
    state = table.get("state_bytes_per_user")  # type: ignore[union-attr]
    return {
        "users": users, "state_bytes_per_user": state, "disk_bytes_per_user": per_user, "rss_mb": side.get("rss_mb"),
        "extrapolated_users": EXTRAPOLATE_TO_USERS,
        "rocksdb_gb_at_extrapolated": None if per_user is None else round(per_user * EXTRAPOLATE_TO_USERS / 1e9, 2),
        "changelog_gb_at_extrapolated": None if state is None else round(state * EXTRAPOLATE_TO_USERS / 1e9, 2),
    }


def _save_and_echo(result: dict[str, object], options: dict[str, object], filename: str) -> bool:
    """Write ``result`` to ``--output``/``filename`` if asked; with ``--json`` print it and return True."""
    if options["output"] is not None:
        folder = Path(str(options["output"]))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_text(json.dumps(result, indent=2) + "\n")
    if options["as_json"]:
        click.echo(json.dumps(result, indent=2))
        return True
    return False


def _index_only(options: dict[str, object], log) -> None:  # noqa: ANN001
    import faiss

    from streamrec.benchmarks.index_bench import run_index_bench, summary_rule, threads

    if int(options["faiss_threads"]):
        faiss.omp_set_num_threads(int(options["faiss_threads"]))
    sizes = _int_list(str(options["index_sizes"]), "--index-sizes") or []
    batch_sizes = _int_list(str(options["index_batch_sizes"]), "--index-batch-sizes") or []
    factories = list(options["index_factories"]) or None  # type: ignore[call-overload]
    for factory in factories or []:
        _check_factory(factory, "--index-factory")
    try:
        targets = [float(t) for t in str(options["index_targets"]).split(",") if t.strip()]
    except ValueError:
        raise click.BadParameter(f"expected recalls like 0.95,0.99, got {options['index_targets']!r}",
                                 param_hint="--index-targets") from None
    if not targets or not all(0 < t <= 1 for t in targets):
        raise click.BadParameter("every target recall must be in (0, 1]", param_hint="--index-targets")
    from indexing.index import EXACT_UP_TO
    from streamrec.benchmarks.index_bench import REAL_DATASETS
    from streamrec.benchmarks.load import prepare_workload
    from streamrec.config import get_settings

    datasets = [d.strip() for d in str(options["index_datasets"]).split(",") if d.strip()]
    for name in datasets:
        if name not in REAL_DATASETS:
            raise click.BadParameter(f"unknown dataset {name!r}; known: {', '.join(REAL_DATASETS)}",
                                     param_hint="--index-datasets")
    datasets_dir = get_settings().datasets_dir
    if (datasets or options["index_grow"]) and not datasets_dir.is_dir():
        raise click.ClickException(f"the datasets folder {datasets_dir} does not exist: set STREAMREC_DATASETS_DIR, "
                                   "or pass --index-datasets '' --no-index-grow")
    trained = {}
    for size in sizes:
        if size <= EXACT_UP_TO and options["index_structural"]:  # the bench's own trained model, cached
            trained[size] = prepare_workload(size, int(options["users"]), 1000, seed=int(options["seed"]), factory="auto",
                                             cache_dir=Path(str(options["cache_dir"])), log=log).model_dir
    measured = run_index_bench(sizes, factories=factories, batch_sizes=batch_sizes, targets=targets,
                               n_queries=int(options["index_queries"]), seed=int(options["seed"]), trained=trained,
                               datasets=datasets, datasets_dir=datasets_dir, grow=bool(options["index_grow"]),
                               structural=bool(options["index_structural"]), cache_dir=Path(str(options["cache_dir"])),
                               euclidean=not options["index_raw_ip"], log=log)
    rows = measured["rows"]
    result = {"index": rows, "picks": measured["picks"], "rule": summary_rule(), "faiss_threads": threads(),
              "hardware": hardware()}
    if _save_and_echo(result, options, "index.json"):
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FAISS indexes, inner product, d=128, recall@10 vs exact ({threads()} threads)")
    for column in ("items", "vectors", "factory", "target", "nprobe/ef", "build s", "bytes/item", "recall@10",
                   *(f"QPS b={b}" for b in batch_sizes)):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['n_items']:,}", str(row["vectors"]), str(row["factory"]) + (" (auto)" if row["auto"] else ""),
                      "-" if row["target_recall"] is None else f"{row['target_recall']:.2f}",
                      "-" if row["effort"] is None else str(row["effort"]), f"{row['build_s']:.1f}",
                      f"{row['bytes_per_item']:.0f}", f"{row['recall_at_10']:.3f}",
                      *(f"{row['qps'][str(b)]:,.0f}" for b in batch_sizes))
    Console(width=160).print(table)


def _broker(options: dict[str, object], stack: ExitStack, workdir: Path, log) -> tuple[str, int | None]:  # noqa: ANN001
    """``--bootstrap``, or a broker of the run's own in ``workdir`` (stopped with ``stack``):
    its address and, for a broker started here, its process id."""
    if options["bootstrap"] is not None:
        return str(options["bootstrap"]), None
    from streamrec.config import LocalKafkaSettings, get_settings
    from streamrec.kafka import KafkaLauncher

    settings = get_settings().local_kafka.model_copy(
        update={"home": workdir / "kafka", "port": _free_port(), "controller_port": _free_port()})
    launcher = KafkaLauncher(settings, lib_dir=LocalKafkaSettings().home / "lib")
    log(f"starting a broker on {launcher.bootstrap}")
    launcher.up(timeout=120)
    stack.callback(launcher.down)
    return launcher.bootstrap, launcher.status().pid


def _workload(options: dict[str, object], log, *, shop_rate: float):  # noqa: ANN001, ANN202
    """The seeded synthetic workload the options describe (--items, --users, --events, ...)."""
    from streamrec.benchmarks.load import prepare_workload

    return prepare_workload(int(options["items"]), int(options["users"]), int(options["events"]),
                            seed=int(options["seed"]), factory=str(options["factory"]), shop_rate=shop_rate,
                            cache_dir=Path(str(options["cache_dir"])), dim=int(options["dim"]),
                            refine_epochs=int(options["refine_epochs"]), log=log)


def _micro(options: dict[str, object], log) -> None:  # noqa: ANN001
    import faiss

    from streamrec.benchmarks.micro import run_micro

    if int(options["faiss_threads"]):
        faiss.omp_set_num_threads(int(options["faiss_threads"]))
    workload = _workload(options, log, shop_rate=float(options["shop_rate"] or options["rate"] or DEFAULT_SHOP_RATE))
    costs = run_micro(workload, batch_size=int(options["batch_size"] or 1000))
    result = {"micro_us_per_event": costs, "items": int(options["items"]), "faiss_threads": faiss.omp_get_max_threads(),
              "hardware": hardware()}
    if _save_and_echo(result, options, "micro.json"):
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"per-event cost of the pure core, {int(options['items']):,} items (µs, best of runs)")
    table.add_column("step")
    table.add_column("µs / event", justify="right")
    for name, us in costs.items():
        table.add_row(name, f"{us:,.2f}")
    Console(width=160).print(table)


def _serve(options: dict[str, object], log) -> None:  # noqa: ANN001
    import faiss

    from streamrec.benchmarks.serve import run_serve_bench, serve_text

    if int(options["faiss_threads"]):
        faiss.omp_set_num_threads(int(options["faiss_threads"]))
    workload = _workload(options, log, shop_rate=float(options["shop_rate"] or DEFAULT_SHOP_RATE))
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamrec-bench-serve-")))
        bootstrap, broker_pid = _broker(options, stack, workdir, log)
        result = run_serve_bench(str(bootstrap), workload, rate=float(options["rate"] or 500.0), broker_pid=broker_pid,
                                 duration_s=float(options["duration"]), workdir=workdir,
                                 partitions=int(options["partitions"]), find_max=bool(options["find_max"]),
                                 update_rate=float(options["update_rate"]),
                                 timeout=float(options["timeout"]), log=log)
    result["hardware"] = hardware()
    if not _save_and_echo(result, options, "serve.json"):
        click.echo(serve_text(result))


def hardware() -> dict[str, object]:
    import os
    import platform

    import psutil

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_1m": round(os.getloadavg()[0], 2)}


#: Scores this close (relative) are ties: which of two tied items a search returns first is
#: float noise (a batch's matrix product and one vector's can round the last bit apart).
TIE_TOLERANCE = 1e-5


def _tied(a: float, b: float, tolerance: float = TIE_TOLERANCE) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def same_up_to_ties(a: list[tuple[str, float]], b: list[tuple[str, float]], tolerance: float = TIE_TOLERANCE) -> bool:
    """Are two ranked lists of ``(item_id, score)`` the same list, up to float ties?

    The scores must agree position by position. Within a run of tied scores the order of the
    items is free, so each run must hold the same items, except the last run when it reaches
    the end of the list: a tie there may go on past the cut, so either side may have kept
    other members of it.

    >>> same_up_to_ties([("a", 0.9), ("b", 0.5)], [("a", 0.9), ("b", 0.5)])
    True
    >>> same_up_to_ties([("a", 0.9), ("b", 0.5), ("c", 0.5)], [("a", 0.9), ("c", 0.5), ("b", 0.5)])
    True
    >>> same_up_to_ties([("a", 0.9), ("b", 0.5)], [("a", 0.9), ("x", 0.5)])  # a tie at the cut
    True
    >>> same_up_to_ties([("a", 0.9), ("b", 0.5)], [("x", 0.9), ("b", 0.5)])
    False
    """
    if len(a) != len(b) or not all(_tied(x[1], y[1], tolerance) for x, y in zip(a, b)):
        return False
    start = 0
    while start < len(a):
        end = start + 1
        while end < len(a) and _tied(a[end][1], a[end - 1][1], tolerance):
            end += 1
        if end < len(a) and {i for i, _ in a[start:end]} != {i for i, _ in b[start:end]}:
            return False
        start = end
    return True


def agreement(worker_kept: dict[bytes, bytes], naive_kept: dict[bytes, bytes]) -> dict[str, object] | None:
    """Compare the two sides' recommendations for the same trigger events (raw values kept
    by the collectors, by event id)."""
    from streamrec.contract import decode_recommendation

    common = sorted(set(worker_kept) & set(naive_kept))
    if not common:
        return None
    identical, tied, overlaps, differing = 0, 0, [], []
    for event_id in common:
        a = [(i.item_id, i.score) for i in decode_recommendation(worker_kept[event_id]).items]
        b = [(i.item_id, i.score) for i in decode_recommendation(naive_kept[event_id]).items]
        if [i for i, _ in a] == [i for i, _ in b]:
            identical += 1
        elif same_up_to_ties(a, b):
            tied += 1
        else:
            differing.append(event_id.decode(errors="replace"))
        overlaps.append(len({i for i, _ in a} & {i for i, _ in b}) / max(len(b), 1))
    return {"compared": len(common), "identical": identical, "identical_up_to_ties": tied,
            "differing": len(differing), "differing_examples": differing[:5],
            "mean_overlap": round(sum(overlaps) / len(overlaps), 4)}


def agreement_failure(result: dict[str, object]) -> str | None:
    """Why the run's comparison is void (a sentence), or None when both sides gave the same
    lists: a speed ratio between programs that recommend different things means nothing."""
    if result.get("naive") is None:
        return None
    found = result.get("agreement")
    if not found:
        return ("the worker and the naive agent answered no trigger event in common, so their lists could not be "
                "compared; the bench is void")
    if found["differing"]:
        return (f"the worker and the naive agent gave different lists (beyond float ties) for {found['differing']:,} "
                f"of {found['compared']:,} trigger events (e.g. {', '.join(found['differing_examples'])}); "
                f"the bench is void")
    return None


def _agreement(worker, naive) -> dict[str, object] | None:  # noqa: ANN001
    return agreement(worker.kept, naive.kept)


def _differences(events: int, naive_events: int | None) -> list[str]:
    """Where the two sides' runs differ, in words (empty when only the way of working does)."""
    if naive_events is None or naive_events == events:
        return []
    return [f"the naive agent drove the first {naive_events:,} of the worker's {events:,} events"]


def _end_to_end(options: dict[str, object], log):  # noqa: ANN001, ANN202
    import os

    from streamrec.benchmarks.load import prepare_workload
    from streamrec.benchmarks.report import ratio
    from streamrec.benchmarks.runner import run_side

    load_before = round(os.getloadavg()[0], 2)
    if int(options["faiss_threads"]):  # also for building the model's index here
        import faiss

        faiss.omp_set_num_threads(int(options["faiss_threads"]))
    items, users, events = int(options["items"]), int(options["users"]), int(options["events"])
    rate = options["rate"]
    rate = None if rate is None else float(rate)  # type: ignore[arg-type]
    naive_events = options["naive_events"]
    naive_events = events if naive_events is None else int(naive_events)  # type: ignore[call-overload]
    shop_rate = options["shop_rate"] or rate or DEFAULT_SHOP_RATE
    shape = dict(seed=int(options["seed"]), factory=str(options["factory"]), shop_rate=float(shop_rate),
                 cache_dir=Path(str(options["cache_dir"])), dim=int(options["dim"]),
                 refine_epochs=int(options["refine_epochs"]), log=log)
    if options["fill_users"]:
        from streamrec.benchmarks.load import fill_workload

        workload = fill_workload(prepare_workload(items, users, 1000, **shape), seed=int(options["seed"]), log=log)
        events = len(workload)
        naive_events = min(naive_events, events)
    else:
        workload = prepare_workload(items, users, max(events, naive_events) if options["naive"] else events, **shape)
    run_id = f"{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    sides = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"streamrec-bench-{run_id}-")))
        bootstrap, broker_pid = _broker(options, stack, workdir, log)
        if options["stock_churn"]:
            from streamrec.benchmarks.stock import run_stock_churn, stock_text

            churn = run_stock_churn(str(bootstrap), workload.head(events), rate=rate or 2000.0, workdir=workdir,
                                    partitions=int(options["partitions"]), log=log)
            if not _save_and_echo(churn, options, "stock.json"):
                click.echo(stock_text(churn))
            return None
        if options["floor"]:
            from streamrec.benchmarks.floor import run_floor

            floor = run_floor(str(bootstrap), broker_pid, log=log)
            click.echo(json.dumps(floor, indent=2) if options["as_json"] else _floor_text(floor))
            return None
        common = dict(bootstrap=str(bootstrap), workdir=workdir, run_id=run_id, rate=rate,
                      faiss_threads=int(options["faiss_threads"]),
                      partitions=int(options["partitions"]), nprobe=options["nprobe"], timeout=float(options["timeout"]),
                      broker_pid=broker_pid, log=log)
        warmup = min(int(options["warmup_events"]), len(workload))
        if warmup:
            log(f"warming the broker up with {warmup:,} events (not measured)")
            (workdir / "warmup").mkdir()
            run_side("worker", workload.head(warmup), **{**common, "workdir": workdir / "warmup",
                                                         "run_id": f"{run_id}-warmup", "rate": None,
                                                         "log": lambda text: None})
        naive_workload = workload.head(naive_events)
        keep = naive_workload.last_event_ids() if options["naive"] else set()
        worker = naive = None
        order = ["worker", "naive"] if options["naive"] else ["worker"]
        if options["first_side"] == "naive" and options["naive"]:
            order.reverse()
        for name in order:
            if name == "worker":
                worker = run_side("worker", workload.head(events), batch_size=options["batch_size"],
                                  profile=bool(options["profile"]), keep=keep, **common)
                sides.append(worker)
                log(f"worker: {worker.events_per_s or 0:,.0f} events/s, p99 {worker.latency_ms['p99'] or 0:,.0f} ms")
            else:
                naive = run_side("naive", naive_workload, keep=keep, **common)
                sides.append(naive)
                log(f"naive: {naive.events_per_s or 0:,.0f} events/s, p99 {naive.latency_ms['p99'] or 0:,.0f} ms")
        steady = None
        steady_rate = float(options["steady_rate"] or 0)  # type: ignore[arg-type]
        if rate is None and steady_rate > 0 and not options["fill_users"]:
            # Freshness at a steady rate, from a cold start: a new worker process, its own topics
            # and an empty table of its own.
            (workdir / "steady").mkdir()
            steady = run_side("worker", workload.head(min(int(options["steady_events"]), len(workload))),
                              **{**common, "run_id": f"{run_id}-steady", "rate": steady_rate, "workdir": workdir / "steady"},
                              batch_size=options["batch_size"])
            log(f"worker at {steady_rate:g} events/s: p99 {steady.latency_ms['p99'] or 0:,.1f} ms (start-up included)")
        output = options["output"]
        if output is not None:  # the sides' own logs, for their counters and warnings
            Path(str(output)).mkdir(parents=True, exist_ok=True)
            for side in sides:
                if (workdir / f"{side.side}.log").exists():
                    (Path(str(output)) / f"{side.side}.log").write_bytes((workdir / f"{side.side}.log").read_bytes())
        profile = None
        if worker.profile is not None:
            from streamrec.benchmarks.profile import summarise

            profile = summarise(worker.profile)
            output = options["output"]
            if output is not None:
                Path(str(output)).mkdir(parents=True, exist_ok=True)
                (Path(str(output)) / "worker.pyspy.txt").write_bytes(worker.profile.read_bytes())
    from indexing.artifact import load_artifact

    from streamrec.benchmarks.load import index_recall

    model = load_artifact(workload.model_dir, use_gpu=False)
    index = index_recall(workload.model_dir, items, users, int(options["seed"]), float(shop_rate),
                         nprobe=options["nprobe"])
    log(f"index {index['factory']}: recall@10 {index['recall_at_10']} on the bench's user vectors "
        f"({index['effort_name'] or 'exact'} {index['effort'] or '-'}{', overridden by --nprobe ' + str(options['nprobe']) if options['nprobe'] else ''})")
    result = {
        "worker": worker.summary(),
        # The served index, and its recall@10 on the bench's own user vectors next to the events/s.
        "index": index,
        "naive": naive.summary() if naive else None,
        # Paced at --rate, both sides see the same events/s while they keep up: the ratio of
        # sustained throughputs only means something flat out.
        "ratio": ratio(worker, naive) if rate is None else None,
        "lists_ratio": (round(worker.lists_per_s / naive.lists_per_s, 2)
                        if rate is None and naive and worker.lists_per_s and naive.lists_per_s else None),
        "agreement": _agreement(worker, naive) if naive else None,
        "profile": profile,
        "steady": None if steady is None else {"rate": float(options["steady_rate"]), **steady.summary()},
        "per_user": per_user_memory(worker.summary()),
        "config": {
            "items": items, "users": users, "events": events, "naive_events": naive_events if naive else None,
            "rate": rate, "mode": "flat_out" if rate is None else "rate", "partitions": int(options["partitions"]),
            "order": order, "differences": _differences(events, naive_events if naive else None),
            "batch_size": options["batch_size"], "factory": model.meta.get("factory"), "nprobe": options["nprobe"],
            "faiss_threads": int(options["faiss_threads"]) or "default",
            "dim": model.dim, "refine_epochs": int(options["refine_epochs"]), "item_vectors": workload.item_vectors,
            "model_items": model.n_items, "seed": int(options["seed"]),
            "shop_rate": float(shop_rate), "bootstrap": "own broker" if options["bootstrap"] is None else "given",
            "load_average_1m_before": load_before, "fill_users": bool(options["fill_users"]),
        },
        "hardware": hardware(),
    }
    mode = "flat out" if rate is None else f"{rate:g} events/s"
    title = f"streamrec bench: {items:,} items, {users:,} users, {mode}"
    return result, sides, title, steady
