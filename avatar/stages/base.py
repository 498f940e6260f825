"""What every stage shares: weighted loss terms with schedules, logging, NaN guards, and a
step stream for optimisation stages that have no dataset (they sample views each step)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, IterableDataset

from avatar.engine.schedules import is_always_zero, validate_weight, weight_at
from avatar.engine.trainer import log_image
from avatar.registry import Registry

STAGES: Registry = Registry("stage", "stage")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/inf; the message names the terms and the last good checkpoint."""


class StepStream(IterableDataset):
    """An endless stream of step indices: optimisation stages draw their randomness (views,
    backgrounds) from ``seed`` and the global step, so a resumed run repeats a fresh one."""

    def __iter__(self) -> Iterator[int]:
        step = 0
        while True:
            yield step
            step += 1


class StageModule(L.LightningModule):
    """Base LightningModule of an optimisation stage.

    Subclasses implement ``compute_losses(batch) -> {name: tensor}`` and ask ``self.active(name)``
    before computing a term, so a term whose ``lambda_<name>`` is 0 costs nothing. The total loss
    is ``sum(lambda_<name> * loss_<name>)``; raw values, weights and weighted values are logged.
    """

    # Optimisation stages run under a Lightning Trainer; one-shot stages implement ``run``.
    trainable = True

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stage_cfg = cfg.stage
        self.loss_weights = {
            key[len("lambda_") :]: value for key, value in self.stage_cfg.items() if key.startswith("lambda_")
        }
        for name, spec in self.loss_weights.items():
            validate_weight(f"stage.lambda_{name}", spec)
        self._frozen_prefixes: tuple[str, ...] = ()

    # ---- frozen components (body model, guidance) stay out of checkpoints ------------------
    def freeze_component(self, name: str) -> None:
        """Mark submodule ``name`` as a fixed input: no gradients, and not saved in checkpoints
        (it is rebuilt from the config), which keeps checkpoints to what the stage learns."""
        getattr(self, name).requires_grad_(False)
        self._frozen_prefixes += (f"{name}.",)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if k.startswith(self._frozen_prefixes)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith(self._frozen_prefixes)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Checkpoint does not match {type(self).__name__}: missing {missing}, "
                f"unexpected {result.unexpected_keys}"
            )
        return result

    # ---- loss terms ---------------------------------------------------------------------
    def weight(self, name: str) -> float:
        return weight_at(self.loss_weights[name], self.global_step)

    def active(self, name: str) -> bool:
        spec = self.loss_weights[name]
        return not is_always_zero(spec) and self.weight(name) != 0.0

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_fit_start(self) -> None:
        if all(is_always_zero(spec) for spec in self.loss_weights.values()):
            raise ValueError(
                f"Every loss weight of stage {self.stage_cfg.name!r} is 0 "
                f"({', '.join(f'stage.lambda_{n}' for n in self.loss_weights)}): nothing would be optimised. "
                "Give at least one term a weight > 0."
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        raw = self.compute_losses(batch)
        unknown = set(raw) - set(self.loss_weights)
        if unknown:
            raise KeyError(f"loss terms {sorted(unknown)} have no lambda_<name> in the stage config")
        if not raw:
            raise ValueError(
                f"No loss term is active at step {self.global_step}: every scheduled lambda_ of stage "
                f"{self.stage_cfg.name!r} is 0 here. Give at least one term a weight > 0 at every step."
            )
        weighted = {name: self.weight(name) * value for name, value in raw.items()}
        total = sum(weighted.values())
        bad = [name for name in raw if not (torch.isfinite(raw[name]).all() and torch.isfinite(weighted[name]).all())]
        if bad or not torch.isfinite(total):
            raise NonFiniteLossError(
                f"Non-finite loss at step {self.global_step}: terms {bad or sorted(raw)} "
                f"(raw {[float(raw[n].detach().float().mean()) for n in (bad or sorted(raw))]}, weights "
                f"{[self.weight(n) for n in (bad or sorted(raw))]}). {self._checkpoint_note()} "
                "Lower the learning rate or the offending lambda_."
            )
        for name, value in raw.items():
            w = self.weight(name)
            self.log(f"train/loss_{name}", value.detach(), on_step=True)
            self.log(f"train/lambda_{name}", w, on_step=True)
            self.log(f"train/weighted_{name}", weighted[name].detach(), on_step=True)
        for name in sorted(self.loss_weights.keys() - raw.keys()):  # ablated or off: its weight is 0
            self.log(f"train/lambda_{name}", 0.0, on_step=True)
        self.log("train/loss", total.detach(), on_step=True, prog_bar=True)
        return total

    # ---- periodic validation (one hook for every stage) ---------------------------------------
    def should_validate(self, step: int) -> bool:
        """Validate after ``step`` optimisation steps: every ``trainer.val_every_n_steps``."""
        every = self.cfg.trainer.val_every_n_steps
        return every > 0 and step % every == 0

    def validate(self) -> None:
        """Periodic validation (renders, held-out metrics); called by the trainer's
        :class:`avatar.engine.checkpoints.PeriodicValidation` before the checkpoint of the same
        step is written, so a run killed after that checkpoint has its validation too."""

    def _checkpoint_note(self) -> str:
        from avatar.engine.checkpoints import newest_checkpoint

        found = newest_checkpoint(self.checkpoint_dir())
        if found is None:
            return (
                f"No checkpoint was written before this step (the first comes at step "
                f"{self.cfg.trainer.checkpoint_every_n_steps}); nothing to resume."
            )
        return f"The newest good checkpoint is {found[0]} (step {found[1]}): resume with resume=auto."

    # ---- data, randomness, output ---------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(StepStream(), batch_size=None)

    def step_generator(self, step: int | None = None) -> torch.Generator:
        """A generator seeded by (seed, step): reproducible and identical after a resume."""
        step = self.global_step if step is None else step
        return torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + int(step))

    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    def checkpoint_dir(self) -> Path:
        return self.run_dir() / "checkpoints"

    def log_image(self, tag: str, image: np.ndarray) -> None:
        """Log an (H, W, 3) image to TensorBoard and W&B at the global step."""
        log_image(self.loggers, tag, image, self.global_step, self.cfg.logger.wandb.log_images)


def warmup_cosine(warmup_steps: int, total_steps: int, final_ratio: float = 0.05):
    """LR multiplier: linear warm-up, then cosine decay to ``final_ratio`` (the paper's schedule)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
