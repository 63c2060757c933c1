"""``streamrec report``: what the recommender earns, read from the attribution topic
(``attribution``, ``experiment NAME``; ``streamrec attribute`` publishes it, statistics in
:mod:`streamrec.core.abtest`, definitions in docs/business.md), and how shoppers behave, read
from the events (``behaviour``: funnel, interest, trends, sessions; docs/forecasting.md)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from producers.readers import FORMATS, ReadStats, read_events
from streamrec.config import get_settings
from streamrec.contract import Event

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

_bootstrap = click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
_topic = click.option("--topic", help="Attribution topic [default: settings kafka.attribution_topic].")


def _records(bootstrap: str | None, topic: str | None) -> list[dict]:
    from confluent_kafka import KafkaException

    from streamrec.kafka.reading import NoSuchTopic
    from streams.attribution import read_attribution

    kafka = get_settings().kafka
    try:
        return list(read_attribution(bootstrap or kafka.bootstrap, topic or kafka.attribution_topic).values())
    except (NoSuchTopic, KafkaException, TimeoutError) as exc:
        raise click.ClickException(f"cannot read the attribution topic: {exc}") from None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@click.group()
def report() -> None:
    """Reports: what shoppers did with the recommendations, and how they behave."""



@report.command()
@_bootstrap
@_topic
@click.option("--json", "as_json", is_flag=True, help="One JSON object per hour, model version and variant.")
def attribution(bootstrap, topic, as_json) -> None:  # noqa: ANN001
    """Per hour, model version and experiment variant: lists shown, CTR, add-to-cart and conversion rates, revenue."""
    rows = sorted((r for r in _records(bootstrap, topic) if r.get("kind") == "hourly"),
                  key=lambda r: (r["hour"], r["model_version"], r["experiment"] or "", r["variant"] or ""))
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no attributed lists yet: is `streamrec attribute` running on this Kafka?")
        return
    header = f"{'hour (UTC)':<17} {'model':<9} {'experiment/variant':<24} {'shown':>7} {'CTR':>8} {'cart':>8} {'conv':>8} {'revenue':>12}"
    click.echo(header)
    for r in rows:
        hour = dt.datetime.fromtimestamp(r["hour"], dt.timezone.utc).strftime("%Y-%m-%d %H:00")
        arm = f"{r['experiment']}/{r['variant']}" if r["experiment"] else "-"
        click.echo(f"{hour:<17} {r['model_version']:<9} {arm:<24} {r['shown']:>7} {_pct(r['ctr']):>8} "
                   f"{_pct(r['add_to_cart_rate']):>8} {_pct(r['conversion_rate']):>8} {r['revenue']:>12.2f}")


@report.command()
@click.argument("name")
@_bootstrap
@_topic
@click.option("--metric", type=click.Choice(["converted", "buyers", "clicked"]), default="converted", show_default=True,
              help="converted: users who bought from a list; buyers: users who bought anything after their first "
                   "list; clicked: users who clicked an item of a list.")
@click.option("--json", "as_json", is_flag=True, help="The whole result as one JSON object.")
def experiment(name, bootstrap, topic, metric, as_json) -> None:  # noqa: ANN001
    """Per variant: users, conversion rate with its 95 % interval, lift over the control with its
    interval and p-value; attributed revenue per user with its interval and Welch's p-value; and
    the sample-ratio-mismatch check."""
    from dataclasses import asdict

    from streamrec.core.abtest import analyse_arm_records
    from streamrec.core.experiments import experiment_from_dict

    configured = {e.name: e for e in get_settings().experiments}
    if name not in configured:
        known = ", ".join(configured) or "none"
        raise click.BadParameter(f"no experiment {name!r} in the settings (STREAMREC_EXPERIMENTS); configured: {known}",
                                 param_hint="NAME")
    spec = experiment_from_dict(configured[name].model_dump())
    arms = {r["variant"]: r for r in _records(bootstrap, topic) if r.get("kind") == "arm" and r["experiment"] == name}
    try:
        result, revenue = analyse_arm_records(arms, spec.shares(), spec.control.name, metric=metric)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        out = result.as_dict() | {"experiment": name, "metric": metric,
                                  "revenue_per_user": [asdict(m) for m in revenue],
                                  "totals": {v: arms[v] for v in arms}}
        click.echo(json.dumps(out))
        return
    click.echo(f"experiment {name}: {metric} users / users exposed, control {spec.control.name}")
    click.echo(f"{'variant':<16} {'users':>8} {metric:>10} {'rate':>8} {'95% CI':>19} {'lift':>9} {'lift 95% CI':>21} {'p':>8}")
    for a in result.arms:
        ci = "-" if a.rate_low is None else f"[{_pct(a.rate_low)}, {_pct(a.rate_high)}]"
        lift_ci = "-" if a.lift_low is None and a.lift_high is None else f"[{_pct(a.lift_low)}, {_pct(a.lift_high)}]"
        p = "-" if a.p_value is None else f"{a.p_value:.4f}"
        click.echo(f"{a.variant:<16} {a.users:>8} {a.converted:>10} {_pct(a.rate):>8} {ci:>19} {_pct(a.lift):>9} {lift_ci:>21} {p:>8}")
    click.echo(f"{'variant':<16} {'users':>8} {'revenue/user':>13} {'95% CI':>21} {'diff':>9} {'Welch p':>8}")
    for m in revenue:
        ci = "-" if m.mean_low is None else f"[{m.mean_low:.2f}, {m.mean_high:.2f}]"
        mean = "-" if m.mean is None else f"{m.mean:.2f}"
        p = "-" if m.p_value is None else f"{m.p_value:.4f}"
        click.echo(f"{m.variant:<16} {m.users:>8} {mean:>13} {ci:>21} {_pct(m.lift):>9} {p:>8}")
    if result.srm_p_value is None:
        click.echo("sample ratio: no users yet")
    else:
        verdict = "MISMATCH: the split is not the configured one, do not trust the lift" if result.srm_flagged else "ok"
        click.echo(f"sample ratio vs configured split: chi-square p = {result.srm_p_value:.4f} ({verdict})")



def parse_duration(text: str) -> float:
    """Seconds in ``text`` like ``24h``, ``30m``, ``7d``; ValueError otherwise.

    >>> parse_duration("24h"), parse_duration("1.5d")
    (86400.0, 129600.0)
    """
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 24h, 30m, 7d or 2w")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def read_events_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> tuple[list[Event], dict[str, int]]:
    """Every event on ``topic`` now (read from the beginning to the end of each partition), and
    the count of records that break the contract by reason (left out; the worker dead-letters them)."""
    from confluent_kafka import KafkaException

    from streamrec.contract import InvalidEvent, decode_event
    from streamrec.kafka.reading import NoSuchTopic, read_to_end

    events: list[Event] = []
    rejected: dict[str, int] = {}
    try:
        for message in read_to_end(bootstrap, topic, timeout=timeout, group="report"):
            try:
                events.append(decode_event(message.value()))
            except InvalidEvent as exc:
                rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
    except NoSuchTopic as exc:
        raise click.ClickException(str(exc)) from None
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    except KafkaException as exc:  # the broker cannot be reached, or an error on a partition
        raise click.ClickException(f"could not read {topic!r} on Kafka at {bootstrap}: {exc}") from None
    return events, rejected


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinity become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


@report.command()
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (default: the settings').")
@click.option("--events-topic", default=None, help="The events topic (default: the settings').")
@click.option("--events", "events_path", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Read a log file instead of the topic.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="The log file's format.")
@click.option("--last", "last", default="24h", show_default=True,
              help="The range: this long before the newest event (e.g. 24h, 90m, 7d); 'all' for everything.")
@click.option("--timezone", default="UTC", show_default=True, help="Time zone of the hours in the funnel.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000), help="Rows of the top lists.")
@click.option("--min-events", default=5, show_default=True, type=click.IntRange(1),
              help="Events an item needs in one half of the range to count as rising or falling.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the funnel of the top categories as a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def behaviour(bootstrap: str | None, events_topic: str | None, events_path: Path | None, fmt: str | None, last: str,
              timezone: str, top: int, min_events: int, plot_path: Path | None, as_json: bool) -> None:
    """Funnel per hour and category with drop-out rates, interest across categories, rising and
    falling items, sessions (30-minute gap)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from streamrec.analytics.behaviour import funnel, interest, sessions, trends

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"{timezone!r} is not a time zone name like Europe/London", param_hint="--timezone") from None
    try:
        window_s = None if last == "all" else parse_duration(last)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--last") from None
    rejected: dict[str, int] = {}
    if events_path is not None:
        if fmt is None:
            raise click.BadParameter("--events needs --format", param_hint="--format")
        stats = ReadStats()
        events = list(read_events(events_path, fmt, skip_bad=True, stats=stats))
        if stats.skipped:
            rejected["bad_line"] = stats.skipped
        source = str(events_path)
    else:
        from streamrec.config import get_settings

        kafka = get_settings().kafka
        topic = events_topic or kafka.events_topic
        events, rejected = read_events_topic(bootstrap or kafka.bootstrap, topic)
        source = f"topic {topic}"
    if not events:
        raise click.ClickException(f"no events in {source}")
    newest = max(e.ts for e in events)
    if window_s is not None:
        events = [e for e in events if e.ts > newest - window_s]
    rows = funnel(events, timezone)
    rising, falling = trends(events, min_events=min_events, top=top)
    result = {
        "source": source, "events": len(events), "rejected": rejected,
        "from_ts": min(e.ts for e in events), "to_ts": newest,
        "funnel": [asdict(r) for r in rows],
        "interest": asdict(interest(events, top=top)),
        "rising": [asdict(t) for t in rising], "falling": [asdict(t) for t in falling],
        "sessions": asdict(sessions(events)),
    }
    if plot_path is not None:
        from streamrec.analytics.plots import plot_funnel

        plot_funnel(rows, plot_path, title=f"{Path(source).name}: funnel, {len(events):,} events", top=min(top, 8))
    if as_json:
        click.echo(json.dumps(_clean(result), indent=2))
        return
    _print(result, top)


