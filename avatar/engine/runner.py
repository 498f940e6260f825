"""Run one stage from a composed config: record the run, seed, build, fit or run, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from avatar.config import validate_config
from avatar.engine.run_info import write_run_info
from avatar.engine.trainer import build_loggers, build_trainer, resolve_resume
from avatar.stages import build_stage
from avatar.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def current_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """Run ``cfg.stage`` in ``cfg.run_dir`` (or, with ``pipeline=full``, every stage) and return
    its result dict (``objective`` is what an Optuna sweep minimises)."""
    validate_config(cfg)
    run_dir = Path(cfg.run_dir)
    overrides = current_overrides() if overrides is None else overrides
    write_run_info(run_dir, cfg, overrides)
    if cfg.pipeline.name:
        from avatar.engine.pipeline import run_pipeline

        return run_pipeline(cfg, overrides)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    module = build_stage(cfg)
    loggers = build_loggers(cfg, run_dir, overrides)
    try:
        if module.trainable:
            trainer = build_trainer(cfg, run_dir, loggers)
            trainer.fit(module, ckpt_path=resolve_resume(cfg, run_dir))
            result = module.result()
        else:
            result = module.run(loggers)
    finally:
        for logger in loggers:
            logger.finalize("success")
        if cfg.logger.wandb.enabled:
            import wandb

            wandb.finish()
    if torch.cuda.is_available():  # the stage's peak, for the README's time-and-memory table
        result["cuda_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2))
    log.info("Run finished in %s: %s", run_dir, result)
    return result
