"""PNG plots for the docs: forecasts against actuals (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamrec.forecasting.backtest import LevelResult


def plot_forecasts(result: LevelResult, path: Path, title: str) -> Path:
    """The test window's daily actuals (summed over the level's series) against the chosen model and seasonal-naive-7."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = result.test_days
    actual = np.asarray(result.test_actuals).sum(axis=0)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    ax.plot(days, actual, color="black", linewidth=1.8, label="actual units")
    for name, style in ((result.chosen, "-"), ("seasonal-naive-7", "--")):
        predicted = result.test_forecasts[name].sum(axis=0)
        score = result.test[name]
        ax.plot(days, predicted, style, linewidth=1.3,
                label=f"{name} (WAPE {score.wape:.3f}, MASE {score.mase:.3f})")
    for k in range(0, len(days), 7):
        ax.axvline(days[k], color="grey", alpha=0.2, linewidth=0.8)
    ax.set_title(title)
    ax.set_ylabel("units per day")
    ax.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
