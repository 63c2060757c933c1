"""``streamrec report attribution | experiment NAME``: what the recommender earns, read from the
attribution topic (``streamrec attribute`` publishes it). The statistics are in
:mod:`streamrec.core.abtest`; definitions in docs/business.md."""

from __future__ import annotations

import datetime as dt
import json

import click

from streamrec.config import get_settings

_bootstrap = click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
_topic = click.option("--topic", help="Attribution topic [default: settings kafka.attribution_topic].")


def _records(bootstrap: str | None, topic: str | None) -> list[dict]:
    from streams.attribution import read_attribution

    kafka = get_settings().kafka
    try:
        return list(read_attribution(bootstrap or kafka.bootstrap, topic or kafka.attribution_topic).values())
    except (RuntimeError, TimeoutError) as exc:
        raise click.ClickException(f"cannot read the attribution topic: {exc}") from None


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


@click.group()
def report() -> None:
    """Reports on what shoppers did with the recommendations."""


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

    from streamrec.core.abtest import analyse, analyse_means
    from streamrec.core.experiments import experiment_from_dict

    configured = {e.name: e for e in get_settings().experiments}
    if name not in configured:
        known = ", ".join(configured) or "none"
        raise click.BadParameter(f"no experiment {name!r} in the settings (STREAMREC_EXPERIMENTS); configured: {known}",
                                 param_hint="NAME")
    spec = experiment_from_dict(configured[name].model_dump())
    field = {"converted": "converted_users", "buyers": "buyers", "clicked": "clicked_users"}[metric]
    arms = {r["variant"]: r for r in _records(bootstrap, topic) if r.get("kind") == "arm" and r["experiment"] == name}
    try:
        result = analyse({v: (r["users"], r[field]) for v, r in arms.items()}, spec.shares(), spec.control.name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    revenue = analyse_means({v: (r["users"], r["revenue"], r.get("revenue_sumsq", 0.0)) for v, r in arms.items()},
                            list(spec.shares()), spec.control.name)
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
