"""Chunking, assembly, checksums and the serving history of the models topic (no broker)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexing.artifact import save_artifact
from indexing.distribute import (
    CorruptVersion,
    DistributionError,
    IncompleteVersion,
    Serving,
    TopicState,
    assemble,
    read_version_files,
    serving_after_promote,
    serving_after_rollback,
    split_files,
    version_records,
    write_version,
)
from indexing.feed import ModelFeed

FILES = {"meta.json": json.dumps({"version": "v000002", "n_items": 3}).encode(), "item_ids.json": b'["a","b","c"]',
         "index.faiss": bytes(range(256)) * 5}


def records_of(version="v000002", files=FILES, chunk_bytes=100):
    return [(k.encode(), v) for k, v in version_records(version, files, chunk_bytes=chunk_bytes)]


def test_chunks_reassemble_to_the_same_files_and_the_manifest_comes_last():
    chunks, manifest = split_files("v000002", FILES, chunk_bytes=100)
    assert manifest["chunks"] == len(chunks) == -(-sum(map(len, FILES.values())) // 100)
    assert [f["size"] for f in manifest["files"]] == [len(v) for v in FILES.values()]
    assert manifest["meta"]["n_items"] == 3
    assert assemble(manifest, dict(enumerate(chunks))) == FILES
    keys = [k for k, _ in records_of()]
    assert keys[0] == b"v000002/chunk/0" and keys[-1] == b"v000002/manifest"


def test_missing_chunks_are_named():
    chunks, manifest = split_files("v000002", FILES, chunk_bytes=100)
    present = {n: c for n, c in enumerate(chunks) if n not in (3, 5)}
    with pytest.raises(IncompleteVersion, match=r"2 of \d+ chunks missing \(3, 5\)"):
        assemble(manifest, present)


def test_a_flipped_byte_names_the_chunk_the_file_and_both_checksums():
    chunks, manifest = split_files("v000002", FILES, chunk_bytes=100)
    bad = bytearray(chunks[4])
    bad[10] ^= 0xFF
    with pytest.raises(CorruptVersion) as caught:
        assemble(manifest, {**dict(enumerate(chunks)), 4: bytes(bad)})
    message = str(caught.value)
    index_sha = manifest["files"][2]["sha256"]
    assert "chunk 4 (in index.faiss)" in message and "file index.faiss has sha256" in message
    assert f"expected {index_sha}" in message and "meta.json" not in message


def test_topic_state_tracks_versions_serving_and_what_is_servable():
    state = TopicState()
    for key, value in records_of()[:-1]:
        state.apply(key, value)
    with pytest.raises(DistributionError, match="no manifest"):
        state.check_servable("v000002")
    state.apply(*records_of()[-1])
    state.check_servable("v000002")
    with pytest.raises(DistributionError, match=r"unknown model version 'v000009': the topic holds v000002"):
        state.check_servable("v000009")
    state.apply(b"v000002/chunk/1", b"tampered")
    with pytest.raises(DistributionError, match=r"corrupt: chunk\(s\) 1 do not match"):
        state.check_servable("v000002")
    state.apply(b"serving", Serving("v000002", ["v000001", "v000002"]).encode())
    assert state.serving.version == "v000002" and state.newest_number() == 2
    state.apply(b"v000002/manifest", None)  # a tombstone forgets the version
    assert "v000002" not in state.versions


def test_promote_appends_to_the_history_and_rollback_goes_back_one_step():
    serving = serving_after_promote(None, "v000001", now=1.0)
    serving = serving_after_promote(serving, "v000003", now=2.0)
    assert serving_after_promote(serving, "v000003", now=3.0).history == ["v000001", "v000003"]
    back = serving_after_rollback(serving, now=4.0)
    assert (back.version, back.history, back.reason) == ("v000001", ["v000001"], "rollback")
    with pytest.raises(DistributionError, match="v000001 is the only version ever promoted"):
        serving_after_rollback(back)
    with pytest.raises(DistributionError, match="nothing is served"):
        serving_after_rollback(None)
    assert Serving.decode(serving.encode()) == serving


def test_write_version_is_atomic_keeps_identical_and_refuses_different_content(tmp_path):
    folder = write_version(tmp_path, "v000002", FILES)
    assert read_version_files(folder) == {**FILES} and not list(tmp_path.glob(".v000002-*"))
    assert write_version(tmp_path, "v000002", FILES) == folder
    with pytest.raises(DistributionError, match="already exists with different content \\(item_ids.json\\)"):
        write_version(tmp_path, "v000002", {**FILES, "item_ids.json": b'["x"]'})


def test_feed_adopts_an_intact_version_and_never_a_corrupt_or_incomplete_one(tmp_path, caplog):
    rng = np.random.default_rng(0)
    source = save_artifact(tmp_path / "trainer", [f"i{n}" for n in range(50)], rng.standard_normal((50, 8)),
                           rng.standard_normal((50, 8)))
    files = read_version_files(source)
    feed = ModelFeed("unused:1", "models", tmp_path / "worker")
    for key, value in records_of("v000001", files, chunk_bytes=1000):
        feed._handle(key, value)
    feed._handle(b"serving", Serving("v000001", ["v000001"]).encode())
    assert feed.serving == "v000001" and feed.usable("v000001") == tmp_path / "worker" / "v000001"
    assert read_version_files(feed.usable("v000001")) == files

    corrupt = records_of("v000002", {**files, "meta.json": files["meta.json"].replace(b"v000001", b"v000002")}, chunk_bytes=1000)
    key, value = corrupt[2]
    corrupt[2] = (key, value[:-1] + bytes([value[-1] ^ 1]))
    for key, value in corrupt:
        feed._handle(key, value)
    assert feed.usable("v000002") is None and not (tmp_path / "worker" / "v000002").exists()
    assert "chunk 2 (in" in feed.problem("v000002") and "expected" in caplog.text

    incomplete = records_of("v000003", {**files, "meta.json": files["meta.json"].replace(b"v000001", b"v000003")}, chunk_bytes=1000)
    for key, value in incomplete[:1] + incomplete[2:]:
        feed._handle(key, value)
    assert feed.usable("v000003") is None and "1 of" in feed.problem("v000003") and "(1)" in feed.problem("v000003")
    feed._handle(*incomplete[1])  # the missing chunk turns up late (another partition)
    assert feed.usable("v000003") is not None
