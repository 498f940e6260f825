"""What every run directory records: the resolved config, the overrides, the git revision and
the package versions, so any run can be traced and reproduced."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from avatar.utils.io import atomic_write_text
from avatar.utils.paths import PROJECT_ROOT

TRACKED_PACKAGES = (
    "torch", "torchvision", "lightning", "hydra-core", "omegaconf", "numpy", "anny", "warp-lang",
    "smplx", "clip-anytorch", "open-clip-torch", "sentence-transformers", "wandb", "tensorboard",
    "trimesh", "roma",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hardware() -> dict[str, object]:
    import torch

    return {
        "torch_build": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpu_threads": torch.get_num_threads(),
    }


def git_revision(root: Path = PROJECT_ROOT) -> dict[str, str | bool]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout)", "dirty": False}


def write_run_info(run_dir: str | Path, cfg: DictConfig, overrides: list[str]) -> dict:
    """Write ``config_resolved.yaml`` and ``run_info.json`` into ``run_dir`` and return the info.

    Hydra itself writes ``.hydra/config.yaml`` (unresolved) and ``.hydra/overrides.yaml``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(resolved))
    info = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "overrides": overrides,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "hardware": hardware(),
    }
    atomic_write_text(run_dir / "run_info.json", json.dumps(info, indent=2))
    return info
