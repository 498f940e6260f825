"""Hydra entry point shared by ``train.py`` and the ``avatar-train`` console script."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from avatar.config import register_configs
from avatar.utils.paths import PROJECT_ROOT

register_configs()


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from avatar.engine.runner import run  # heavy imports after Hydra has parsed the command line

    return run(cfg).get("objective")
