"""Small helpers shared by the tests that run stages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from avatar.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
LOW_POLY = "notoes_collapse5pc"
# A tiny, fast pose fit on the low-poly body.
FAST_POSE_FIT = [
    "stage=pose_fit",
    f"body.topology={LOW_POLY}",
    "render.height=32",
    "render.width=32",
    "trainer.enable_progress_bar=false",
]


def compose_cfg(run_dir: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"run_dir={run_dir}"])


def run_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``train.py`` as a user would, failing the test with its output if it fails."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def clip_backend_overrides(backend: str, request) -> list[str]:
    """Config overrides selecting CLIP or OpenCLIP loaded from the tiny synthetic checkpoints of
    tests/test_guidance.py's fixtures (import those fixtures into the test module)."""
    if backend == "clip":
        path, _ = request.getfixturevalue("clip_checkpoint")
        return ["guidance=clip", f"guidance.checkpoint={path}"]
    config_file, path, _ = request.getfixturevalue("open_clip_checkpoint")
    return [
        "guidance=open_clip", f"guidance.model={config_file.stem}", f"guidance.pretrained={path}",
        f"guidance.model_config_file={config_file}",
    ]  # fmt: skip
