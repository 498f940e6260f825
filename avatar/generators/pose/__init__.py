"""Pose generators: how the pose stage (``stage=pose``, avatar/stages/pose.py) makes candidate
poses for a motion sentence, chosen by ``stage.generator`` from :data:`POSE_GENERATORS`.

The stage owns what every generator shares (the canonical body, rendering, the guidance model,
scoring, the outputs); a generator owns its method. Two kinds:

* a **search** (``trainable = False``; ``codebook``): the stage does not train; its ``export``
  asks :meth:`PoseGenerator.candidates` for the ranked candidates;
* an **optimisation** (``trainable = True``; ``direct``, ``latent``): a Lightning fit of
  :meth:`PoseGenerator.parameters_to_optimise` by the stage's guidance loss on renders of
  :meth:`PoseGenerator.rotations` plus the generator's own regularisers
  (:meth:`PoseGenerator.losses`); ``export`` scores the optimised poses.

A generator is a submodule of the stage (``stage.generator``): its parameters are optimised and
checkpointed under ``generator.``. Submodules named in ``fixed`` (e.g. the latent generator's
pose prior) are inputs rebuilt from the config: the stage freezes them and keeps them out of
checkpoints. The stage is passed to every method, never stored (it is an ``nn.Module`` too: it
would become a submodule of its own submodule).

A new generator: a module here with a ``PoseGenerator`` subclass registered by
``@POSE_GENERATORS.register("<name>")`` (every module here is imported with the package); its settings are
``stage.*`` keys in ``PoseStageConfig``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

import torch

from avatar.body.skeleton import UPRIGHT
from avatar.registry import Registry

if TYPE_CHECKING:
    from avatar.stages.motion_files import CandidatePoses
    from avatar.stages.pose import PoseStage


class PoseGenerator(torch.nn.Module):
    """The interface of a pose generator; ``__init__(stage)`` reads ``stage.stage_cfg`` /
    ``stage.cfg`` and makes the generator's parameters (seeded by ``stage.cfg.seed``)."""

    trainable: bool = False  # True: the stage is fitted under Lightning
    fixed: tuple[str, ...] = ()  # submodules that are fixed inputs: frozen, not checkpointed

    def __init__(self, stage: PoseStage) -> None:
        super().__init__()

    # ---- a search (trainable = False) ------------------------------------------------------
    def candidates(self, stage: PoseStage, guidance) -> tuple[CandidatePoses, dict]:
        """The ``stage.num_candidates`` best poses, best first, and what result.json reports
        about the search."""
        raise NotImplementedError(f"{type(self).__name__} is not a search (trainable={self.trainable})")

    # ---- an optimisation (trainable = True) --------------------------------------------------
    def rotations(self, stage: PoseStage) -> torch.Tensor:
        """(K, 22, 3) the current poses (axis-angle, root upright), differentiable."""
        raise NotImplementedError(f"{type(self).__name__} does not optimise poses")

    def losses(self, stage: PoseStage) -> dict[str, torch.Tensor]:
        """The generator's own regularisers ``{name: raw value}`` (weighted by the stage's
        ``lambda_<name>``); compute a term only if ``stage.active(name)``."""
        return {}

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return []


def with_upright_root(body: torch.Tensor) -> torch.Tensor:
    """(K, 21, 3) body joint rotations -> (K, 22, 3) with the canonical upright root."""
    root = body.new_tensor(UPRIGHT).expand(len(body), 1, 3)
    return torch.cat([root, body], dim=1)


POSE_GENERATORS: Registry[PoseGenerator] = Registry("pose generator", "stage.generator")

# Importing the modules registers the generators: every module of this package, so a new
# generator is one new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
