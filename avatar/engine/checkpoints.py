"""Checkpoints a preemptible run can trust: which one to resume from, what a kill leaves behind,
and the callbacks that make a resumed run equal an uninterrupted one.

- Checkpoints are written atomically (temp file + rename), so a file with its final name is
  complete; a kill mid-write leaves only a hidden temp file, removed when the run starts again.
- Resume takes the checkpoint with the highest step among ``step*.ckpt`` and ``last.ckpt`` (a
  kill between the two writes of one save leaves ``last.ckpt`` one interval behind).
- SIGTERM (preemption, a scheduler's time limit) and a first Ctrl-C stop the run at the end of
  the current step with a checkpoint of that step; the run exits non-zero saying how to resume.
- Global random generators are reseeded from (seed, step) before every step, so any draw a
  component makes without an explicit generator is still a function of (seed, step).
"""

from __future__ import annotations

import logging
import random
import re
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
_STEP_NAME = re.compile(r"^step(\d+)(?:-v\d+)?\.ckpt$")
# Temp files of avatar.utils.io.atomic_path: ".<stem>.<8 random chars>.tmp<suffix>".
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")

INTERRUPT_EXIT_CODE = {signal.SIGTERM: 143, signal.SIGINT: 130}


def readable(path: Path) -> bool:
    """A checkpoint is a zip archive (torch's format); a truncated one has no central directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "data.pkl" in {Path(name).name for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile):
        return False


def checkpoint_step(path: Path) -> int:
    match = _STEP_NAME.match(path.name)
    if match:
        return int(match.group(1))
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


def newest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The complete checkpoint with the highest step in ``folder`` (a step file wins a tie with
    ``last.ckpt``: they hold the same state), or None."""
    if not folder.is_dir():
        return None
    best: tuple[int, int, Path] | None = None
    for path in folder.glob("*.ckpt"):
        if path.name.startswith(".") or not readable(path):
            continue
        step = checkpoint_step(path)
        rank = (step, 0 if path.name == LAST else 1, path)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return (best[2], best[0]) if best else None


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete what a kill mid-write leaves: the hidden temp files of atomic writes, anywhere in
    a run directory (they never hold the only copy of anything)."""
    removed = []
    if folder.is_dir():
        for path in folder.rglob(".*"):
            if path.is_file() and _TEMP_NAME.match(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log.info(
            "Removed %d temp file(s) left by an interrupted write: %s", len(removed), [p.name for p in removed][:5]
        )
    return removed


class StepCheckpoint(ModelCheckpoint):
    """``step{N:06d}.ckpt`` every N steps plus ``last.ckpt``; on preemption (SIGTERM, Ctrl-C) one
    more of the current step. Other exceptions (a NaN loss, a bug) save nothing: the last good
    checkpoint stays the newest."""

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        super().__init__(
            dirpath=str(dirpath), filename="step{step:06d}", auto_insert_metric_name=False,
            every_n_train_steps=every_n_steps, save_top_k=-1, save_last=True,
            save_on_exception=True, enable_version_counter=False,
        )  # fmt: skip

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning skips the final save once any last.ckpt was written, so a run whose
        # max_steps is not a multiple of the interval would end with last.ckpt behind.
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if is_preemption(exception):
            super().on_exception(trainer, pl_module, exception)


def is_preemption(exception: BaseException) -> bool:
    """Lightning's stop at a step boundary after SIGTERM (or a first Ctrl-C, see StopOnSigint).
    A second Ctrl-C interrupts mid-step, where the state may be half updated: not saved."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    return isinstance(exception, SIGTERMException)


class PeriodicValidation(Callback):
    """Calls the stage's ``validate()`` after every step its ``should_validate(step)`` names.
    Lightning runs checkpoint callbacks after all others, so the validation of a step always
    precedes that step's checkpoint: a kill between the two cannot leave a resumed run without
    it."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        should = getattr(pl_module, "should_validate", None)
        if should is not None and should(trainer.global_step):
            pl_module.validate()


class StepSeed(Callback):
    """Reseed the global generators (torch, numpy, random) from (seed, step) before each step, so
    a draw that does not pass a generator (dropout, a library's sampling) repeats after a resume."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        value = (self.seed * 1_000_003 + 7_919 * int(trainer.global_step) + 17) % 2**32
        torch.manual_seed(value)  # also seeds every CUDA device
        np.random.seed(value)
        random.seed(value)


class TrainClock(Callback):
    """Optimisation time summed over every segment of a run (kept in the checkpoint), so a
    resumed run reports the time the whole optimisation took, not its last segment's."""

    def __init__(self) -> None:
        self.before = 0.0  # seconds of earlier segments, up to the checkpoint resumed from
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
        self.started = time.perf_counter()


def train_clock(trainer) -> TrainClock | None:
    """The trainer's :class:`TrainClock` (None for a trainer built without one, or no trainer)."""
    return next((c for c in trainer.callbacks if isinstance(c, TrainClock)), None) if trainer else None


class StopOnSigint(Callback):
    """A first Ctrl-C asks Lightning to stop at the end of the current step, as SIGTERM does (it
    saves a checkpoint there); a second one interrupts at once."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            connector = trainer._signal_connector
            if connector.received_sigterm:
                raise KeyboardInterrupt
            log.warning("Ctrl-C: stopping after this step with a checkpoint (press again to stop now)")
            connector.received_sigterm = True
            self.signal = signal.SIGINT

        self.signal = signal.SIGTERM
        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread (e.g. a launcher's worker): leave it as it is
            self._previous = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if getattr(self, "_previous", None) is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
