"""The on-disk embedding cache of the pose and shape codebooks (avatar/utils/embedding_cache.py):
hit, miss, a changed key, corrupt or foreign files, and the file format the stages have always
written (so users' existing caches keep hitting)."""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from avatar.utils.embedding_cache import EmbeddingCache

KEY = {"version": 1, "guidance": {"name": "mini", "checkpoint": {"file_sha256": "ab12"}}, "views": [0.0, 30.0]}


class Builder:
    def __init__(self, rows: int = 4) -> None:
        self.calls = 0
        self.rows = rows

    def __call__(self) -> dict[str, torch.Tensor]:
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        return {"embeddings": torch.randn(self.rows, 8, generator=g), "shapes": torch.rand(self.rows, 6, generator=g)}


def test_miss_then_hit_returns_the_stored_tensors(tmp_path):
    cache, build = EmbeddingCache(tmp_path / "sub", "anny-mini", "Test codebook"), Builder()
    first = cache.load_or_build(KEY, build, expect_rows=4)
    assert first.hit is False and build.calls == 1 and first.path.is_file()
    second = cache.load_or_build(dict(reversed(KEY.items())), build, expect_rows=4)  # key order does not matter
    assert second.hit is True and build.calls == 1 and second.path == first.path
    assert second.tensors.keys() == {"embeddings", "shapes"}
    assert all(torch.equal(second.tensors[k], first.tensors[k]) for k in first.tensors)
    tensors, hit, path = second  # a tuple too
    assert hit and path.parent == tmp_path / "sub" and not list(path.parent.glob(".*tmp*"))  # no temporaries left


def test_file_name_and_payload_are_the_stages_format(tmp_path):
    """``<prefix>-<sha256(json.dumps(key, sort_keys=True))[:20]>.pt`` holding the key as that JSON
    and the tensors beside it: the pose and shape stages' format before this component."""
    cache = EmbeddingCache(tmp_path, "anny-mini")
    digest = hashlib.sha256(json.dumps(KEY, sort_keys=True).encode()).hexdigest()[:20]
    assert cache.path(KEY) == tmp_path / f"anny-mini-{digest}.pt"
    old = {"key": json.dumps(KEY, sort_keys=True), "embeddings": torch.ones(3, 8)}  # written by the old pose stage
    torch.save(old, cache.path(KEY))
    tensors, hit, _ = cache.load_or_build(KEY, Builder(3), expect_rows=3, names=["embeddings"])
    assert hit and torch.equal(tensors["embeddings"], old["embeddings"])
    _, hit, path = EmbeddingCache(tmp_path, "anny-mini").load_or_build({**KEY, "version": 2}, Builder(3))
    payload = torch.load(path, weights_only=True)
    assert (
        not hit
        and json.loads(payload["key"]) == {**KEY, "version": 2}
        and set(payload) == {"key", "embeddings", "shapes"}
    )


def test_a_changed_key_is_another_file(tmp_path):
    cache, build = EmbeddingCache(tmp_path, "p"), Builder()
    a = cache.load_or_build(KEY, build)
    b = cache.load_or_build({**KEY, "views": [0.0]}, build)
    assert not a.hit and not b.hit and a.path != b.path and build.calls == 2
    assert cache.load_or_build(KEY, build).hit and build.calls == 2  # the first is still there


def test_corrupt_foreign_or_stale_files_are_rebuilt_with_a_warning(tmp_path, caplog):
    cache, build = EmbeddingCache(tmp_path, "p", "Test codebook"), Builder()
    path = cache.path(KEY)
    for bad in (
        b"not a torch file",  # corrupt
        b"",  # truncated to nothing
        {"embeddings": torch.ones(4, 8)},  # no key
        {"key": json.dumps({"other": 1}), "embeddings": torch.ones(4, 8)},  # a hash collision / hand-copied file
        {"key": json.dumps(KEY, sort_keys=True), "embeddings": torch.ones(5, 8)},  # wrong row count
        {"key": json.dumps(KEY, sort_keys=True), "shapes": torch.ones(4, 6)},  # a tensor missing
        {"key": json.dumps(KEY, sort_keys=True), "embeddings": [1, 2, 3, 4]},  # not a tensor
        torch.ones(4, 8),  # not a dict
    ):
        if isinstance(bad, bytes):
            path.write_bytes(bad)
        else:
            torch.save(bad, path)
        caplog.clear()
        calls = build.calls
        with caplog.at_level(logging.WARNING, logger="avatar.utils.embedding_cache"):
            result = cache.load_or_build(KEY, build, expect_rows=4, names=["embeddings", "shapes"])
        assert not result.hit and build.calls == calls + 1, bad
        assert any("Test codebook cache" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
        again = cache.load_or_build(KEY, build, expect_rows=4, names=["embeddings", "shapes"])
        assert again.hit and torch.equal(again.tensors["embeddings"], result.tensors["embeddings"])


def test_an_unwritable_cache_folder_is_a_warning(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    cache, build = EmbeddingCache(blocker / "cache", "p"), Builder()
    with caplog.at_level(logging.WARNING, logger="avatar.utils.embedding_cache"):
        result = cache.load_or_build(KEY, build)
    assert not result.hit and result.tensors["embeddings"].shape == (4, 8)
    assert "could not be written" in caplog.text
