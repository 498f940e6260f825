"""Pose: one motion sentence -> candidate poses (AvatarCLIP's pose generation, ``stage=pose``).

The method is a registered component (``stage.generator``, avatar/generators/pose/), a
submodule of the stage; the stage owns the canonical body, rendering, scoring and the outputs.

* ``codebook`` (default): AvatarCLIP's ``AvatarAnimate`` pose generator. Every pose of a
  codebook is rendered on the canonical body (textureless) from the paper's five views and
  embedded by the guidance model; the prompt, wrapped in a template, is embedded once; poses are
  ranked by cosine similarity, the top ``top_k`` (40) are filtered for near-duplicates (mean
  absolute axis-angle difference of the body joints <= ``dedupe_threshold``, 0.07) and the best
  ``num_candidates`` (5) are kept for the motion stage. The embeddings are cached per (guidance,
  body, codebook, render settings), so a new prompt costs one text encoding and a matrix product.
  ``prior_weight`` > 0 (not in the paper, off by default) reorders the top_k by cosine + weight *
  log(cluster size); ``contrast=pose_words`` (not in the paper, off) ranks by the prompt's
  softmax share among prompts for the pose words, the candidates' scores then being log shares.

The paper's two other generators, each a Lightning optimisation of ``num_candidates`` poses at
once from seeded starts:

* ``direct``: the body joints' axis-angle rotations, by the guidance loss on renders;
* ``latent``: the pose prior's latent code (VPoser architecture; Adam 0.01, 500 steps in the
  paper), decoded to body rotations, with a small latent-norm term keeping it likely.

Views: AvatarCLIP's azimuths 120..240 degrees with 180 facing the body are ``azimuths``
-60..60 here (0 = the body's front). Renders are framed to fit each posed body, as the
``mini`` guidance was trained.

Outputs: ``poses.npz`` (:class:`avatar.stages.motion_files.CandidatePoses`), ``poses.png``
(the candidates from three views, with their scores), ``result.json`` (scores, the pose words
each candidate's geometry reads as, the search time).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avatar.body.base import build_body
from avatar.body.regions import region_colors
from avatar.body.skeleton import CanonicalPose
from avatar.engine.trainer import log_image
from avatar.export.media import caption_tile, image_grid, save_image, to_uint8
from avatar.generators.pose import POSE_GENERATORS, PoseGenerator
from avatar.generators.pose.codebook import CodebookGenerator, Contrast, EmbeddedCodebook
from avatar.guidance.synthetic.poses import pose_words
from avatar.render import MeshRenderer, framing_cameras, sized_renderer
from avatar.render.silhouette import with_silhouette_gradient
from avatar.stages.base import STAGES, StageModule
from avatar.stages.motion_files import POSES_FILE, CandidatePoses
from avatar.utils.bounds import at_least

log = logging.getLogger(__name__)


@dataclass
class PoseStageConfig:
    name: str = "pose"
    generator: str = "codebook"  # codebook | direct | latent (avatar/generators/pose/)
    # The prompt (``prompt.motion``) goes where "{}" is. AvatarCLIP's pose template is
    # "a rendered 3d man is {}" with a verb phrase ("raising both arms"); the default is its
    # body-view template, one of the mini guidance's training templates (avatar-eval pose:
    # mean hit rate 0.43 with it, 0.38 with the bare prompt).
    template: str = "a 3D rendering of {} in unreal engine"
    azimuths: list[float] = field(default_factory=lambda: [-60.0, -30.0, 0.0, 30.0, 60.0])
    elevation_deg: float = 0.0
    fov_deg: float = 60.0
    fit_margin: float = 1.15  # camera distance / distance at which the posed body fills the view
    top_k: int = at_least(1, 40)  # AvatarCLIP's topk
    dedupe_threshold: float = 0.07  # mean |axis-angle difference| (rad) under which poses are duplicates
    num_candidates: int = at_least(1, 5)  # poses handed to the motion stage
    # > 0: the top_k are reordered by cosine + prior_weight * log(cluster size) before
    # deduplication. Each codebook entry stands for a cluster of captured poses, so among poses
    # the guidance model scores alike the common one wins. 0 = the paper's cosine order; 0.01
    # helps "walking" and costs elsewhere (docs/experiments/pose-search.md).
    prior_weight: float = 0.0
    # "pose_words" (not in the paper, off by default): rank by the prompt's softmax share among
    # itself and one prompt per pose word ("a person kicking", "a person squatting", ...; each
    # in ``template``) at ``contrast_temperature``, as CLIP zero-shot classification does, not
    # by the raw cosine: a kick that scores high on "walking" but higher on "kicking" drops.
    contrast: Contrast = Contrast.cosine  # "" = the paper's cosine | "pose_words"
    contrast_temperature: float = 0.05
    # > 0 (not in the paper; the tiny/small presets set it): every pose gains description_weight x
    # the prompt's share among the pose words' prompts for its mocap clip's description ("walk",
    # "Front Kick", "salsa dance"; avatar/priors/motion_descriptions.py, all-MiniLM-L6-v2), a share
    # below description_min_share counting 0. At 64 px a stride reads like a lunge, but the frames
    # of clips described as walks are strides (avatar-eval pose: "a person walking" 0.0 -> 0.8 of
    # candidates striding; docs/experiments/pose-search.md). Where no description names the
    # action ("raising both arms") every pose gains 0 and the order is the guidance model's.
    description_weight: float = 0.0
    description_min_share: float = 0.9
    codebook_chunk: int = 16  # poses rendered per batch when building the cache
    cache_dir: str = ""  # empty = <project cache>/pose_codebook
    # ---- direct / latent optimisation ------------------------------------------------------------
    lr: float = 0.01
    warmup_steps: int = 10
    views_per_step: int = at_least(1, 2)  # random azimuths within [min(azimuths), max(azimuths)] per step
    init_noise_deg: float = 10.0  # direct: seeded noise on the rest pose, one draw per candidate
    init_latent_std: float = 0.5  # latent: seeded N(0, std^2) starts
    silhouette: bool = True  # gradients that move the outline (see avatar.render.silhouette)
    lambda_guidance: Any = 1.0  # 1 - cos(render, prompt), mean over candidates and views
    lambda_rotation_l2: Any = 1e-3  # direct: mean squared body axis-angle (rad^2)
    lambda_latent: Any = 1e-3  # latent: mean squared latent code (the prior's -log N up to a constant)
    preview_size: int = 160


def check_motion_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(
            f"prompt.motion is empty ({prompt!r}): the pose and motion stages need a motion sentence, "
            'e.g. python train.py stage=pose prompt.motion="a person raising both arms"'
        )
    return prompt.strip()


# ---- the stage ---------------------------------------------------------------------------------
@STAGES.register("pose")
class PoseStage(StageModule):
    """``generator=codebook`` searches once (in ``export``); ``direct`` and ``latent`` are Lightning
    fits of the generator's parameters (checkpointed as ``generator.*``)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        self.prompt = check_motion_prompt(cfg.prompt.motion)
        if "{}" not in sc.template:
            raise ValueError(f"stage.template={sc.template!r} needs a '{{}}' where the prompt goes")
        if not sc.azimuths:
            raise ValueError("stage.azimuths needs at least one view (degrees, 0 = the body's front)")
        if sc.num_candidates < 1 or sc.top_k < sc.num_candidates:
            raise ValueError(f"stage.num_candidates ({sc.num_candidates}) must be >= 1 and <= stage.top_k ({sc.top_k})")
        self.prompt_text = sc.template.format(self.prompt)
        self.body = build_body(cfg.body)
        self.freeze_component("body")
        self.renderer = MeshRenderer(cfg.render)
        self.preview_renderer = sized_renderer(sc.preview_size, like=cfg.render)
        self.codebook_renders = 0  # poses rendered and embedded for the codebook (0 on a cache hit)
        self.guidance = None
        self.generator: PoseGenerator = POSE_GENERATORS.build(sc.generator, self)
        for name in self.generator.fixed:  # the generator's fixed inputs (a prior): frozen, not checkpointed
            self.freeze_component(f"generator.{name}")

    @property
    def trainable(self) -> bool:  # a search is not trained; an optimisation is
        return self.generator.trainable

    # ---- rendering -----------------------------------------------------------------------------
    def posed_vertices(self, rotations: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) vertices of the canonical (default-shape) body in poses (B, 22, 3)."""
        pose = CanonicalPose(rotations.to(self.body.dtype), torch.zeros(len(rotations), 3, dtype=self.body.dtype))
        return self.body(pose=pose).vertices

    def render(
        self,
        vertices: torch.Tensor,
        azimuths,
        renderer: MeshRenderer | None = None,
        silhouette: bool = False,
        colors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Renders (B * len(azimuths), 3, H, W) of bodies (B, V, 3), body-major; textureless
        grey unless ``colors``."""
        sc = self.stage_cfg
        renderer = renderer or self.renderer
        cameras = framing_cameras(vertices, azimuths, sc.elevation_deg, sc.fov_deg, sc.fit_margin)
        per_view = vertices.repeat_interleave(len(azimuths), dim=0)
        out = renderer.render(per_view, self.body.faces, cameras, colors=colors)
        rgb = out.rgb.clamp(0.0, 1.0)
        return with_silhouette_gradient(rgb, out.alpha, per_view, cameras) if silhouette else rgb

    @torch.no_grad()
    def embed_poses(self, guidance, rotations: torch.Tensor) -> torch.Tensor:
        """Normalised image embeddings (N, E) of poses: the mean over ``stage.azimuths``."""
        azimuths = list(self.stage_cfg.azimuths)
        out = []
        chunk = int(self.stage_cfg.codebook_chunk)
        for start in range(0, len(rotations), chunk):
            part = rotations[start : start + chunk]
            images = self.render(self.posed_vertices(part), azimuths)
            emb = guidance.encode_image(images).float().cpu().view(len(part), len(azimuths), -1)
            out.append(F.normalize(emb.mean(1), dim=-1))
            self.codebook_renders += len(part)
            if (start // chunk) % 16 == 0:
                log.info("Pose codebook: embedded %d / %d poses", start + len(part), len(rotations))
        return torch.cat(out)

    # ---- the codebook search (the codebook generator's), for the evaluations and tests ----------
    def codebook_search(self) -> CodebookGenerator:
        """The stage's generator if it is the codebook search, else one made for the call."""
        return self.generator if isinstance(self.generator, CodebookGenerator) else CodebookGenerator(self)

    def search(self, guidance) -> tuple[CandidatePoses, dict]:
        """The codebook search's candidates and report (:meth:`CodebookGenerator.candidates`)."""
        return self.codebook_search().candidates(self, guidance)

    def codebook(self, guidance) -> EmbeddedCodebook:
        return self.codebook_search().embedded_codebook(self, guidance)

    def scores(self, guidance, codebook: EmbeddedCodebook) -> torch.Tensor:
        return self.codebook_search().scores(self, guidance, codebook)

    def cache_key(self) -> dict:
        return self.codebook_search().cache_key(self)

    # ---- direct / latent optimisation (the generator's parameters) ------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        from avatar.guidance import build_guidance

        self.guidance = build_guidance(self.cfg.guidance).to(self.device)
        self.freeze_component("guidance")  # rebuilt from the config: keep it out of checkpoints (resume)
        self.text_emb = F.normalize(self.guidance.encode_text([self.prompt_text])[0].float(), dim=0)

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        sc = self.stage_cfg
        losses = {}
        if self.active("guidance"):
            g = self.step_generator()
            lo, hi = min(sc.azimuths), max(sc.azimuths)
            azimuths = (lo + (hi - lo) * torch.rand(int(sc.views_per_step), generator=g)).tolist()
            rotations = self.generator.rotations(self)
            images = self.render(self.posed_vertices(rotations), azimuths, silhouette=sc.silhouette)
            emb = self.guidance.encode_image(images).float()
            losses["guidance"] = (1.0 - emb @ self.text_emb).mean()
        losses.update(self.generator.losses(self))  # its own regularisers (lambda_rotation_l2, lambda_latent)
        return losses

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the generators were components hold ``body_rotations`` /
        ``latent`` at the top level: renamed to ``generator.*`` so those runs still resume."""
        super().on_load_checkpoint(checkpoint)
        state, ours = checkpoint.get("state_dict", {}), set(self.state_dict())
        for name in [k for k in state if k not in ours and f"generator.{k}" in ours]:
            state[f"generator.{name}"] = state.pop(name)

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return list(self.generator.parameters_to_optimise())

    def validate(self) -> None:
        with torch.no_grad():
            rotations = self.generator.rotations(self).detach()
        grid = self.preview(rotations, None)
        save_image(self.run_dir() / "images" / f"poses_step{self.global_step:06d}.png", grid)
        self.log_image("val/poses", grid)

    @torch.no_grad()
    def score(self, guidance, rotations: torch.Tensor) -> torch.Tensor:
        """Cosine of each pose's mean view embedding (the codebook's views) with the prompt."""
        text = F.normalize(guidance.encode_text([self.prompt_text])[0].float().cpu(), dim=0)
        return self.embed_poses(guidance, rotations) @ text

    # ---- outputs -------------------------------------------------------------------------------
    @torch.no_grad()
    def preview(self, rotations: torch.Tensor, scores: torch.Tensor | None) -> np.ndarray:
        """Candidates (columns) from the front, a side and a back three-quarter view (rows)."""
        verts = self.posed_vertices(rotations)
        colors = region_colors(self.body.skinning_weights)
        rows = []
        for azimuth in (0.0, 60.0, 150.0):
            images = self.render(verts, [azimuth], self.preview_renderer, colors=colors)
            rows.append([to_uint8(img) for img in images])
        tiles = [tile for row in rows for tile in row]
        if scores is not None:
            tiles = [
                caption_tile(t, f"#{i % len(rotations) + 1} {float(scores[i % len(rotations)]):+.3f}")
                for i, t in enumerate(tiles)
            ]
        return image_grid(tiles, ncols=len(rotations))

    def write_outputs(self, candidates: CandidatePoses, info: dict) -> dict:
        run_dir = self.run_dir()
        candidates.save(run_dir / POSES_FILE)
        grid = self.preview(candidates.rotations, candidates.scores)
        save_image(run_dir / "poses.png", grid)
        log_image(
            self.loggers,
            "pose/candidates",
            grid,
            step=int(self.global_step),
            wandb_images=self.cfg.logger.wandb.log_images,
        )
        with torch.no_grad():
            joints = self.body(pose=candidates.poses().to(self.body.dtype)).joints
        words = pose_words(joints)
        log.info("Pose prompt %r -> %r (%s):", self.prompt, self.prompt_text, self.stage_cfg.generator)
        for i in range(len(candidates)):
            log.info(
                "  #%d score %.4f %s reads as %s", i + 1, float(candidates.scores[i]), candidates.source[i], words[i]
            )
        result = {
            "prompt": self.prompt,
            "prompt_text": self.prompt_text,
            "generator": self.stage_cfg.generator,
            "candidates": [
                {"score": float(s), "source": src, "pose_words": w}
                for s, src, w in zip(candidates.scores.tolist(), candidates.source, words)
            ],
            "best_score": float(candidates.scores.max()),
            **info,
            # What a sweep minimises: the best candidate's guidance loss.
            "objective": 1.0 - float(candidates.scores.max()),
        }
        for logger in self.loggers:
            logger.log_metrics({"pose/best_score": result["best_score"]}, step=int(self.global_step))
        return result

    def export(self) -> dict:
        """poses.npz and poses.png: the codebook search's candidates, or the optimised poses
        (after a direct / latent fit) scored on the codebook's views, best first."""
        if not self.trainable:
            from avatar.guidance import build_guidance

            return self.write_outputs(*self.generator.candidates(self, build_guidance(self.cfg.guidance)))
        with torch.no_grad():
            rotations = self.generator.rotations(self).detach().float().cpu()
        scores = self.score(self.guidance, rotations)
        order = scores.argsort(descending=True)
        gen = self.stage_cfg.generator
        candidates = CandidatePoses(
            rotations[order],
            scores[order],
            [f"{gen} (seed {self.cfg.seed}, start {int(i)})" for i in order],
            self.prompt,
            self.prompt_text,
        )
        return self.write_outputs(candidates, {})
