"""Content identities for cache keys: a cache entry is reused only when what made it (weights
files, configs, meshes) is the same, wherever the files now live."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def file_fingerprint(path: Path) -> str:
    """Content identity of a weights file: its sha256 (files over 64 MB: size plus the first and
    last MiB, which is enough to tell checkpoints apart and costs no full read)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= 64 << 20:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(fh.read(1 << 20))
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read())
    return digest.hexdigest()[:16]


# Settings that change where or how a model runs, not what it computes.
_NOT_IDENTITY = {"device", "cache_dir", "allow_download", "network_timeout_s"}


def config_identity(cfg: Any) -> dict:
    """A config as a plain dict for a cache key: run-only settings dropped, file paths replaced
    by their content fingerprint (so moving a checkpoint keeps the cache, retraining it does not)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    out = {}
    for key, value in sorted(plain.items()):
        if key in _NOT_IDENTITY:
            continue
        if isinstance(value, str) and value and Path(value).expanduser().is_file():
            value = {"file_sha256": file_fingerprint(Path(value).expanduser())}
        out[key] = value
    return out


def tensor_fingerprint(*tensors: torch.Tensor, decimals: int = 4) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu()
        if t.is_floating_point():
            t = torch.round(t.double() * 10**decimals).long()
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
