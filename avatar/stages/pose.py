"""Pose: one motion sentence -> candidate poses (AvatarCLIP's pose generation, ``stage=pose``).

Follows AvatarCLIP's ``AvatarAnimate`` pose generator: every pose of a codebook is rendered on
the canonical body (textureless) from the paper's five views and embedded by the guidance model;
the prompt, wrapped in a template, is embedded once; poses are ranked by cosine similarity, the
top ``top_k`` (40) are filtered for near-duplicates (mean absolute axis-angle difference of the
body joints <= ``dedupe_threshold``, 0.07) and the best ``num_candidates`` (5) are kept for the
motion stage. The codebook's embeddings are cached per (guidance, body, codebook, render
settings), so a new prompt costs one text encoding and a matrix product. ``prior_weight`` > 0
(not in the paper, off by default) reorders the top_k by cosine + weight * log(cluster size);
``contrast=pose_words`` (not in the paper, off) ranks by the prompt's softmax share among
prompts for the pose words, the candidates' scores then being log shares.

The paper's two other generators are options (``stage.generator``), each a Lightning
optimisation of ``num_candidates`` poses at once from seeded starts:

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

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from avatar.body.base import build_body
from avatar.body.regions import region_colors
from avatar.body.skeleton import UPRIGHT, CanonicalPose
from avatar.engine.trainer import log_image
from avatar.export.media import caption_tile, image_grid, save_image, to_uint8
from avatar.guidance.synthetic.poses import pose_words
from avatar.render import MeshRenderConfig, MeshRenderer, framing_cameras
from avatar.render.silhouette import with_silhouette_gradient
from avatar.stages.base import STAGES, StageModule, warmup_cosine
from avatar.stages.motion_files import POSES_FILE, CandidatePoses
from avatar.utils.bounds import at_least
from avatar.utils.fingerprint import config_identity, file_fingerprint, tensor_fingerprint
from avatar.utils.io import atomic_path, atomic_write_text
from avatar.utils.paths import cache_dir

log = logging.getLogger(__name__)

GENERATORS = ("codebook", "direct", "latent")
CONTRASTS = ("", "pose_words")
CACHE_VERSION = 1


@dataclass
class PoseStageConfig:
    name: str = "pose"
    generator: str = "codebook"  # codebook | direct | latent
    # The prompt (``prompt.motion``) goes where "{}" is. AvatarCLIP's pose template is
    # "a rendered 3d man is {}" with a verb phrase ("raising both arms"); the default is its
    # body-view template, one of the mini guidance's training templates (scripts/evaluate_pose_search.py:
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
    contrast: str = ""  # "" = the paper's cosine | "pose_words"
    contrast_temperature: float = 0.05
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


class EmbeddedCodebook(NamedTuple):
    rotations: torch.Tensor  # (N, 22, 3)
    sources: list[str]  # "codebook <i>: <clip> @ frame <f>"
    cluster_sizes: torch.Tensor  # (N,) corpus poses each entry stands for
    embeddings: torch.Tensor  # (N, E) normalised, the mean over the views
    cache_hit: bool
    cache_file: Path


# ---- selection -------------------------------------------------------------------------------
def rotation_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute axis-angle difference over the body joints (root excluded): AvatarCLIP's
    duplicate test. a (N, 22, 3), b (M, 22, 3) -> (N, M)."""
    return (a[:, None, 1:] - b[None, :, 1:]).abs().mean(dim=(-1, -2))


