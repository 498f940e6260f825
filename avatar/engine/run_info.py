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

RUN_INFO = "run_info.json"

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


def git_diff(root: Path = PROJECT_ROOT) -> str:
    """The uncommitted changes to tracked files (what a dirty run really ran with)."""
    try:
        return subprocess.run(
            ["git", "diff", "HEAD"], cwd=root, capture_output=True, text=True, timeout=20, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def read_run_info(run_dir: str | Path) -> dict:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:  # written atomically, so only a hand-edited file gets here
        return {}


def previous_config(run_dir: str | Path) -> dict | None:
    """The resolved config the run directory's last segment ran with, if any."""
    path = Path(run_dir) / "config_resolved.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.is_file() else None


def write_run_info(
    run_dir: str | Path,
    cfg: DictConfig,
    overrides: list[str],
    resumed_from: dict | None = None,
    config_changes: dict | None = None,
) -> dict:
    """Start a segment of the run: write ``config_resolved.yaml`` and add a segment to
    ``run_info.json`` (command, overrides, git revision and diff, packages, hardware, what it
    resumed from and what changed since the last segment). Earlier segments are kept; the
    top-level fields describe the newest. Returns the info.

    Hydra itself writes ``.hydra/config.yaml`` (unresolved) and ``.hydra/overrides.yaml``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / "config_resolved.yaml", OmegaConf.to_yaml(resolved))
    earlier = read_run_info(run_dir).get("segments", [])
    git = git_revision()
    if git.get("dirty"):
        diff = git_diff()
        name = f"git_diff.segment{len(earlier)}.patch"
        atomic_write_text(run_dir / name, diff)
        git["diff_file"] = name
    segment = {
        "segment": len(earlier),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "running",
        "command": sys.argv,
        "overrides": overrides,
        "resumed_from": resumed_from,
        "config_changes": config_changes or {},
        "git": git,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "hardware": hardware(),
    }
    if earlier and earlier[-1].get("wandb_id"):
        segment["wandb_id"] = earlier[-1]["wandb_id"]
    info = {**{k: v for k, v in segment.items() if k != "segment"}, "segments": [*earlier, segment]}
    atomic_write_text(run_dir / RUN_INFO, json.dumps(info, indent=2, default=str))
    return info


def update_segment(run_dir: str | Path, **fields) -> None:
    """Record what happened to the newest segment (status, end time, error, W&B id...)."""
    info = read_run_info(run_dir)
    if not info.get("segments"):
        return
    info["segments"][-1].update(fields)
    info.update({k: v for k, v in fields.items()})
    atomic_write_text(Path(run_dir) / RUN_INFO, json.dumps(info, indent=2, default=str))


def run_status(run_dir: str | Path) -> str:
    """How a run directory's newest segment ended: finished | failed | interrupted | running.
    A folder written before segments were recorded is "finished" if it has its result.json,
    else "unknown"."""
    segments = read_run_info(run_dir).get("segments", [])
    if segments:
        return segments[-1].get("status", "unknown")
    return "finished" if (Path(run_dir) / "result.json").is_file() else "unknown"
