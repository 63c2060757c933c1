"""Small synthetic logs with known structure for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.evaluation.data import EventLog


def clustered_log(
    n_users: int = 300, n_clusters: int = 12, per_cluster: int = 10, length: tuple[int, int] = (6, 14),
    stay: float = 0.85, seed: int = 0, kind: str = "purchase",
) -> EventLog:
    """Users shop inside their own cluster of items (``stay`` of the time) and walk it in
    order (item k, then k + 1, ...); items are more popular the lower their index in the
    cluster. A model that learns clusters or transitions beats popularity, which beats random.
    """
    rng = np.random.default_rng(seed)
    n_items = n_clusters * per_cluster
    weights = 1.0 / np.arange(1, per_cluster + 1)
    cluster_weights = 1.0 / np.arange(1, n_clusters + 1)
    users, items, ts = [], [], []
    for user in range(n_users):
        cluster = rng.choice(n_clusters, p=cluster_weights / cluster_weights.sum())
        position = rng.choice(per_cluster, p=weights / weights.sum())
        start = rng.uniform(0, 1000)
        for step in range(rng.integers(*length)):
            if rng.random() < stay:
                item = cluster * per_cluster + (position + step) % per_cluster
            else:
                item = rng.integers(n_items)
            users.append(f"u{user}")
            items.append(f"i{item:03d}")
            ts.append(start + 10.0 * step)
    ids = [f"e{n}" for n in range(len(users))]
    return EventLog.from_arrays(users, items, [kind] * len(users), ts, ids)


@pytest.fixture(scope="session")
def toy_log() -> EventLog:
    return clustered_log()


@pytest.fixture(scope="session")
def make_log():
    """The generator itself, for tests that need other sizes or seeds."""
    return clustered_log