def select_diverse(
    rotations: torch.Tensor,
    scores: torch.Tensor,
    top_k: int,
    threshold: float,
    keep: int,
    rerank: torch.Tensor | None = None,
) -> list[int]:
    """Indices of the best ``keep`` poses among the ``top_k`` best scores, skipping any pose
    within ``threshold`` of one already kept (best first). ``rerank`` (N,), if given, is added
    to the scores of those top_k to set the order in which they are kept."""
    top = scores.argsort(descending=True)[: max(1, top_k)]
    order = top if rerank is None else top[(scores[top] + rerank[top]).argsort(descending=True)]
    order = order.tolist()
    kept: list[int] = []
    for i in order:
        if kept and rotation_distance(rotations[i : i + 1], rotations[kept]).min() <= threshold:
            continue
        kept.append(i)
        if len(kept) == keep:
            break
    return kept


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
    """``generator=codebook`` runs once (``run``); ``direct`` and ``latent`` are Lightning fits."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        self.prompt = check_motion_prompt(cfg.prompt.motion)
        if sc.generator not in GENERATORS:
            raise ValueError(f"stage.generator={sc.generator!r} is not one of {list(GENERATORS)}")
        if "{}" not in sc.template:
            raise ValueError(f"stage.template={sc.template!r} needs a '{{}}' where the prompt goes")
        if not sc.azimuths:
            raise ValueError("stage.azimuths needs at least one view (degrees, 0 = the body's front)")
        if sc.num_candidates < 1 or sc.top_k < sc.num_candidates:
            raise ValueError(f"stage.num_candidates ({sc.num_candidates}) must be >= 1 and <= stage.top_k ({sc.top_k})")
        if not (math.isfinite(float(sc.prior_weight)) and float(sc.prior_weight) >= 0):
            raise ValueError(
                f"stage.prior_weight={sc.prior_weight!r} must be a finite number >= 0 (0 = plain cosine order)"
            )
        if sc.contrast not in CONTRASTS:
            raise ValueError(f"stage.contrast={sc.contrast!r} is not one of {list(CONTRASTS)} ('' = plain cosine)")
        if sc.contrast and not (math.isfinite(float(sc.contrast_temperature)) and float(sc.contrast_temperature) > 0):
            raise ValueError(f"stage.contrast_temperature={sc.contrast_temperature!r} must be a finite number > 0")
        self.prompt_text = sc.template.format(self.prompt)
        self.trainable = sc.generator != "codebook"
        self.body = build_body(cfg.body)
        self.freeze_component("body")
        self.renderer = MeshRenderer(cfg.render)
        preview = (
            OmegaConf.to_container(cfg.render, resolve=True) if isinstance(cfg.render, DictConfig) else dict(cfg.render)
        )
        preview.update(height=int(sc.preview_size), width=int(sc.preview_size))
        self.preview_renderer = MeshRenderer(MeshRenderConfig(**preview))
        self.codebook_renders = 0
        self.guidance = None
        if self.trainable:
            k = int(sc.num_candidates)
            g = torch.Generator().manual_seed(int(cfg.seed))
            if sc.generator == "direct":
                init = torch.randn(k, 21, 3, generator=g) * math.radians(float(sc.init_noise_deg))
                self.body_rotations = torch.nn.Parameter(init.to(self.body.dtype))
            else:
                from avatar.priors.loading import load_pose_prior

                self.prior = load_pose_prior(cfg.prior)
                self.freeze_component("prior")
                init = torch.randn(k, self.prior.latent_dim, generator=g) * float(sc.init_latent_std)
                self.latent = torch.nn.Parameter(init)

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

    # ---- the codebook and its cache ----------------------------------------------------------------
    def cache_key(self) -> dict:
        from avatar.priors.loading import codebook_files

        sc, cfg = self.stage_cfg, self.cfg
        files = [file_fingerprint(f) if f.is_file() else str(f) for f in codebook_files(cfg.prior)]
        render = config_identity(cfg.render)
        render.pop("bvh_update", None)
        plain = OmegaConf.to_container(sc, resolve=True) if isinstance(sc, DictConfig) else dict(sc)
        return {
            "version": CACHE_VERSION,
            "guidance": config_identity(cfg.guidance),
            "body": config_identity(cfg.body),
            "mesh": tensor_fingerprint(self.body.faces, self.body().vertices),
            "codebook": files[0] if len(files) == 1 else files,
            "views": {k: plain[k] for k in ("azimuths", "elevation_deg", "fov_deg", "fit_margin")},
            "render": render,
        }

    def cache_path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        folder = Path(self.stage_cfg.cache_dir).expanduser() if self.stage_cfg.cache_dir else cache_dir("pose_codebook")
        return folder / f"{self.body.name}-{self.cfg.guidance.name}-{digest}.pt"

    def codebook(self, guidance) -> EmbeddedCodebook:
        """The codebook's poses with their cached (or freshly rendered) embeddings."""
        from avatar.priors.codebook import usable_embeddings
        from avatar.priors.loading import codebook_files, load_codebook

        codebook = load_codebook(self.cfg.prior)
        rotations = codebook.rotations.float()
        sources = [f"codebook {i}: {s}" for i, s in enumerate(codebook.sources)]
        sizes = torch.as_tensor(codebook.cluster_sizes, dtype=torch.float32)
        own = usable_embeddings(codebook, guidance)  # AvatarCLIP's codebook with its own CLIP: no renders
        if own is not None:
            log.info(
                "Pose codebook: using the %s embeddings stored in the codebook (no renders)", codebook.embedding_model
            )
            return EmbeddedCodebook(rotations, sources, sizes, own, True, codebook_files(self.cfg.prior)[0])
        key = self.cache_key()
        path = self.cache_path(key)
        if path.is_file():
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                if payload["key"] == json.dumps(key, sort_keys=True) and len(payload["embeddings"]) == len(rotations):
                    log.info("Pose codebook: cache hit %s (%d poses, no renders)", path, len(rotations))
                    return EmbeddedCodebook(rotations, sources, sizes, payload["embeddings"], True, path)
                log.warning("Pose codebook cache %s has another key; rebuilding it", path)
            except Exception as err:  # a corrupt or foreign file: rebuild, never crash on a cache
                log.warning("Pose codebook cache %s is unreadable (%s); rebuilding it", path, err)
        log.info(
            "Pose codebook: cache miss; rendering %d poses x %d views (%s, %s guidance) into %s",
            len(rotations),
            len(self.stage_cfg.azimuths),
            self.body.name,
            self.cfg.guidance.name,
            path,
        )
        embeddings = self.embed_poses(guidance, rotations)
        with atomic_path(path) as tmp:
            torch.save({"key": json.dumps(key, sort_keys=True), "embeddings": embeddings}, tmp)
        return EmbeddedCodebook(rotations, sources, sizes, embeddings, False, path)

    def search(self, guidance) -> tuple[CandidatePoses, dict]:
        """The codebook generator: rank, deduplicate, keep ``num_candidates``."""
        sc = self.stage_cfg
        rotations, sources, sizes, embeddings, hit, cache_file = self.codebook(guidance)
        start = time.perf_counter()
        scores = self.scores(guidance, embeddings)
        prior = float(sc.prior_weight) * torch.log(sizes.clamp(min=1.0)) if sc.prior_weight else None
        kept = select_diverse(
            rotations, scores, int(sc.top_k), float(sc.dedupe_threshold), int(sc.num_candidates), prior
        )
        seconds = time.perf_counter() - start
        candidates = CandidatePoses(
            rotations[kept], scores[kept], [sources[i] for i in kept], self.prompt, self.prompt_text
        )
        info = {
            "codebook_size": len(rotations), "codebook_cache_hit": hit, "codebook_cache": str(cache_file),
            "codebook_renders": self.codebook_renders, "search_seconds": round(seconds, 4),
        }  # fmt: skip
        return candidates, info

    def scores(self, guidance, embeddings: torch.Tensor) -> torch.Tensor:
        """(N,) the prompt's score for each embedded pose: cosine, or with ``contrast`` the log share."""
        text = F.normalize(guidance.encode_text([self.prompt_text])[0].float().cpu(), dim=0)
        scores = embeddings @ text
        return self.contrast_scores(guidance, embeddings, scores) if self.stage_cfg.contrast else scores

    def contrast_prompts(self) -> list[str]:
        """One prompt per pose word (its first phrasing), those the prompt names left out."""
        from avatar.guidance.synthetic.captions import contrast_phrases

        return [self.stage_cfg.template.format(f"a person {phrase}") for phrase in contrast_phrases(self.prompt)]

    def contrast_scores(self, guidance, embeddings: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """log softmax share of the prompt among itself and :meth:`contrast_prompts`, per pose."""
        others = F.normalize(guidance.encode_text(self.contrast_prompts()).float().cpu(), dim=-1)
        logits = torch.cat([scores[:, None], embeddings @ others.T], dim=1) / float(self.stage_cfg.contrast_temperature)
        return logits[:, 0] - torch.logsumexp(logits, dim=1)

    # ---- direct / latent optimisation ---------------------------------------------------------------
    def rotations(self) -> torch.Tensor:
        """(K, 22, 3) the optimised poses, root upright."""
        if self.stage_cfg.generator == "direct":
            body = self.body_rotations
        else:
            body = self.prior.decode(self.latent)["pose_body"].to(self.body.dtype)
        root = body.new_tensor(UPRIGHT).expand(len(body), 1, 3)
        return torch.cat([root, body], dim=1)

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
            images = self.render(self.posed_vertices(self.rotations()), azimuths, silhouette=sc.silhouette)
            emb = self.guidance.encode_image(images).float()
            losses["guidance"] = (1.0 - emb @ self.text_emb).mean()
        if sc.generator == "direct" and self.active("rotation_l2"):
            losses["rotation_l2"] = (self.body_rotations**2).sum(-1).mean()
        if sc.generator == "latent" and self.active("latent"):
            losses["latent"] = (self.latent**2).mean()
        return losses

    def configure_optimizers(self):
        params = [self.body_rotations] if self.stage_cfg.generator == "direct" else [self.latent]
        optimizer = torch.optim.Adam(params, lr=float(self.stage_cfg.lr))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(int(self.stage_cfg.warmup_steps), int(self.cfg.trainer.max_steps))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def validate(self) -> None:
        with torch.no_grad():
            rotations = self.rotations().detach()
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

    def write_outputs(self, candidates: CandidatePoses, info: dict, loggers=()) -> dict:
        run_dir = self.run_dir()
        candidates.save(run_dir / POSES_FILE)
        grid = self.preview(candidates.rotations, candidates.scores)
        save_image(run_dir / "poses.png", grid)
        log_image(
            loggers, "pose/candidates", grid, step=int(self.global_step), wandb_images=self.cfg.logger.wandb.log_images
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
        atomic_write_text(run_dir / "result.json", json.dumps(result, indent=2))
        for logger in loggers:
            logger.log_metrics({"pose/best_score": result["best_score"]}, step=int(self.global_step))
        return result

    def run(self, loggers=()) -> dict:
        """The codebook generator (a one-shot job)."""
        from avatar.guidance import build_guidance

        guidance = build_guidance(self.cfg.guidance)
        candidates, info = self.search(guidance)
        return self.write_outputs(candidates, info, loggers)

    def result(self) -> dict:
        """After a direct / latent fit: score the poses on the codebook's views, best first."""
        with torch.no_grad():
            rotations = self.rotations().detach().float().cpu()
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
        return self.write_outputs(candidates, {"steps": int(self.global_step)}, self.loggers)
