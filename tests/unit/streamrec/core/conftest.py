"""What the tests of the steps after the search share: a model whose inner product can never list
one item, and the list the worker's core makes for a user's events."""

import numpy as np
import pytest

from indexing.artifact import load_artifact, save_artifact
from streamrec.contract import encode_event
from streamrec.core.batch import Message, process_batch

NOW = 1_800_000_000.0


@pytest.fixture
def line_model(tmp_path):
    """``line_model(**save_artifact_options)``: items sku-0..sku-9 on a line of their own (item
    i's target only answers context i, scaled from 1.0 down to 0.5); sku-9's target is zero, so
    only a step after the search can list it."""

    def build(**options):
        ids = [f"sku-{i}" for i in range(10)]
        context = np.eye(10, dtype=np.float32)
        target = np.eye(10, dtype=np.float32) * np.linspace(1.0, 0.5, 10)[:, None]
        target[9] = 0.0
        save_artifact(tmp_path / "m", ids, context, target, **options)
        return load_artifact(tmp_path / "m", use_gpu=False)

    return build


@pytest.fixture
def last_list():
    """``last_list(events, model, params)``: the item ids of the last list the core makes for ``events``."""

    def run(events, model, params):
        messages = [Message(e.user_id.encode(), encode_event(e), 0, n) for n, e in enumerate(events)]
        result = process_batch(messages, lambda user_id, position: None, model, params, now=NOW)
        return [i.item_id for i in result.recommendations[-1].items]

    return run
