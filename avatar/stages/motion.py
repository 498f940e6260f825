"""Motion: candidate poses + a motion sentence -> a 60-frame clip (AvatarCLIP's motion stage,
``python train.py stage=motion stage.pose_dir=<a pose run>``).

Follows ``MotionOptimizer`` of AvatarCLIP (``AvatarAnimate/models/motion_generation.py``): the
motion VAE's latent code ``z`` is optimised with Adam (lr 0.01, 5,000 steps in the paper) and
decoded into ``num_frames`` frames; the loss is

* ``lambda_reconstruction`` (1): every candidate pose of the pose stage (best first, top
  ``num_candidates``) is matched to the decoded frame closest to it; the loss is the
  ``rank_weights``-weighted *sum* over candidates (AvatarCLIP sums too) of that closest
  distance. Distance: squared Frobenius norm of the difference of the 21 body joints' local
  rotation matrices, mean over joints (AvatarCLIP compares joint rotations; matrices avoid the
  axis-angle wrap-around). The root is not compared (candidates are upright);
* ``lambda_guidance`` (0.001): ``guidance_frames`` decoded frames ``guidance_gap`` apart (a
  random start each step) are posed on the body (default shape), rendered textureless from the
  front (each frame framed to fill the view; soft-silhouette gradient straight-through when
  ``guidance_silhouette``) and scored ``1 - cos`` against the prompt by the guidance model;
  with ``guidance_later_weight`` a frame at index t weighs ``t + 1`` (normalised), so later
  frames weigh more, as in the paper;
* ``lambda_delta`` (0.01), *subtracted*: ``loss_delta = -mean |R[t+1] - R[t]|`` over the body
  joints' rotation-matrix entries (the logged value is negative), rewarding livelier motion;
  bounded, because rotation matrices are;
* ``lambda_latent`` (0 = the paper): ``mean(z^2)``, a pull towards the VAE prior's centre.

Generators (``stage.generator``, registered components in avatar/generators/motion/, one
module each): ``latent`` (the above; ``latent_init`` chooses where the code starts:
``normal`` as AvatarCLIP, ``zeros``, ``interpolation``, or, not in the paper, ``search``: the best
of ``search_samples`` N(0, I) draws, ``prior_search``: the same over the VAE's sampler's draws,
``retrieval``: the code of a retrieved real clip), ``reconstruction`` (the paper's first baseline: the same
optimisation with the guidance and delta terms off) and ``interpolation`` (the second: the
candidates' codes interpolated between evenly spaced key times; no optimisation, the stage runs
one-shot through the same output path). Not in the paper, one-shot too: ``retrieval``, the same
objective minimised over the real mocap clips of the motion codebook instead of the VAE's codes
(a real clip walks even when the candidates are not strides; with ``lambda_description`` the
prompt's match with the clips' mocap descriptions joins the ranking), and ``still``, the best
candidate held for every frame (the baseline every motion metric should beat). The stage holds
what they share: the candidates, the VAE, the body and renderers, the guidance model, the loss
terms that judge a clip and the outputs; a generator reads only its ``terms`` (the stage
switches the other ``lambda_`` off), and ``trainable`` is the generator's.

Root: the project's VAE is trained on heading-normalised windows, so it decodes a root
orientation (upright, facing -Y at the start, with the capture's leaning and turning) but no
translation. ``root=upright`` (default, as AvatarCLIP, which discards the decoded root) replaces
it by ``skeleton.UPRIGHT``; ``root=decoded`` keeps it. Either way the clip is grounded on the
body (one vertical offset so its lowest vertex touches z = 0) and the pelvis does not travel.

Outputs in the run directory: ``motion.npz`` (``motion_files.save_motion``), ``motion.mp4``,
``images/motion_step*.png`` (candidates on top, evenly spaced frames below; also logged),
``metrics.json`` and ``result.json`` (``avatar.metrics.motion`` metrics; ``objective`` = minus
the scorer's mean similarity of the prompt with renders of ``score_frames`` frames, or the
rank-weighted reconstruction distance when ``scorer.enabled=false``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import roma
import torch

from avatar.body.base import build_body
from avatar.body.skeleton import UPRIGHT, CanonicalPose
from avatar.engine.schedules import is_always_zero
from avatar.export.media import caption_tile, image_grid, save_image, to_uint8
from avatar.generators.motion import LATENT_INITS, MOTION_GENERATORS, MotionGenerator
from avatar.metrics.motion import (
    frame_indices,
    grounded_motion,
    motion_metrics,
    render_frames,
)
from avatar.mocap.retarget import CanonicalMotion
from avatar.priors.data import body_joints
from avatar.priors.motion_vae import rot6d_to_rotmat
from avatar.render import MeshRenderer, sized_renderer
from avatar.stages.base import STAGES, StageModule
from avatar.stages.motion_files import load_candidates, save_motion
from avatar.utils.bounds import above, at_least
from avatar.utils.io import atomic_write_text

log = logging.getLogger(__name__)


class Root(StrEnum):
    """``stage.root``: what the clip's root rotation is."""

    upright = "upright"  # discard the decoded root: skeleton.UPRIGHT (AvatarCLIP)
    decoded = "decoded"  # keep the VAE's (or the retrieved clip's) root


