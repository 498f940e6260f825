"""An on-disk cache of embeddings (or any tensors) that are costly to compute: a codebook's
rendered-and-encoded entries, a corpus's sentence embeddings.

One file per key: the key is a JSON-able dict naming everything the tensors depend on (model
weights' fingerprints, configs, meshes; ``avatar.utils.fingerprint``), its canonical JSON
(``json.dumps(key, sort_keys=True)``) names the file by its sha256 and is stored inside it, so a
file is used only when its own key matches. Files are written atomically; a corrupt, foreign or
stale file is rebuilt with a warning, never a crash.

File: ``<folder>/<prefix>-<sha256 of the key, 20 hex>.pt``, a ``torch.save`` of
``{"key": <canonical JSON>, <name>: <tensor>, ...}`` (what the pose and shape stages have
always written, so their caches keep hitting).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch

from avatar.utils.io import atomic_path

log = logging.getLogger(__name__)


def canonical_json(key: dict) -> str:
    """The key as the cache stores and hashes it. Changing this format renames every cache file."""
    return json.dumps(key, sort_keys=True)


def _rows(tensor: torch.Tensor) -> int:
    return tensor.shape[0] if tensor.dim() else 1


class Cached(NamedTuple):
    tensors: dict[str, torch.Tensor]
    hit: bool  # True: read from ``path``; False: built (and written to ``path``)
    path: Path


class EmbeddingCache:
    """``load_or_build(key, build)``: the tensors stored under ``key`` in ``folder``, or
    ``build()``'s, written there for the next time. ``label`` starts the log lines
    ("Pose codebook: cache hit ...")."""

    def __init__(self, folder: str | Path, prefix: str, label: str = "Embedding cache") -> None:
        self.folder = Path(folder).expanduser()
        self.prefix = prefix
        self.label = label

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(canonical_json(key).encode()).hexdigest()[:20]
        return self.folder / f"{self.prefix}-{digest}.pt"

    def load(
        self, key: dict, expect_rows: int | None = None, names: Iterable[str] = ()
    ) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None (with a warning where a file was there but unusable):
        the file's key must equal ``key``, it must hold tensors ``names``, and every tensor
        ``expect_rows`` rows if given."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(payload, dict):
                raise TypeError(f"a {type(payload).__name__}, not a dict with a 'key'")
            stored = json.loads(payload["key"])
            tensors = {name: value for name, value in payload.items() if name != "key"}
        except Exception as err:  # a corrupt or foreign file: rebuild, never crash on a cache
            log.warning("%s cache %s is unreadable (%s); rebuilding it", self.label, path, err)
            return None
        if stored != json.loads(canonical_json(key)):
            log.warning("%s cache %s has another key; rebuilding it", self.label, path)
            return None
        missing = [name for name in names if name not in tensors]
        bad = [name for name, value in tensors.items() if not isinstance(value, torch.Tensor)]
        rows = {name: _rows(value) for name, value in tensors.items() if name not in bad}
        if missing or bad or not tensors or (expect_rows is not None and set(rows.values()) != {expect_rows}):
            log.warning(
                "%s cache %s holds %s, expected tensors %s%s; rebuilding it",
                self.label,
                path,
                {name: rows.get(name, type(value).__name__) for name, value in tensors.items()},
                sorted(names) or "(any)",
                f" of {expect_rows} rows" if expect_rows is not None else "",
            )
            return None
        return tensors

    def save(self, key: dict, tensors: dict[str, torch.Tensor]) -> Path:
        """Write ``tensors`` under ``key`` (atomically: a reader never sees half a file). A cache
        that cannot be written (read-only or full disk) is a warning: the run goes on without it."""
        path = self.path(key)
        if "key" in tensors:
            raise ValueError("EmbeddingCache: 'key' is reserved for the cache key")
        try:
            with atomic_path(path) as tmp:
                torch.save({"key": canonical_json(key), **tensors}, tmp)
        except OSError as err:
            log.warning("%s cache %s could not be written (%s); continuing without it", self.label, path, err)
        return path

    def load_or_build(
        self,
        key: dict,
        build: Callable[[], dict[str, torch.Tensor]],
        expect_rows: int | None = None,
        names: Iterable[str] = (),
    ) -> Cached:
        """The tensors under ``key``: from the file (``hit``), else ``build()``'s, saved."""
        names = tuple(names)
        path = self.path(key)
        tensors = self.load(key, expect_rows, names)
        if tensors is not None:
            rows = _rows(next(iter(tensors.values())))
            log.info("%s: cache hit %s (%d entries, nothing recomputed)", self.label, path, rows)
            return Cached(tensors, True, path)
        tensors = dict(build())
        self.save(key, tensors)
        return Cached(tensors, False, path)
