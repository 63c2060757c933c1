"""The funnel as a PNG for the docs (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamrec.analytics.behaviour import ALL, FunnelRow


def plot_funnel(rows: Sequence[FunnelRow], path: Path, title: str, top: int = 8) -> Path:
    """Distinct users per stage for the whole range and its ``top`` categories (by first-stage users), with drop-outs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = [r for r in rows if r.hour == ALL]
    if not totals:
        raise ValueError("no funnel rows to plot")
    stages = list(totals[-1].users)
    overall = [r for r in totals if r.category == ALL]
    categories = sorted((r for r in totals if r.category != ALL), key=lambda r: -r.users[stages[0]])[:top]
    shown = overall + categories
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110, gridspec_kw={"width_ratios": [1, 2]})
    whole = overall[0]
    values = [whole.users[s] for s in stages]
    axes[0].barh(range(len(stages)), values, color="#4c72b0")
    axes[0].set_yticks(range(len(stages)), stages)
    axes[0].invert_yaxis()
    for k, (stage, value) in enumerate(zip(stages, values)):
        axes[0].text(value, k, f" {value:,}", va="center", fontsize=8)
    axes[0].set_xlabel("distinct users")
    axes[0].set_title("all categories")
    width = 0.8 / max(len(stages) - 1, 1)
    x = np.arange(len(shown))
    for j, (a, b) in enumerate(zip(stages, stages[1:])):
        rates = [r.drop_out[f"{a}→{b}"] for r in shown]
        axes[1].bar(x + j * width, rates, width, label=f"{a}→{b}")
    axes[1].set_xticks(x + width * (len(stages) - 2) / 2, ["all" if r.category == ALL else r.category for r in shown],
                       rotation=30, ha="right", fontsize=8)
    axes[1].set_ylabel("drop-out")
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(fontsize=8, loc="lower left")
    axes[1].set_title(f"drop-out per stage, top {len(categories)} categories")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