@dataclass
class MotionStageConfig:
    name: str = "motion"
    # The pose stage's run directory (or its poses.npz): the candidate poses. Required.
    pose_dir: str = ""
    # A registered motion generator (avatar/generators/motion/): latent | reconstruction |
    # interpolation | retrieval | still
    generator: str = "latent"
    # retrieval (not in the paper): of the motion codebook's clips (prior.motion_codebook), the
    # ``retrieval_top_k`` that pass closest to the candidates (joint positions) are scored by the
    # paper's loss (reconstruction + guidance - delta; smoothness is for optimised clips)
    retrieval_top_k: int = 16
    num_candidates: int = at_least(1, 5)  # top candidates used (fewer if the file holds fewer)
    rank_weights: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.4, 0.2])
    num_frames: int = at_least(2, 60)  # frames decoded (the VAE's training clips are 60 frames)
    fps: float = above(0.0, 30.0)  # the VAE's training frame rate (train_motion_vae's stage.fps)
    # Frames a candidate is matched over: 1 = the paper (the single closest frame, which the
    # optimisation can satisfy with a one-frame spike); w > 1 = the closest run of w frames.
    match_window: int = 1
    lr: float = 0.01  # Adam on the latent code, constant (AvatarCLIP)
    # Where the latent generators' code starts (avatar/generators/motion/latent_init.py):
    # normal: N(0, latent_init_std^2) from the seed (AvatarCLIP) | zeros | interpolation: the
    # code of the interpolation baseline's clip (encoded by the VAE), a start that already
    # passes near every candidate | search (not in the paper): of ``search_samples`` codes drawn
    # as for normal, the one whose decoded clip best reconstructs the candidates (a motion-prior
    # codebook: a clip that moves through the candidates, e.g. a gait cycle through strides) |
    # prior_search (not in the paper): the same over draws of the VAE's sampler (sample_codes) |
    # retrieval (not in the paper): the code of the clip the retrieval generator picks (by the
    # paper's terms and lambda_description)
    latent_init: str = "normal"
    latent_init_std: float = 1.0
    search_samples: int = 1024
    root: Root = Root.upright  # upright: discard the decoded root (AvatarCLIP) | decoded
    # The guidance text: "" uses the candidates' prompt_text (the pose stage's templated text);
    # otherwise this template (with "{}") is filled with the candidates' prompt.
    template: str = ""
    guidance_frames: int = 2  # frames rendered for the guidance each step
    guidance_gap: int = 30  # frames between them
    guidance_later_weight: bool = True  # a frame at index t weighs t + 1 (normalised)
    guidance_azimuth_deg: float = 0.0  # 0 = front
    guidance_azimuth_jitter_deg: float = 0.0  # per-step uniform jitter (seed, step)
    guidance_silhouette: bool = True  # soft-silhouette gradient straight-through
    lambda_reconstruction: Any = 1.0
    lambda_guidance: Any = 0.001
    lambda_delta: Any = 0.01  # the delta is subtracted: loss_delta = -mean |R[t+1] - R[t]|
    # Not in the paper: mean squared acceleration of the template skeleton's joints (m/frame^2,
    # x 1e4), against the one-frame spikes the closest-frame reconstruction otherwise favours.
    lambda_smoothness: Any = 0.0
    # Not in the paper, latent generator: the smoothness term penalises the acceleration of the
    # change from the start clip (the decoded init) instead of the motion's, so the start's own
    # dynamics are kept: from a retrieved walk (latent_init=retrieval) 0.90 m in 2 s against 0.25
    # m (docs/experiments/motion.md, 2026-12-05 evening).
    smooth_change: bool = False
    lambda_latent: Any = 0.0  # mean(z^2); 0 = the paper
    # Not in the paper; the retrieval generator and latent_init=retrieval: 1 - the prompt's share
    # for the clip's description in the mocap corpus (avatar/priors/motion_descriptions.py: "walk",
    # "salsa dance", ...) added to the clip ranking and score; no loss term of a decoded clip.
    lambda_description: Any = 0.0
    description_temperature: float = 0.05  # softmax temperature of that match
    description_min_share: float = 0.5  # a description with a lower share of the prompt does not name it
    # ---- outputs -------------------------------------------------------------------------
    preview_size: int = 192  # validation strips and motion.mp4
    val_frames: int = 6  # frames in a validation strip
    video_azimuth_deg: float = 30.0
    score_frames: int = 8  # frames the scorer scores for the metrics (evenly spaced)
    contact_threshold: float = 0.05  # foot contact for the foot-skating metric (metres)


