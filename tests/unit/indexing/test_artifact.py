import json

import numpy as np
import pytest

from indexing.artifact import ArtifactError, latest_version, load_artifact, save_artifact


def make(tmp_path, n=20, d=4, **kwargs):
    rng = np.random.default_rng(0)
    ids = [f"sku-{i}" for i in range(n)]
    return save_artifact(tmp_path, ids, rng.standard_normal((n, d)), rng.standard_normal((n, d)), **kwargs)


def test_versions_increase_and_latest_points_to_newest(tmp_path):
    first = make(tmp_path)
    second = make(tmp_path)
    assert (first.name, second.name) == ("v000001", "v000002")
    assert latest_version(tmp_path) == "v000002"
    model = load_artifact(tmp_path, use_gpu=False)
    assert model.version == "v000002" and model.n_items == 20 and model.dim == 4
    assert model.row_of["sku-7"] == 7
    meta = json.loads((second / "meta.json").read_text())
    assert meta["metric"] == "inner_product" and meta["dimension"] == 4 and meta["factory"] == "Flat"


def test_auto_factory_is_resolved_in_meta(tmp_path):
    folder = make(tmp_path, factory="auto")
    assert json.loads((folder / "meta.json").read_text())["factory"] == "Flat"


def test_missing_model_names_the_folder(tmp_path):
    with pytest.raises(ArtifactError, match="no model in"):
        load_artifact(tmp_path / "nothing")


def test_missing_file_is_named(tmp_path):
    folder = make(tmp_path)
    (folder / "context.npy").unlink()
    with pytest.raises(ArtifactError, match="context.npy is missing"):
        load_artifact(tmp_path)


def test_truncated_index_is_named(tmp_path):
    folder = make(tmp_path)
    data = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="index.faiss is unreadable or truncated"):
        load_artifact(tmp_path)


def test_dimension_mismatch_is_named(tmp_path):
    folder = make(tmp_path)
    np.save(folder / "context.npy", np.zeros((20, 5), np.float32))
    with pytest.raises(ArtifactError, match=r"shape \(20, 5\), meta.json says dimension 4"):
        load_artifact(tmp_path)


def test_non_finite_vectors_never_saved(tmp_path):
    vectors = np.ones((3, 2))
    vectors[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save_artifact(tmp_path, ["a", "b", "c"], vectors, np.ones((3, 2)))
    assert latest_version(tmp_path) is None


def test_nan_context_on_disk_is_refused(tmp_path):
    folder = make(tmp_path)
    context = np.load(folder / "context.npy")
    context[3, 1] = np.nan
    np.save(folder / "context.npy", context)
    with pytest.raises(ArtifactError, match="NaN"):
        load_artifact(tmp_path)
