"""Trainer, loggers and checkpointing built from the config (``trainer=cpu|gpu|ddp``,
``logger=default|tensorboard|csv|wandb|none``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from avatar.utils.io import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file and rename, so an interrupted save never leaves a
    truncated ``last.ckpt`` that a resume would trip over."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def run_name(overrides: list[str]) -> str:
    """A readable run name from the command-line overrides (Hydra's own keys left out)."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    return ",".join(shown) or "defaults"


def log_image(loggers, tag: str, image, step: int, wandb_images: bool = True) -> None:
    """Log an (H, W, 3) image to every image-capable logger at ``step``."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger) and wandb_images:
            logger.log_image(key=tag, images=[image], step=step)


def build_loggers(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> list[Logger]:
    loggers: list[Logger] = []
    if cfg.logger.tensorboard:
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    if cfg.logger.csv:
        loggers.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    wandb_cfg = cfg.logger.wandb
    if wandb_cfg.enabled:
        if wandb_cfg.mode not in ("online", "offline", "disabled"):
            raise ValueError(f"logger.wandb.mode must be online, offline or disabled, got {wandb_cfg.mode!r}")
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        loggers.append(
            WandbLogger(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                # Runs of one experiment share a group; the stage is the job type; the name
                # says what the sweep changed: a sweep compares at a glance in the W&B UI.
                group=cfg.experiment_name,
                job_type=cfg.stage.name,
                name=run_name(overrides),
                tags=list(wandb_cfg.tags),
                save_dir=str(run_dir),
                mode=wandb_cfg.mode,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list[Logger], extra_callbacks=()) -> L.Trainer:
    t = cfg.trainer
    callbacks = [
        ModelCheckpoint(
            dirpath=str(run_dir / CHECKPOINT_DIR),
            filename="step{step:06d}",
            auto_insert_metric_name=False,
            every_n_train_steps=t.checkpoint_every_n_steps,
            save_top_k=-1,
            save_last=True,
        ),
        *extra_callbacks,
    ]
    if t.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError("trainer=gpu was chosen but no CUDA device is visible; use trainer=cpu")
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_steps=t.max_steps,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        enable_model_summary=False,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def resolve_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to resume from, or None for a fresh run; a clear error if it is missing."""
    if not cfg.resume:
        return None
    if cfg.resume == "last":
        path = run_dir / CHECKPOINT_DIR / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(
                f"resume=last but {path} does not exist. Point the run at the interrupted run's "
                "directory: python train.py ... resume=last hydra.run.dir=<that run's directory>"
            )
        return str(path)
    path = Path(cfg.resume).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resume={cfg.resume}: no such checkpoint file")
    return str(path)