@STAGES.register("motion")
class MotionStage(StageModule):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        self._validate(sc)
        self.generator_name = str(sc.generator)

        candidates = self._load_candidates(sc)
        k = min(int(sc.num_candidates), len(candidates))
        if k < sc.num_candidates:
            log.warning(
                "stage.num_candidates=%d but %s holds %d poses: using %d",
                sc.num_candidates,
                sc.pose_dir,
                len(candidates),
                k,
            )
        self.candidates = candidates
        self.register_buffer("candidate_rotations", candidates.rotations[:k].clone(), persistent=False)
        self.register_buffer("candidate_rotmats", roma.rotvec_to_rotmat(candidates.rotations[:k, 1:]), persistent=False)
        self.register_buffer(
            "rank_weights", torch.tensor(list(sc.rank_weights)[:k], dtype=torch.float32), persistent=False
        )
        self.prompt = (candidates.prompt or str(self.cfg.prompt.motion)).strip()
        self.prompt_text = self._prompt_text(sc, candidates)

        from avatar.priors.loading import load_motion_prior

        self.prior = load_motion_prior(cfg.prior)
        self.freeze_component("prior")
        self.body = build_body(cfg.body)
        self.freeze_component("body")
        self.renderer = MeshRenderer(cfg.render)
        self.preview_renderer = sized_renderer(sc.preview_size)
        self.guidance_renders = 0  # frames rendered for the guidance (0 when it is off)

        kind = MOTION_GENERATORS.get(sc.generator)  # the generator's class: what it reads, whether it trains
        if "description" not in kind.terms and not is_always_zero(self.loss_weights["description"]):
            log.warning(
                "stage.lambda_description only ranks retrieved clips: ignored by generator=%s",
                sc.generator,
            )
        for name in self.loss_weights.keys() - set(kind.terms):  # terms the generator does not read: off
            self.loss_weights[name] = 0.0
        terms = tuple(t for t in kind.terms if t != "description")  # descriptions rank clips, never a loss
        if kind.trainable and all(is_always_zero(self.loss_weights[t]) for t in terms):
            raise ValueError(
                f"stage.generator={sc.generator}: every loss weight (stage.lambda_{{{','.join(terms)}}}) is 0, "
                "so there is nothing to optimise; set stage.lambda_reconstruction (default 1)"
            )
        uses_guidance = self.active("guidance")
        # fail now, not after the run (the description term matches the prompt itself)
        if (not self.prompt_text and (uses_guidance or cfg.scorer.enabled)) or (
            not self.prompt and self.active("description")
        ):
            raise ValueError(self.empty_prompt_message())
        self.guidance = None
        if uses_guidance:
            from avatar.guidance.base import build_guidance

            self.guidance = build_guidance(cfg.guidance)
            self.freeze_component("guidance")
        # The method (avatar/generators/motion/): a submodule, so its parameters are optimised
        # and checkpointed (``generator.latent``); it may use everything above.
        self.generator: MotionGenerator = MOTION_GENERATORS.build(sc.generator, self)
        self._start = time.perf_counter()

    # ---- inputs ------------------------------------------------------------------------------
    @staticmethod
    def _validate(sc) -> None:
        MOTION_GENERATORS.get(sc.generator)  # an unknown name fails before anything loads
        LATENT_INITS.get(sc.latent_init)
        if sc.num_candidates < 1:
            raise ValueError(f"stage.num_candidates must be >= 1, got {sc.num_candidates}")
        if len(sc.rank_weights) < sc.num_candidates:
            raise ValueError(
                f"stage.rank_weights has {len(sc.rank_weights)} weights for stage.num_candidates={sc.num_candidates}: "
                "give one weight per candidate"
            )
        if not 1 <= sc.match_window <= sc.num_frames:
            raise ValueError(f"stage.match_window={sc.match_window} must be in [1, stage.num_frames={sc.num_frames}]")
        if sc.num_frames < 2:
            raise ValueError(f"stage.num_frames must be >= 2, got {sc.num_frames}")
        if sc.guidance_frames < 1 or (sc.guidance_frames - 1) * sc.guidance_gap >= sc.num_frames:
            raise ValueError(
                f"stage.guidance_frames={sc.guidance_frames} frames stage.guidance_gap={sc.guidance_gap} apart do not fit "
                f"in stage.num_frames={sc.num_frames}"
            )
        if sc.template and "{}" not in sc.template:
            raise ValueError(f"stage.template={sc.template!r} needs a '{{}}' where the prompt goes (or leave it empty)")

    @staticmethod
    def _load_candidates(sc):
        if not str(sc.pose_dir).strip():
            raise ValueError(
                "stage.pose_dir is empty: the motion stage starts from the candidate poses of a pose-stage run. "
                'Make one with `python train.py stage=pose prompt.motion="a person raising both arms"`, then pass '
                "its run directory: `python train.py stage=motion stage.pose_dir=<that run directory>`"
            )
        try:
            return load_candidates(sc.pose_dir, key="stage.pose_dir")
        except ValueError as err:
            raise ValueError(f"stage.pose_dir={sc.pose_dir!r} holds no usable candidate poses: {err}") from err

    def _prompt_text(self, sc, candidates) -> str:
        if sc.template:
            return sc.template.format(self.prompt) if self.prompt else ""
        return (candidates.prompt_text or self.prompt).strip()

    def empty_prompt_message(self) -> str:
        return (
            f"The motion prompt is empty: {self.stage_cfg.pose_dir} has no prompt/prompt_text and prompt.motion is "
            f'{str(self.cfg.prompt.motion)!r}. Give the sentence, e.g. prompt.motion="a person raising both arms", '
            "or switch off what reads it: stage.lambda_guidance=0, stage.lambda_description=0 and scorer.enabled=false"
        )

    # ---- the motion ----------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.prior.eval()  # frozen: never dropout, whatever Lightning asks
        return self

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotations (T, 22, 3) axis-angle (root per ``stage.root``) and the body joints' local
        rotation matrices (T, 21, 3, 3) of the clip decoded from one code z (1, D)."""
        t = int(self.stage_cfg.num_frames)
        features = self.prior.decode(z, t)[0]
        rotmats = rot6d_to_rotmat(features.reshape(t, -1, 6)[:, :22])
        return self.decoded_rotations(rotmats), rotmats[:, 1:]

    def decoded_rotations(self, rotmats: torch.Tensor) -> torch.Tensor:
        """Rotation matrices (..., 22, 3, 3) -> axis-angle (..., 22, 3), root per ``stage.root``."""
        return self.with_root(roma.rotmat_to_rotvec(rotmats))

    def with_root(self, rotations: torch.Tensor) -> torch.Tensor:
        """Rotations (..., 22, 3) with the root per ``stage.root`` (upright: replaced)."""
        if self.stage_cfg.root != Root.upright:
            return rotations
        root = torch.tensor(UPRIGHT, dtype=rotations.dtype, device=rotations.device).expand(*rotations.shape[:-2], 1, 3)
        return torch.cat([root, rotations[..., 1:, :]], dim=-2)

    @property
    def trainable(self) -> bool:  # an optimisation is trained; a one-shot generator is not
        return self.generator.trainable

    @torch.no_grad()
    def motion_rotations(self) -> torch.Tensor:
        """The current clip's rotations (T, 22, 3), detached."""
        return self.generator.motion_rotations(self)

    def reconstruction_distances(self, body_rotmats: torch.Tensor) -> torch.Tensor:
        """Per candidate (K,): the distance to its closest frame (mean over the 21 body joints of
        the squared Frobenius norm of the rotation-matrix difference)."""
        diff = body_rotmats[None] - self.candidate_rotmats[:, None]  # (K, T, 21, 3, 3)
        dist = (diff**2).sum((-1, -2)).mean(-1)  # (K, T)
        window = int(self.stage_cfg.match_window)
        if window > 1:  # the mean over `window` consecutive frames: a candidate is held, not flashed
            dist = torch.nn.functional.avg_pool1d(dist[:, None], window, stride=1)[:, 0]
        return dist.min(dim=1).values

    @torch.no_grad()
    def reconstruction_errors(self) -> dict[str, Any]:
        """How close the clip comes to each candidate: rotation distance and template-skeleton
        joint error (mm) to the closest frame, per candidate and rank-weighted."""
        rotations = self.motion_rotations()
        rotmats = roma.rotvec_to_rotmat(rotations[:, 1:])
        dist = self.reconstruction_distances(rotmats)
        frames, cands = body_joints(rotations), body_joints(self.candidate_rotations)
        mm = (frames[None] - cands[:, None]).norm(dim=-1).mean(-1).min(dim=1).values * 1000.0
        w = self.rank_weights
        return {
            "reconstruction_distance": float((w * dist).sum()),
            "reconstruction_joint_error_mm": float((w * mm).sum() / w.sum()),
            "candidate_joint_error_mm": [round(float(v), 2) for v in mm],
        }

    # ---- optimisation ------------------------------------------------------------------------
    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        return self.generator.losses(self)

    def motion_losses(
        self,
        rotations: torch.Tensor,
        body_rotmats: torch.Tensor,
        smoothness: bool = True,
        reconstruction: bool = True,
        smoothness_reference: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The terms that judge a clip (rotations (T, 22, 3), body rotation matrices (T, 21, 3, 3)),
        whatever made it: reconstruction, delta, smoothness, guidance (each unless switched off)."""
        losses: dict[str, torch.Tensor] = {}
        if reconstruction and self.active("reconstruction"):
            losses["reconstruction"] = (self.rank_weights * self.reconstruction_distances(body_rotmats)).sum()
        if self.active("delta"):
            losses["delta"] = -(body_rotmats[1:] - body_rotmats[:-1]).abs().mean()
        if smoothness and self.active("smoothness"):
            joints = body_joints(rotations)  # (T, 22, 3), template skeleton, root at the origin
            if smoothness_reference is not None:  # smooth the change from a start clip, not the motion itself
                joints = joints - smoothness_reference
            losses["smoothness"] = 1e4 * ((joints[2:] - 2 * joints[1:-1] + joints[:-2]) ** 2).sum(-1).mean()
        if self.guidance is not None and self.active("guidance"):
            losses["guidance"] = self.guidance_loss(rotations)
        return losses

    def guidance_loss(self, rotations: torch.Tensor) -> torch.Tensor:
        sc = self.stage_cfg
        g = self.step_generator()
        span = (sc.guidance_frames - 1) * sc.guidance_gap
        start = int(torch.randint(0, sc.num_frames - span, (1,), generator=g))
        frames = torch.arange(sc.guidance_frames) * sc.guidance_gap + start
        jitter = (float(torch.rand((), generator=g)) * 2 - 1) * sc.guidance_azimuth_jitter_deg
        pose = CanonicalPose(
            rotations[frames], torch.zeros(len(frames), 3, dtype=rotations.dtype, device=rotations.device)
        )
        vertices = self.body(pose=pose).vertices
        images = render_frames(
            self.body,
            vertices,
            self.renderer,
            azimuth_deg=sc.guidance_azimuth_deg + jitter,
            silhouette=sc.guidance_silhouette,
        )
        self.guidance_renders += len(frames)
        per_frame = self.guidance.guidance_loss(images, self.prompt_text)
        weights = (frames + 1).float() if sc.guidance_later_weight else torch.ones(len(frames))
        weights = (weights / weights.sum()).to(per_frame)
        return (weights * per_frame).sum()

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return self.generator.parameters_to_optimise()

    def validate(self) -> None:
        errors = self.reconstruction_errors()
        self.log("metrics/reconstruction_joint_error_mm", errors["reconstruction_joint_error_mm"], on_step=True)
        from avatar.metrics.motion import delta

        self.log("metrics/delta", delta(self.motion_rotations()), on_step=True)
        self.validation_image()

    # ---- outputs ---------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_image(self) -> np.ndarray:
        """Candidates (top row) and ``val_frames`` evenly spaced frames of the clip (bottom)."""
        sc = self.stage_cfg
        rotations = self.motion_rotations()
        index = frame_indices(len(rotations), int(sc.val_frames))
        rows = [(self.candidate_rotations, [f"candidate {i + 1}" for i in range(len(self.candidate_rotations))]),
                (rotations[index], [f"frame {i}" for i in index])]  # fmt: skip
        ncols = max(len(rows[0][1]), len(rows[1][1]))
        tiles = []
        for rot, labels in rows:
            pose = CanonicalPose(rot, torch.zeros(len(rot), 3))
            vertices = self.body(pose=pose.to(self.body.device, self.body.dtype)).vertices
            images = render_frames(
                self.body, vertices, self.preview_renderer, azimuth_deg=sc.video_azimuth_deg, elevation_deg=10.0
            )
            row = [caption_tile(to_uint8(img), text) for img, text in zip(images, labels)]
            row += [np.full_like(row[0], 255)] * (ncols - len(row))
            tiles += row
        grid = image_grid(tiles, ncols=ncols)
        save_image(self.run_dir() / "images" / f"motion_step{self.global_step:06d}.png", grid)
        self.log_image("val/motion", grid)
        return grid

    @torch.no_grad()
    def final_motion(self) -> CanonicalMotion:
        """The stage's clip, feet on the ground."""
        rotations = self.motion_rotations().float().cpu()
        motion = CanonicalMotion(
            rotations,
            torch.zeros(len(rotations), 3),
            float(self.stage_cfg.fps),
            source=f"motion stage ({self.generator_name})",
        )
        return grounded_motion(motion, self.body)

    @torch.no_grad()
    def export(self) -> dict:
        """motion.npz, motion.mp4, the last validation strip and metrics.json."""
        from avatar.export.animation import render_motion_video

        sc, run_dir = self.stage_cfg, self.run_dir()
        motion = self.final_motion()
        save_motion(run_dir / "motion.npz", motion, self.prompt, self.generator_name)
        render_motion_video(self.body, motion.poses(), run_dir / "motion.mp4", motion.fps, self.preview_renderer,
                            azimuth_deg=sc.video_azimuth_deg)  # fmt: skip
        self.validation_image()
        atomic_write_text(run_dir / "metrics.json", json.dumps(self.final_metrics(), indent=2))
        return {
            "generator": self.generator_name,
            "prompt": self.prompt,
            "prompt_text": self.prompt_text,
            "pose_dir": str(sc.pose_dir),
            "num_candidates": len(self.candidate_rotations),
            "num_frames": motion.num_frames,
            "fps": motion.fps,
            "guidance_renders": self.guidance_renders,
            **self.generator.info(),
            "seconds": round(time.perf_counter() - self._start, 1),
        }

    def final_metrics(self) -> dict:
        """The final clip's metrics, computed once for export's metrics.json and evaluate."""
        return self.once_per_step("motion_metrics", self.motion_metrics)

    @torch.no_grad()
    def motion_metrics(self) -> dict:
        """``avatar.metrics.motion`` metrics of the final clip."""
        from avatar.guidance.base import build_scorer
        from avatar.priors.loading import load_pose_prior

        sc = self.stage_cfg
        motion = self.final_motion()
        scorer = build_scorer(self.cfg)
        if scorer is not None and not self.prompt_text:
            raise ValueError(self.empty_prompt_message())
        metrics = motion_metrics(
            motion, self.body, pose_prior=load_pose_prior(self.cfg.prior), scorer=scorer, prompt_text=self.prompt_text,
            score_frames=int(sc.score_frames), renderer=self.renderer, contact_threshold=float(sc.contact_threshold),
        )  # fmt: skip
        metrics.update(self.reconstruction_errors())
        if scorer is not None:  # reference: the scorer's view of the candidate poses themselves
            from avatar.metrics.motion import scorer_scores

            still = CanonicalMotion(
                self.candidate_rotations.cpu(), torch.zeros(len(self.candidate_rotations), 3), motion.fps
            )
            metrics["candidates_scorer_score"] = float(
                scorer_scores(scorer, self.body, still, self.prompt_text, None, self.renderer).mean()
            )
        metrics["objective"] = -metrics["scorer_score"] if scorer is not None else metrics["reconstruction_distance"]
        return metrics

    def evaluate(self) -> dict:
        metrics = self.final_metrics()
        numeric = {
            f"motion/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "objective"
        }
        for logger in self.loggers:
            logger.log_metrics(numeric, step=int(self.global_step))
        log.info("Motion (%s): %s", self.generator_name, metrics)
        return metrics