def _print(result: dict[str, Any], top: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    totals = [r for r in result["funnel"] if r["hour"] == "*"]
    stages = list(totals[-1]["users"]) if totals else []
    table = Table(title=f"{result['source']} · {result['events']:,} events · funnel per category (distinct users)")
    table.add_column("category")
    for stage in stages:
        table.add_column(stage, justify="right")
    for a, b in zip(stages, stages[1:]):
        table.add_column(f"drop {a}→{b}", justify="right")
    totals.sort(key=lambda r: (r["category"] != "*", -r["users"].get(stages[0], 0) if stages else 0))
    for row in totals[: top + 1]:
        drops = [f"{v:.1%}" if isinstance(v, float) and math.isfinite(v) else "–" for v in row["drop_out"].values()]
        table.add_row(row["category"], *(f"{row['users'][s]:,}" for s in stages), *drops)
    console.print(table)
    hours = Table(title="funnel per hour (all categories)")
    hours.add_column("hour")
    for stage in stages:
        hours.add_column(stage, justify="right")
    for row in result["funnel"]:
        if row["category"] == "*" and row["hour"] != "*":
            hours.add_row(row["hour"], *(f"{row['users'][s]:,}" for s in stages))
    console.print(hours)
    i = result["interest"]
    if i["users"]:
        console.print(f"interest: {i['users']:,} users; entropy over categories mean {i['mean_entropy_bits']:.2f} bits, "
                      f"median {i['median_entropy_bits']:.2f}; {i['single_category_users']:.1%} in one category; "
                      f"top category holds {i['mean_top_share']:.1%} of a user's events on average")
    for name in ("rising", "falling"):
        trend = Table(title=f"{name} items (events, second half against first half)")
        for column in ("item", "before", "now", "growth"):
            trend.add_column(column, justify="left" if column == "item" else "right")
        for t in result[name]:
            trend.add_row(t["item_id"], str(t["before"]), str(t["now"]),
                          "new" if t["growth"] == math.inf else f"{t['growth']:+.0%}")
        console.print(trend)
    s = result["sessions"]
    console.print(f"sessions (30-minute gap): {s['count']:,}; length mean {s['length_s']['mean']:.0f} s, "
                  f"p50 {s['length_s'].get('p50', 0):.0f} s, p90 {s['length_s'].get('p90', 0):.0f} s; depth mean "
                  f"{s['depth']['mean']:.2f}, p90 {s['depth'].get('p90', 0):.0f} events; "
                  f"{s['single_event_share']:.1%} single-event sessions")
