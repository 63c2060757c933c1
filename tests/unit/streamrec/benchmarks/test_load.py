"""The bench's workload (streamrec/benchmarks/load.py): its model trained with or without the refinement."""

import numpy as np

from indexing.artifact import load_artifact
from streamrec.benchmarks.load import prepare_workload


def test_the_workload_trains_refined_vectors_only_when_asked(tmp_path):
    plain = prepare_workload(300, 200, 1_000, seed=1, cache_dir=tmp_path, dim=8)
    refined = prepare_workload(300, 200, 1_000, seed=1, cache_dir=tmp_path, dim=8, refine_epochs=1)
    assert plain.model_dir != refined.model_dir  # cached apart
    a, b = load_artifact(plain.model_dir, use_gpu=False), load_artifact(refined.model_dir, use_gpu=False)
    assert "refine" not in a.meta["training"] and len(b.meta["training"]["refine"]["losses"]) == 1
    assert a.item_ids == b.item_ids and not np.allclose(a.context, b.context)
    assert plain.values == refined.values  # the same live events
