"""Experiments: which variant a user is in, a pure function of the experiment's salt and the user id.

An experiment splits users (the randomisation unit) between named variants by weight. A user's
variant comes from a salted stable hash of ``user_id``: the same user is always in the same
variant of one experiment, on every worker and after every restart, and a new salt reshuffles
everyone (a new experiment does not inherit the old one's split). The kinds of variant:

- ``model``: the served model's personalised list (the worker's usual list);
- ``params``: the served model's items, but the user's query vector re-derived from their recent
  events with other :class:`~streamrec.core.interest.InterestParams` (other event weights or decay);
- ``trending``: a non-personalised control, the shop's trending items (purchased items excluded).

>>> ab = Experiment("ab-1", "salt-1", (Variant("control", 1.0, "trending"), Variant("treatment", 1.0, "model")))
>>> assign(ab, "u-42").name == assign(ab, "u-42").name
True
>>> shares = [assign(ab, f"u-{n}").name for n in range(10_000)]
>>> 0.48 < shares.count("control") / 10_000 < 0.52
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from streamrec.core.interest import InterestParams

VariantKind = Literal["model", "params", "trending"]
VARIANT_KINDS: tuple[str, ...] = ("model", "params", "trending")


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: its name, its share of users (relative ``weight``) and what it shows."""

    name: str
    weight: float
    kind: VariantKind = "model"
    #: For ``params``: the interest parameters the user's query vector is re-derived with.
    params: InterestParams | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a variant needs a name")
        if not self.weight > 0:
            raise ValueError(f"variant {self.name!r}: weight must be > 0, got {self.weight}")
        if self.kind not in VARIANT_KINDS:
            raise ValueError(f"variant {self.name!r}: kind must be one of {', '.join(VARIANT_KINDS)}, got {self.kind!r}")
        if self.kind == "params" and self.params is None:
            raise ValueError(f"variant {self.name!r}: a params variant needs its interest parameters")


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its salt and variants; the first variant is the control."""

    name: str
    salt: str
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an experiment needs a name")
        if len(self.variants) < 2:
            raise ValueError(f"experiment {self.name!r} needs at least two variants, got {len(self.variants)}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r} has variants with the same name: {names}")

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def shares(self) -> dict[str, float]:
        """Each variant's expected share of users."""
        total = sum(v.weight for v in self.variants)
        return {v.name: v.weight / total for v in self.variants}

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(f"experiment {self.name!r} has no variant {name!r}")


def unit_hash(salt: str, user_id: str) -> float:
    """A user's position in [0, 1) for an experiment salted with ``salt`` (BLAKE2b, stable across
    processes and Python versions, unlike ``hash()``).

    >>> 0.0 <= unit_hash("s", "u-1") < 1.0, unit_hash("s", "u-1") == unit_hash("s", "u-1"), unit_hash("s", "u-1") == unit_hash("t", "u-1")
    (True, True, False)
    """
    digest = hashlib.blake2b(f"{salt}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(experiment: Experiment, user_id: str) -> Variant:
    """The user's variant: the variant whose slice of [0, 1), by weight, holds the user's hash."""
    position = unit_hash(experiment.salt, user_id) * sum(v.weight for v in experiment.variants)
    upper = 0.0
    for variant in experiment.variants:
        upper += variant.weight
        if position < upper:
            return variant
    return experiment.variants[-1]  # rounding at the very top


def experiment_from_dict(spec: Mapping[str, Any]) -> Experiment:
    """An :class:`Experiment` from its settings as plain data (``ExperimentSettings.model_dump()``).

    >>> e = experiment_from_dict({"name": "w", "salt": "s", "variants": [
    ...     {"name": "control", "weight": 1, "kind": "model"},
    ...     {"name": "buyers", "weight": 1, "kind": "params", "event_weights": {"purchase": 6.0}}]})
    >>> e.variants[1].params.event_weights
    {'purchase': 6.0}
    """
    variants = []
    for v in spec["variants"]:
        kind = v.get("kind", "model")
        params = None
        if kind == "params":
            changes = {name: v[name] for name in ("event_weights", "event_decay", "half_life_s") if v.get(name) is not None}
            params = replace(InterestParams(), **changes)
        variants.append(Variant(v["name"], float(v.get("weight", 1.0)), kind, params))
    return Experiment(spec["name"], spec["salt"], tuple(variants))
