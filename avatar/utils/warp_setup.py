"""Warp (used by the renderer and by Anny's skinning) initialised once, quietly, with its kernel
cache under the project cache. Call before anything imports and initialises Warp."""

from __future__ import annotations

import warp as wp

from avatar.utils.paths import cache_dir


def init_warp() -> None:
    """``wp.config.kernel_cache_dir`` is None until Warp is initialised or someone chooses a
    cache; in both of those cases their choices stand."""
    if wp.config.kernel_cache_dir is None:
        wp.config.kernel_cache_dir = str(cache_dir("warp"))
        wp.config.log_level = wp.LOG_WARNING  # Warp 1.19's replacement for ``config.quiet``
    wp.init()
