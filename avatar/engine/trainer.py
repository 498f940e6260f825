"""Trainer, loggers and checkpointing built from the config (``trainer=cpu|gpu|ddp``,
``logger=default|tensorboard|csv|wandb|none``)."""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

from avatar.engine.checkpoints import (
    CHECKPOINT_DIR,
    PeriodicValidation,
    StepCheckpoint,
    StepSeed,
    StopOnSigint,
    TrainClock,
    checkpoint_step,
    newest_checkpoint,
    readable,
)
from avatar.utils.io import atomic_path

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temp file and rename, so an interrupted save never leaves a
    truncated ``last.ckpt`` that a resume would trip over."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def run_name(overrides: list[str]) -> str:
    """A readable run name: in a multirun, the values the sweep varies (``lr=0.01,seed=1``, the
    rule of its job folder, see ``avatar.engine.reporting.job_dirname``); otherwise, and when a
    job varies nothing, the command-line overrides (Hydra's own keys left out)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        if str(getattr(hydra_cfg.mode, "name", hydra_cfg.mode)) == "MULTIRUN":  # RunMode, or its name
            from avatar.engine.reporting import job_label

            label = job_label(hydra_cfg)
            if label:
                return label
    shown = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    return ",".join(shown) or "defaults"


class LogFinalStep(Callback):
    """Lightning logs every ``trainer.log_every_n_steps`` steps, so a run whose length is not a
    multiple (6 steps with 10) ended without its final values, or any. At the last step this
    logs as if the interval were 1 (train/*, lr-*, every metric the step logs); the interval is
    restored when training ends. Must come before ``LearningRateMonitor`` in the callbacks."""

    def __init__(self) -> None:
        self._every: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        last = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step + 1
        if last and trainer.log_every_n_steps > 1:
            self._every, trainer.log_every_n_steps = trainer.log_every_n_steps, 1

    def on_train_end(self, trainer, pl_module) -> None:
        if self._every is not None:
            trainer.log_every_n_steps, self._every = self._every, None


def log_image(loggers, tag: str, image, step: int, wandb_images: bool = True) -> None:
    """Log an (H, W, 3) image to every image-capable logger at ``step``."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger) and wandb_images:
            logger.log_image(key=tag, images=[image], step=step)


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSV logger deletes ``metrics.csv`` when its folder exists; a resumed run must
    keep what it logged before its checkpoint. This one keeps the rows logged before step
    ``resume_step`` and appends (rows of a killed segment after its checkpoint are dropped: the
    resumed run logs those steps again)."""

    def __init__(self, *args, resume_step: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is None:
            self._experiment = _ContinuingWriter(self.log_dir, self._resume_step)
        return self._experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self._resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resume_step is None:  # a fresh run in a used folder: keep the old log aside
            path.rename(path.with_name(f"metrics.replaced-{time.strftime('%Y%m%d-%H%M%S')}.csv"))
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            rows = [
                row for row in reader if row.get("step") not in (None, "") and float(row["step"]) < self._resume_step
            ]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = header


def build_loggers(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    resume_step: int | None = None,
    wandb_id: str | None = None,
    keep_logs: bool = False,
) -> list[Logger]:
    """The configured loggers; ``resume_step`` continues the logs of an interrupted run from its
    checkpoint's step (CSV rows kept, TensorBoard purges later steps, W&B resumes ``wandb_id``).
    ``keep_logs`` (a re-export, which trains nothing) appends to the logs and drops no row."""
    loggers: list[Logger] = []
    if keep_logs:
        resume_step = None if resume_step is None else math.inf
    if cfg.logger.tensorboard:
        extra = {"purge_step": resume_step} if resume_step is not None and not keep_logs else {}
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", **extra))
    if cfg.logger.csv:
        loggers.append(ResumableCSVLogger(save_dir=str(run_dir), name="csv", version="", resume_step=resume_step))
    wandb_cfg = cfg.logger.wandb
    if wandb_cfg.enabled:
        if wandb_cfg.mode not in ("online", "offline", "disabled"):
            raise ValueError(f"logger.wandb.mode must be online, offline or disabled, got {wandb_cfg.mode!r}")
        os.environ.setdefault("WANDB_DIR", str(run_dir))
        resume = {"id": wandb_id, "resume": "allow"} if wandb_id else {}
        loggers.append(
            WandbLogger(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                # Runs of one experiment share a group; the stage is the job type; the name
                # says what the sweep changed: a sweep compares at a glance in the W&B UI.
                group=cfg.experiment_name,
                job_type=cfg.stage.name,
                name=run_name(overrides),
                tags=[*wandb_cfg.tags, *([str(cfg.variant)] if cfg.get("variant") else [])],
                save_dir=str(run_dir),
                mode=wandb_cfg.mode,
                config=OmegaConf.to_container(cfg, resolve=True),
                **resume,
            )
        )
    return loggers


def build_trainer(
    cfg: DictConfig,
    run_dir: Path,
    loggers: list[Logger],
    extra_callbacks=(),
    restore_only: bool = False,
    resume: tuple[Path, int] | None = None,
) -> L.Trainer:
    """The Lightning Trainer of an optimisation stage. ``restore_only`` (``mode=export``) builds
    one that restores ``resume``'s checkpoint and stops at its step: it trains nothing and
    writes no checkpoint."""
    t = cfg.trainer
    if restore_only:
        if resume is None:
            raise ValueError("restore_only needs the checkpoint to restore")
        callbacks = [TrainClock(), *extra_callbacks]  # the clock restores the run's train seconds
    else:
        callbacks = [
            StepCheckpoint(run_dir / CHECKPOINT_DIR, t.checkpoint_every_n_steps),
            PeriodicValidation(),
            StepSeed(cfg.seed),
            TrainClock(),
            StopOnSigint(),
            LogFinalStep(),  # before LearningRateMonitor (appended below)
            *extra_callbacks,
        ]
    if t.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, t.log_every_n_steps)))
    if loggers and not restore_only:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError("trainer=gpu was chosen but no CUDA device is visible; use trainer=cpu")
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_steps=resume[1] if restore_only else t.max_steps,
        log_every_n_steps=t.log_every_n_steps,
        gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic,
        enable_progress_bar=t.enable_progress_bar,
        profiler=t.profiler,
        enable_model_summary=False,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


RESUME_HELP = (
    "resume= takes: auto (the newest checkpoint in this run directory if there is one, else a "
    "fresh start: what a requeued job wants), last (the newest checkpoint; an error without one), "
    "or the path of a checkpoint file. Combine auto/last with hydra.run.dir=<the run's directory>."
)


def resolve_resume(cfg: DictConfig, run_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint (and its step) to resume from, or None for a fresh run."""
    request = str(cfg.resume or "").strip()
    if not request:
        return None
    folder = run_dir / CHECKPOINT_DIR
    if request in ("auto", "last"):
        found = newest_checkpoint(folder)
        if found is None and request == "last" and not (run_dir / "run_info.json").is_file():
            raise FileNotFoundError(
                f"resume=last: {run_dir} holds no run. Point the command at the interrupted run's "
                "directory: python train.py <its overrides> resume=last hydra.run.dir=<that run's directory>"
            )
        if found is None and request == "last":
            raise FileNotFoundError(
                f"resume=last: {run_dir} has no complete checkpoint yet (in {folder}): the run stopped "
                f"before its first one (every trainer.checkpoint_every_n_steps={cfg.trainer.checkpoint_every_n_steps} "
                "steps). Start it again without resume=, or use resume=auto, which starts fresh when "
                "there is nothing to resume."
            )
        return found
    path = Path(request).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resume={request}: no such checkpoint file. {RESUME_HELP}")
    if not readable(path):
        raise ValueError(f"resume={request} is not a complete checkpoint (truncated or another format). {RESUME_HELP}")
    return path, checkpoint_step(path)
