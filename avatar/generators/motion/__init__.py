"""Motion generators: how the motion stage (``stage=motion``, avatar/stages/motion.py) turns the
pose stage's candidate poses into a clip, chosen by ``stage.generator`` from
:data:`MOTION_GENERATORS`; and the latent initialisations of the latent-code generators, chosen
by ``stage.latent_init`` from :data:`LATENT_INITS` (latent_init.py).

The stage owns what every generator shares: the candidates (``stage.candidate_rotations``, best
first; ``stage.candidate_rotmats``, ``stage.rank_weights``), the motion VAE (``stage.prior``,
``stage.decode``), the root handling (``stage.with_root``), the body and renderers, the guidance
model, the loss terms that judge a clip (``stage.motion_losses``, ``stage.reconstruction_distances``,
weighted by ``stage.weight(name)``), and the outputs (motion.npz, video, metrics). A generator owns
its method. Two kinds:

* **one-shot** (``trainable = False``; ``interpolation``, ``retrieval``, ``still``): the stage is
  not trained; it exports :meth:`MotionGenerator.motion_rotations` (computed once, see
  :class:`OneShot`);
* **an optimisation** (``trainable = True``; ``latent``, ``reconstruction``): a Lightning fit of
  :meth:`MotionGenerator.parameters_to_optimise` by :meth:`MotionGenerator.losses`.

A generator is a submodule of the stage (``stage.generator``): its parameters are optimised and
checkpointed under ``generator.`` (e.g. ``generator.latent``). The stage is passed to every
method, never stored (it is an ``nn.Module`` too: it would become a submodule of its own
submodule).

Adding a generator (``still.py`` is the shortest example):

1. a module in this package with a :class:`MotionGenerator` subclass (or :class:`OneShot` for a
   clip computed once) registered by ``@MOTION_GENERATORS.register("<name>")``; every module here
   is imported when the package is, so nothing else needs listing it;
2. ``trainable`` and ``terms`` (the stage's ``lambda_<name>`` loss terms it reads: the stage
   switches the others off, so e.g. the guidance model is loaded only for a generator that
   reads ``guidance``);
3. its settings, if any, are ``stage.*`` keys in ``MotionStageConfig``;
4. run it: ``python train.py stage=motion stage.pose_dir=<pose run> stage.generator=<name>``.

A latent initialisation is a function ``(stage, rng) -> (code (1, D), info)`` registered by
``@LATENT_INITS.register("<name>")`` (latent_init.py).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

import torch

from avatar.registry import Registry

if TYPE_CHECKING:
    from avatar.stages.motion import MotionStage


class MotionGenerator(torch.nn.Module):
    """The interface of a motion generator; ``__init__(stage)`` reads ``stage.stage_cfg`` /
    ``stage.cfg`` and makes the generator's parameters (seeded by ``stage.cfg.seed``)."""

    trainable: bool = False  # True: the stage is fitted under Lightning
    terms: tuple[str, ...] = ()  # the stage's loss terms (lambda_<name>) it reads; the others are off

    def __init__(self, stage: MotionStage) -> None:
        super().__init__()

    def motion_rotations(self, stage: MotionStage) -> torch.Tensor:
        """(T, 22, 3) the current clip's rotations (axis-angle, root per ``stage.root``), detached."""
        raise NotImplementedError

    # ---- an optimisation (trainable = True) --------------------------------------------------
    def losses(self, stage: MotionStage) -> dict[str, torch.Tensor]:
        """The raw loss terms ``{name: value}`` of this step (weighted by the stage's
        ``lambda_<name>``); compute a term only if ``stage.active(name)``."""
        raise NotImplementedError(f"{type(self).__name__} optimises nothing (trainable={self.trainable})")

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return []

    def info(self) -> dict[str, Any]:
        """What result.json reports about the generator's choices (a search, a retrieval)."""
        return {}


class OneShot(MotionGenerator):
    """A generator whose clip is computed once, on first use, by :meth:`make`."""

    def __init__(self, stage: MotionStage) -> None:
        super().__init__(stage)
        self._clip: torch.Tensor | None = None

    def make(self, stage: MotionStage) -> torch.Tensor:
        """(T, 22, 3) the clip (``stage.stage_cfg.num_frames`` frames, root per ``stage.root``)."""
        raise NotImplementedError

    @torch.no_grad()
    def motion_rotations(self, stage: MotionStage) -> torch.Tensor:
        if self._clip is None:
            self._clip = self.make(stage)
        return self._clip


MOTION_GENERATORS: Registry[MotionGenerator] = Registry("motion generator", "stage.generator")
# (stage, rng) -> (latent code (1, D), what result.json reports)
LATENT_INITS: Registry[tuple[torch.Tensor, dict]] = Registry("latent initialisation", "stage.latent_init")

# Importing the modules registers the generators and initialisations: every module of this
# package, so a new generator is one new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
