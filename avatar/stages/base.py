"""The stage contract (docs/architecture.md) and what every stage shares: weighted loss terms
with schedules, logging, NaN guards, and a step stream for optimisation stages that have no
dataset (they sample views each step).

A stage is a :class:`StageModule`. The runner (``avatar.engine.runner``) drives it:

1. **train**: if ``trainable``, a Lightning ``Trainer`` fits it (``compute_losses`` each step;
   ``validate()`` every ``trainer.val_every_n_steps`` through one callback; checkpoints). A
   stage with nothing to optimise (a search, a retrieval, a file conversion) is not trainable
   and skips this.
2. **export**: ``export()`` writes the stage's files into the run directory from the current
   state (after training, or after ``mode=export`` restored a checkpoint) and returns what it
   reports (counts, scores, file names).
3. **evaluate**: ``evaluate()`` returns the metrics of the finished state (``objective`` for a
   sweep). Default: none.

The runner merges the two dicts with ``steps`` and ``train_seconds`` into ``result.json``; it is
the only writer of that file. Stages log images through ``self.loggers`` (the trainer's, or the
run's loggers the runner attaches to a stage that does not train).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

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

    # Optimisation stages run under a Lightning Trainer; a stage with nothing to optimise sets
    # this False (a class attribute, or a property answered by its method component).
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
        self._run_loggers: list = []

    # ---- the contract: export and evaluate (train is Lightning's fit) -----------------------
    def export(self) -> dict[str, Any]:
        """Write the stage's outputs into the run directory; return what result.json reports."""
        raise NotImplementedError(f"{type(self).__name__} does not export anything")

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the finished stage (``objective`` is what a sweep minimises)."""
        return {}

    def once_per_step(self, name: str, compute):
        """``compute()`` once per global step (export and evaluate both need the final metrics)."""
        cache = self.__dict__.setdefault("_per_step", {})
        step = int(self.global_step)
        if name not in cache or cache[name][0] != step:
            cache[name] = (step, compute())
        return cache[name][1]

    def attach_loggers(self, loggers) -> None:
        """The run's loggers, for a stage the runner drives without a trainer."""
        self._run_loggers = list(loggers)

    @property
    def loggers(self):
        return self.trainer.loggers if self._trainer is not None else self._run_loggers

    # ---- frozen components (body model, guidance) stay out of checkpoints ------------------
    def freeze_component(self, name: str) -> None:
        """Mark submodule ``name`` as a fixed input: no gradients, and not saved in checkpoints
        (it is rebuilt from the config), which keeps checkpoints to what the stage learns.
        ``name`` may be dotted (``generator.prior``: a method component's fixed input)."""
        self.get_submodule(name).requires_grad_(False)
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
    def weight(self, name: str, step: int | None = None) -> float:
        """``lambda_<name>`` at ``step`` (default: the global step), schedules applied."""
        return weight_at(self.loss_weights[name], self.global_step if step is None else step)

    def active(self, name: str, step: int | None = None) -> bool:
        spec = self.loss_weights[name]
        return not is_always_zero(spec) and self.weight(name, step) != 0.0

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def on_fit_start(self) -> None:
        if all(is_always_zero(spec) for spec in self.loss_weights.values()):
            raise ValueError(
                f"Every loss weight of stage {self.stage_cfg.name!r} is 0 "
                f"({', '.join(f'stage.lambda_{n}' for n in self.loss_weights)}): nothing would be optimised. "
                "Give at least one term a weight > 0."
            )

    def weigh(self, raw: dict[str, torch.Tensor], step: int, advice: str | None = None):
        """``(total, weighted, record)`` of raw loss terms at ``step``: unknown or missing terms and
        non-finite values are errors naming the terms; ``record`` holds the raw value, weight and
        weighted value of every term (``train/loss_<n>``, ``train/lambda_<n>``, ``train/weighted_<n>``;
        weight 0 for the terms that are off) and ``train/loss``."""
        unknown = set(raw) - set(self.loss_weights)
        if unknown:
            raise KeyError(f"loss terms {sorted(unknown)} have no lambda_<name> in the stage config")
        if not raw:
            raise ValueError(
                f"No loss term is active at step {step}: every scheduled lambda_ of stage "
                f"{self.stage_cfg.name!r} is 0 here. Give at least one term a weight > 0 at every step."
            )
        weights = {name: self.weight(name, step) for name in raw}
        weighted = {name: weights[name] * value for name, value in raw.items()}
        total = sum(weighted.values())
        bad = [name for name in raw if not (torch.isfinite(raw[name]).all() and torch.isfinite(weighted[name]).all())]
        if bad or not torch.isfinite(total):
            shown = bad or sorted(raw)
            raise NonFiniteLossError(
                f"Non-finite loss at step {step} of stage {self.stage_cfg.name!r}: terms {shown} "
                f"(raw {[float(raw[n].detach().float().mean()) for n in shown]}, weights "
                f"{[weights[n] for n in shown]}). {advice or self._checkpoint_note()} "
                "Lower the learning rate or the offending lambda_."
            )
        record: dict[str, torch.Tensor | float] = {}
        for name, value in raw.items():
            record[f"train/loss_{name}"] = value.detach()
            record[f"train/lambda_{name}"] = weights[name]
            record[f"train/weighted_{name}"] = weighted[name].detach()
        for name in sorted(self.loss_weights.keys() - raw.keys()):  # ablated or off: its weight is 0
            record[f"train/lambda_{name}"] = 0.0
        record["train/loss"] = total.detach()
        return total, weighted, record

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        total, _, record = self.weigh(self.compute_losses(batch), self.global_step)
        for key, value in record.items():
            self.log(key, value, on_step=True, prog_bar=key == "train/loss")
        return total

    # ---- the optimiser (one for every optimisation stage) --------------------------------------
    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        """What the stage optimises (its trainable components' parameters)."""
        raise NotImplementedError(f"{type(self).__name__} optimises nothing")

    def configure_optimizers(self):
        """Adam at ``stage.lr``; with ``stage.warmup_steps`` (the stages that have it) a linear
        warm-up then cosine decay over ``trainer.max_steps``, stepped every step; without it a
        constant rate (AvatarCLIP's motion optimisation)."""
        optimizer = torch.optim.Adam(self.parameters_to_optimise(), lr=float(self.stage_cfg.lr))
        warmup = self.stage_cfg.get("warmup_steps")
        if warmup is None:
            return optimizer
        schedule = warmup_cosine(int(warmup), int(self.cfg.trainer.max_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

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
