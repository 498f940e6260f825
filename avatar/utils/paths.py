"""Where the project keeps caches and finds its own files."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir(sub: str | None = None) -> Path:
    """The project cache (Anny's model build, Warp kernels, embedding caches).

    ``$AVATAR_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/avatar`` (``~/.cache/avatar``).
    """
    root = os.environ.get("AVATAR_CACHE_DIR")
    if root:
        path = Path(root)
    else:
        path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "avatar"
    if sub:
        path = path / sub
    path.mkdir(parents=True, exist_ok=True)
    return path
