"""Every model the harness evaluates, by name, with its documented default settings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from streamrec.evaluation.base import Recommender

#: Report order: the served model first, then the baselines.
MODEL_NAMES: tuple[str, ...] = ("served", "popularity", "popularity-recent", "item-knn", "als", "isgd")
#: Prototypes, evaluated only when named: ``served+als`` (:mod:`streamrec.evaluation.fusion`).
EXTRA_MODELS: tuple[str, ...] = ("served+als",)
#: Every name :func:`build_models` knows.
KNOWN_MODELS: tuple[str, ...] = MODEL_NAMES + EXTRA_MODELS


def served_params(overrides: Mapping[str, str] | None = None):  # noqa: ANN201 - (TrainParams, InterestParams)
    """The worker's defaults, with ``overrides`` (field name -> text) applied to the
    :class:`~indexing.train.TrainParams` or :class:`~streamrec.core.interest.InterestParams` field
    of that name; raises ValueError naming an unknown field or a bad value."""
    from dataclasses import fields, replace

    from indexing.train import TrainParams
    from streamrec.core.factors import AUTO
    from streamrec.core.interest import InterestParams

    train, interest = TrainParams(), InterestParams()
    for name, text in (overrides or {}).items():
        for params in (train, interest):
            field = next((f for f in fields(params) if f.name == name and f.name != "event_weights"), None)
            if field is not None:
                # The factor step's settings take "auto" too (the default: each version's own).
                kind = _AUTO_SETTINGS.get(name) or type(getattr(params, name))
                value = AUTO if name in _AUTO_SETTINGS and text == AUTO else _parse(text, kind, name)
                if params is train:
                    train = replace(train, **{name: value})
                else:
                    interest = replace(interest, **{name: value})
                break
        else:
            known = sorted({f.name for f in fields(train) + fields(interest)} - {"event_weights"})
            raise ValueError(f"unknown served-model parameter {name!r}; choose from {', '.join(known)}")
    return train, interest


#: Served-model settings that also take "auto", and the type of their other values.
_AUTO_SETTINGS: dict[str, type] = {"factor_weight": float, "factor_repeats": bool}


def _parse(text: str, kind: type, name: str) -> object:
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            also = " or 'auto'" if name in _AUTO_SETTINGS else ""
            raise ValueError(f"{name} must be true or false{also}, got {text!r}")
        return text.lower() in ("true", "1", "yes", "on")
    try:
        if kind is int and text.strip().endswith(".0"):  # a grid's value (--tune-grid knn_events=5,10)
            return int(float(text))
        return kind(text)
    except ValueError:
        also = " or 'auto'" if name in _AUTO_SETTINGS else ""
        raise ValueError(f"{name} must be a {kind.__name__}{also}, got {text!r}") from None


def _served(dim: int | None, overrides: Mapping[str, str] | None) -> Recommender:
    from dataclasses import replace

    from streamrec.evaluation.served import ServedModel

    train, interest = served_params(overrides)
    return ServedModel(train if dim is None else replace(train, dim=dim), interest)


def _factories(
    dim: int | None, recent_window: int, overrides: Mapping[str, str] | None, fusion_weight: float
) -> dict[str, Callable[[], Recommender]]:
    from streamrec.evaluation.als import ALS
    from streamrec.evaluation.baselines import ItemKNN, Popularity, RecentPopularity
    from streamrec.evaluation.fusion import RankFusion
    from streamrec.evaluation.isgd import ISGD

    return {
        "served": lambda: _served(dim, overrides),
        "popularity": Popularity,
        "popularity-recent": lambda: RecentPopularity(window=recent_window),
        "item-knn": ItemKNN,
        "als": ALS,
        "isgd": ISGD,
        "served+als": lambda: RankFusion(_served(dim, overrides), ALS(), weight=fusion_weight),
    }


def build_models(
    names: Sequence[str] | None = None, *, dim: int | None = None, recent_window: int = 10_000,
    served_overrides: Mapping[str, str] | None = None, fusion_weight: float = 0.5,
) -> list[Recommender]:
    """Fresh models by name (all of :data:`MODEL_NAMES` when ``names`` is None).

    ``dim`` overrides the served model's dimension (``TrainParams.dim``) for quick runs;
    ``served_overrides`` any other of its parameters (see :func:`served_params`);
    ``fusion_weight`` the weight of ALS's ranks in ``served+als`` (:data:`EXTRA_MODELS`).
    """
    names = list(MODEL_NAMES if names is None else names)
    unknown = [n for n in names if n not in KNOWN_MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(KNOWN_MODELS)}")
    served_params(served_overrides)  # fail early on a bad override
    factories = _factories(dim, recent_window, served_overrides, fusion_weight)
    return [factories[name]() for name in names]
