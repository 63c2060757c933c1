"""``streamrec simulate``: the closed-loop shop against the real pipeline
(:mod:`producers.closed_loop`), and ``--offline`` runs of the experiment statistics over many
seeds (:func:`producers.simulator.offline_experiment`)."""

from __future__ import annotations

import json
import math

import click

from streamrec.config import get_settings


def _lifts(values: tuple[str, ...]) -> dict[str, float]:
    lifts = {}
    for value in values:
        name, _, number = value.partition("=")
        try:
            lifts[name] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not VARIANT=LIFT, e.g. treatment=0.2", param_hint="--lift") from None
        if not name or not lifts[name] > -1:
            raise click.BadParameter(f"{value!r}: a variant name and a lift > -1 are needed", param_hint="--lift")
    return lifts


@click.command()
@click.option("--bootstrap", help="Kafka bootstrap servers [default: from settings].")
@click.option("--users", default=2000, show_default=True, type=click.IntRange(min=1), help="Users of the synthetic shop (as trained).")
@click.option("--items", default=5000, show_default=True, type=click.IntRange(min=2), help="Items of the synthetic shop (as trained).")
@click.option("--seed", default=7, show_default=True, type=int, help="Seed of the synthetic shop (as trained).")
@click.option("--shoppers", default=200, show_default=True, type=click.IntRange(min=1), help="How many of the shop's users take part.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(min=1), help="Browse, get a list, react: this many times each.")
@click.option("--lift", "lifts", multiple=True, metavar="VARIANT=LIFT",
              help="A known lift: that variant's shoppers buy (1 + LIFT) times as often after adding to cart. Repeatable.")
@click.option("--impressions", is_flag=True, help="Shoppers' pages send an impression per shown item.")
@click.option("--no-list-ids", is_flag=True, help="Reactions do not name their list (attribution uses the window).")
@click.option("--shopper-seed", default=0, show_default=True, type=int, help="Seed of the shoppers' choices.")
@click.option("--offline", is_flag=True, help="No Kafka: run the experiment NAME's statistics over --seeds seeds "
                                              "(lists drawn by popularity; only the known lift differs).")
@click.option("--experiment", "experiment_name", help="With --offline: the experiment (from settings) [default: a 50/50 control/treatment].")
@click.option("--seeds", default=200, show_default=True, type=click.IntRange(min=1), help="With --offline: how many runs.")
@click.option("--offline-users", default=10_000, show_default=True, type=click.IntRange(min=2), help="With --offline: users per run.")
@click.option("--json", "as_json", is_flag=True, help="Print the ground truth (or the offline summary) as JSON.")
def simulate(bootstrap, users, items, seed, shoppers, rounds, lifts, impressions, no_list_ids, shopper_seed,  # noqa: ANN001
             offline, experiment_name, seeds, offline_users, as_json) -> None:
    """Simulated shoppers with hidden tastes react to the lists the worker publishes."""
    from producers.simulator import ShopperModel, Shoppers
    from producers.synthetic import SyntheticShop

    model = ShopperModel(lift=_lifts(lifts), impressions=impressions, list_ids=not no_list_ids)
    shop = SyntheticShop(items=items, users=users, seed=seed)
    if offline:
        _offline(shop, model, experiment_name, seeds, offline_users, as_json)
        return
    from producers.closed_loop import run_closed_loop

    settings = get_settings()
    kafka = settings.kafka
    sim = Shoppers(shop, model, seed=shopper_seed)
    taking_part = shop.user_ids[: min(shoppers, users)]
    with click.progressbar(length=rounds, label="rounds", file=click.get_text_stream("stderr")) as bar:
        try:
            stats = run_closed_loop(bootstrap or kafka.bootstrap, kafka.events_topic, kafka.recommendations_topic, sim,
                                    taking_part, rounds=rounds, partitions=kafka.partitions, progress=lambda _: bar.update(1))
        except (TimeoutError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
    truth = sim.truth
    out = {"rounds": stats.rounds, "events": stats.events, "lists_read": stats.lists_read, "shoppers": len(taking_part),
           "totals": truth.totals(),
           "by_variant": {variant or "-": truth.totals(variant) for variant in sorted({k[2] for k in truth.lists_seen})},
           "converted_users": {f"{e}/{v}": len(s) for (e, v), s in truth.converted_users.items()}}
    if as_json:
        click.echo(json.dumps(out))
    else:
        t = out["totals"]
        click.echo(f"{stats.rounds} rounds, {stats.events} events published, {t['lists_seen']} lists shown: "
                   f"{t['clicks']} clicks, {t['add_to_carts']} add-to-carts, {t['purchases']} purchases, revenue {t['revenue']:.2f}")


def _offline(shop, model, experiment_name, seeds, users, as_json) -> None:  # noqa: ANN001
    from producers.simulator import offline_experiment
    from streamrec.core.abtest import users_per_arm
    from streamrec.core.experiments import Experiment, Variant, experiment_from_dict

    if experiment_name is None:
        experiment = Experiment("offline", "offline", (Variant("control", 1.0), Variant("treatment", 1.0)))
    else:
        configured = {e.name: e for e in get_settings().experiments}
        if experiment_name not in configured:
            raise click.BadParameter(f"no experiment {experiment_name!r} in the settings", param_hint="--experiment")
        experiment = experiment_from_dict(configured[experiment_name].model_dump())
    control = experiment.control.name
    detected, covered, lifts, srm_flags = 0, 0, [], 0
    runs = []  # each run's treatment arm, printed when there are few
    expected: dict[str, float] = {}
    with click.progressbar(range(seeds), label="seeds", file=click.get_text_stream("stderr")) as bar:
        for run_seed in bar:
            run = offline_experiment(experiment, model, shop=shop, users=users, seed=run_seed)
            for name, rate in run.expected_rates.items():  # the truth, averaged over the runs so far
                expected[name] = expected.get(name, 0.0) + (rate - expected.get(name, 0.0)) / (run_seed + 1)
            srm_flags += run.result.srm_flagged
            for arm in run.result.arms[1:]:  # the first variant other than the control
                true_lift = run.expected_rates[arm.variant] / run.expected_rates[control] - 1
                detected += arm.p_value is not None and arm.p_value < 0.05
                covered += (arm.lift_low is not None and arm.lift_high is not None and arm.lift_low <= true_lift <= arm.lift_high)
                lifts.append(arm.lift)
                if seeds <= 10:
                    runs.append({"seed": run_seed, "control": run.result.arms[0].__dict__, "treatment": arm.__dict__})
                break
    treatment = experiment.variants[1].name
    true_lift = expected[treatment] / expected[control] - 1
    planned_power = None
    if abs(true_lift) > 1e-12:
        share = experiment.shares()
        n_needed = users_per_arm(expected[control], true_lift)
        planned_power = f"users per arm for 80% power: {n_needed}; this run: about {round(users * min(share.values()))}"
    out = {"seeds": seeds, "users_per_run": users, "expected_rates": expected, "true_lift": true_lift,
           "rejections_at_0.05": detected, "rejection_rate": detected / seeds,
           "rejection_rate_95ci": _binomial_ci(detected, seeds), "lift_ci_coverage": covered / seeds,
           "mean_estimated_lift": float(sum(x for x in lifts if x is not None) / max(1, sum(x is not None for x in lifts))),
           "srm_flagged": srm_flags, "design": planned_power, **({"runs": runs} if runs else {})}
    if as_json:
        click.echo(json.dumps(out))
    else:
        for key, value in out.items():
            click.echo(f"{key}: {value}")


def _binomial_ci(k: int, n: int) -> list[float]:
    from scipy import stats

    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)] if not math.isnan(ci.low) else []
