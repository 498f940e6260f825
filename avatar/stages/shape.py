"""Shape: one sentence -> a coarse body shape (AvatarCLIP's shape stage, ``stage=shape``).

Follows AvatarCLIP's ``AvatarGen/ShapeGen/main.py`` (``shape_gen``): render the neutral body
(textureless grey), embed it; embed a codebook of rendered body shapes; pick the entry whose
direction from the neutral *image* embedding best matches (cosine) the direction from the
neutral *text* ("a 3d rendering of a person in unreal engine") to the prompt wrapped in the
paper's template. Differences from the original, all configurable:

* the codebook is drawn from the body model's own shape space (Anny: phenotype vectors in
  [0, 1]^6 from a seeded generator; SMPL: betas ~ N(0, ``beta_std``)) instead of k-means
  centres of a shape VAE trained on SMPL meshes, and the neutral body is entry 0;
* embeddings are the guidance's L2-normalised ones (AvatarCLIP subtracts raw CLIP features);
* the prompt's (and the neutral text's) embedding is read through a map fitted for the guidance
  weights when one is beside them (``text_map=auto``; shipped for ``mini``: the shape words then
  point the way they say, avatar/guidance/text_map.py);
* ``framing=fit`` (default) frames every body to fill the view, as the offline ``mini``
  guidance was trained; ``framing=fixed`` is AvatarCLIP's fixed camera, where size shows;
* an optional gradient refinement (``refine_steps``) moves the chosen parameters to raise the
  guidance similarity of renders from a few views, regularised towards the codebook choice.

The codebook embeddings are cached on disk per (guidance backend and weights, body model and
mesh, codebook and render settings) (``avatar.utils.embedding_cache``), so a second prompt costs
one text encoding.

Outputs in the run directory: ``shape.npz``, ``body_rest.ply`` (rest mesh in ``bind_pose``),
``skeleton.json``, ``shape.png`` (neutral, top-5 entries, final body, with scores) and
``result.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from avatar.body.base import build_body
from avatar.body.skeleton import JOINT_NAMES, PARENTS, named_pose
from avatar.engine.trainer import log_image
from avatar.export.media import caption_tile, image_grid, save_image, save_mesh, to_uint8
from avatar.guidance.text_map import TextDirectionMap, resolve_text_map
from avatar.render import Cameras, MeshRenderer, framing_cameras, sized_renderer
from avatar.render.silhouette import with_silhouette_gradient
from avatar.stages.base import STAGES, StageModule
from avatar.utils.bounds import at_least
from avatar.utils.embedding_cache import EmbeddingCache
from avatar.utils.fingerprint import config_identity, tensor_fingerprint
from avatar.utils.io import atomic_path, atomic_write_text
from avatar.utils.paths import cache_dir

log = logging.getLogger(__name__)

# Bump when the way codebook embeddings are computed changes: old cache files are then ignored.
CACHE_VERSION = 1


class Scoring(StrEnum):
    direction = "direction"  # AvatarCLIP's cos(image - neutral image, text - neutral text)
    similarity = "similarity"  # plain cos(image, text)


class Framing(StrEnum):
    fit = "fit"  # each body fills the view (as the mini guidance was trained)
    fixed = "fixed"  # one camera for all bodies (AvatarCLIP's): size shows


class BindPose(StrEnum):
    t_pose = "t_pose"
    a_pose = "a_pose"


@dataclass
class ShapeStageConfig:
    name: str = "shape"
    # The prompt (``prompt.shape``) is wrapped in this template; "{}" uses it as written.
    template: str = "a 3d rendering of {} in unreal engine"
    # The text whose embedding is the origin of the text direction (AvatarCLIP's neutral_txt).
    neutral_text: str = "a 3d rendering of a person in unreal engine"
    # direction: AvatarCLIP's cos(image - neutral image, text - neutral text);
    # similarity: plain cos(image, text).
    scoring: Scoring = Scoring.direction
    # How the stage reads the prompt's text embedding (and the neutral text's): through a map
    # fitted for the guidance weights that makes the shape words point the way they should
    # (avatar/guidance/text_map.py; docs/models/mini_shape_map.md). auto: the map beside the
    # guidance weights (<weights stem>_shape_map.pt, shipped for mini.pt) when it was fitted
    # for them, else none; none: the embedding as the guidance gives it; or a file.
    text_map: str = "auto"
    top_k: int = at_least(1, 5)  # entries logged and shown in shape.png
    # ---- codebook (entry 0 is always the neutral body) --------------------------------------
    codebook_size: int = 512
    codebook_seed: int = 0
    # Anny: per-phenotype sampling range (others: [0, 1]); Anny's age 1/3 is a child, below
    # that a toddler, so the default keeps age in [0.35, 1] like the guidance's training data.
    phenotype_ranges: dict[str, list[float]] = field(default_factory=lambda: {"age": [0.35, 1.0]})
    beta_std: float = 1.0  # SMPL: betas ~ N(0, beta_std)
    # ---- how bodies are rendered for the guidance ---------------------------------------------
    render_pose: str = "a_pose"  # a named canonical pose (avatar.body.skeleton.pose_names())
    framing: Framing = Framing.fit  # fit: each body fills the view | fixed: one camera for all (size shows)
    azimuths: list[float] = field(default_factory=lambda: [0.0])  # codebook views (0 = front)
    elevation_deg: float = 0.0
    fov_deg: float = 60.0
    fit_margin: float = 1.15  # camera distance / distance at which the bounding sphere fills the view
    fixed_zoom_out: float = 1.3  # framing=fixed: the neutral's fit distance x this, so big bodies fit
    # ---- optional gradient refinement of the chosen parameters -----------------------------------
    # 0 (default): keep the codebook entry. Measured with mini on full Anny (30 steps): the
    # parameters move the way the prompt says, but the guidance's own direction score of the
    # un-jittered renders went down (0.241 -> 0.215, 0.218 -> 0.172), so it is opt-in.
    refine_steps: int = 0
    refine_lr: float = 0.1  # Adam, on logits (Anny) or betas / beta_std (SMPL)
    refine_azimuths: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0])
    refine_jitter_deg: float = 10.0  # per-step random azimuth offset (seed, step)
    # Gradients that move the silhouette (a soft vertex-splat coverage, straight-through); the
    # ray-cast renders alone only pass gradients through shading.
    refine_silhouette: bool = True
    # The refinement's terms. Measured with the mini guidance: the direction term (the codebook
    # query's own criterion) moves the body towards the prompt; the plain similarity term
    # mostly trades one attribute for another ("tall heavy man" -> taller and slimmer).
    lambda_direction: Any = 1.0  # 1 - cos(render - neutral render, prompt - neutral text), mean over views
    lambda_guidance: Any = 0.0  # AvatarCLIP's 1 - cos(render, prompt), mean over views
    lambda_prior: Any = 0.1  # mean squared distance from the codebook choice (phenotype / beta_std units)
    # ---- outputs -----------------------------------------------------------------------------
    bind_pose: BindPose = BindPose.t_pose  # pose of body_rest.ply / skeleton.json: t_pose | a_pose
    preview_size: int = 256  # tile size in shape.png
    cache_dir: str = ""  # codebook embedding cache; empty = <project cache>/shape_codebook


# ---- scoring ---------------------------------------------------------------------------------
def direction_scores(
    codebook_emb: torch.Tensor,
    neutral_image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    neutral_text_emb: torch.Tensor,
) -> torch.Tensor:
    """AvatarCLIP's shape score of every codebook entry, (N,):
    ``cos(codebook_emb - neutral_image_emb, text_emb - neutral_text_emb)``.

    An entry equal to the neutral image (no direction) scores 0. A prompt with no text
    direction (the neutral text itself) ranks entries by closeness to the neutral image.
    """
    offset = codebook_emb - neutral_image_emb.reshape(1, -1)
    text_offset = (text_emb - neutral_text_emb).reshape(-1)
    if float(text_offset.detach().norm()) < 1e-6:
        # The prompt says nothing beyond the neutral text ("a person"): no direction to follow,
        # so the closer to the neutral body the better (the neutral entry itself scores 0).
        return -offset.norm(dim=-1)
    return F.normalize(offset, dim=-1) @ F.normalize(text_offset, dim=0)


def similarity_scores(codebook_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Plain cosine similarity of every (normalised) codebook embedding with the prompt, (N,)."""
    return F.normalize(codebook_emb, dim=-1) @ F.normalize(text_emb.reshape(-1), dim=0)


def read_text(guidance, text: str, text_map: TextDirectionMap | None = None) -> torch.Tensor:
    """The stage's text embedding (E,) of ``text``: the guidance's, through ``text_map`` if any."""
    emb = guidance.encode_text([text])[0].float()
    return emb if text_map is None else text_map(emb)


def score_codebook(
    guidance,
    codebook_emb,
    neutral_image_emb,
    prompt_text: str,
    neutral_text: str,
    scoring: str,
    text_map: TextDirectionMap | None = None,
):
    """Scores (N,) of the codebook for one (templated) prompt; one text encoding per new string."""
    text = read_text(guidance, prompt_text, text_map).cpu()
    if scoring == "similarity":
        return similarity_scores(codebook_emb, text)
    neutral = read_text(guidance, neutral_text, text_map).cpu()
    return direction_scores(codebook_emb, neutral_image_emb, text, neutral)


# ---- the stage -------------------------------------------------------------------------------
@STAGES.register("shape")
class ShapeStage(StageModule):
    """A stage that does not train under Lightning: ``export()`` searches the codebook and runs
    the refinement, a short Adam loop on a handful of shape parameters, inside it."""

    trainable = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)  # the loss weights, validated
        sc = self.stage_cfg
        prompt = cfg.prompt.shape
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"prompt.shape is empty ({prompt!r}): the shape stage needs a body-shape sentence, "
                'e.g. python train.py stage=shape prompt.shape="a tall heavy man"'
            )
        if "{}" not in sc.template:
            raise ValueError(f"stage.template={sc.template!r} needs a '{{}}' where the prompt goes")
        if sc.codebook_size < 1:
            raise ValueError(f"stage.codebook_size must be >= 1, got {sc.codebook_size}")
        if not sc.azimuths or (sc.refine_steps > 0 and not sc.refine_azimuths):
            raise ValueError("stage.azimuths (and stage.refine_azimuths when refining) need at least one view")
        self.prompt = prompt.strip()
        self.prompt_text = sc.template.format(self.prompt)
        self.body = build_body(cfg.body)
        self.body.requires_grad_(False)
        self.renderer = MeshRenderer(cfg.render)
        self.preview_renderer = sized_renderer(sc.preview_size, like=cfg.render)
        self.pose = named_pose(sc.render_pose, dtype=self.body.dtype, device=self.body.device)
        self.codebook_renders = 0  # bodies rendered to build the codebook (0 on a cache hit)
        self._neutral_vertices = self.body(self.body.default_shape(), self.pose).vertices[0].detach()

    # ---- shape space ---------------------------------------------------------------------
    def is_anny(self) -> bool:
        return self.body.name == "anny"

    def shape_ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Anny: the sampling range of each phenotype (validated against the names)."""
        ranges = dict(self.stage_cfg.phenotype_ranges)
        unknown = sorted(set(ranges) - set(self.body.shape_names))
        if unknown:
            raise ValueError(
                f"stage.phenotype_ranges has unknown phenotypes {unknown}; known: {list(self.body.shape_names)}"
            )
        lo, hi = [], []
        for name in self.body.shape_names:
            a, b = (float(x) for x in ranges.get(name, (0.0, 1.0)))
            if not 0.0 <= a <= b <= 1.0:
                raise ValueError(f"stage.phenotype_ranges.{name}={[a, b]} must satisfy 0 <= low <= high <= 1")
            lo.append(a)
            hi.append(b)
        return torch.tensor(lo), torch.tensor(hi)

    def sample_codebook(self) -> torch.Tensor:
        """(N, D) shape parameters: the neutral body first, then seeded random draws."""
        sc = self.stage_cfg
        n = int(sc.codebook_size)
        g = torch.Generator().manual_seed(int(sc.codebook_seed))
        dim = self.body.shape_dim
        if self.is_anny():
            lo, hi = self.shape_ranges()
            draws = lo + (hi - lo) * torch.rand(n - 1, dim, generator=g)
        else:
            draws = float(sc.beta_std) * torch.randn(n - 1, dim, generator=g)
        neutral = self.body.default_shape().detach().cpu().float()
        return torch.cat([neutral, draws.float()])

    def pose_vertices(self, shapes: torch.Tensor, pose) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed vertices (B, V, 3) and joints (B, 22, 3) of shapes (B, D).

        SmplBody's forward fails for batches > 1 (its rest-pose call passes no body_pose, so
        smplx broadcasts its own (1, 69) one), so non-Anny bodies go one shape at a time.
        """
        if self.is_anny() or len(shapes) == 1:
            out = self.body(shapes, pose)
            return out.vertices, out.joints
        outs = [self.body(shapes[i : i + 1], pose) for i in range(len(shapes))]
        return torch.cat([o.vertices for o in outs]), torch.cat([o.joints for o in outs])

    # ---- rendering -------------------------------------------------------------------------
    def cameras(
        self, vertices: torch.Tensor, azimuths: list[float] | torch.Tensor, framing: str | None = None
    ) -> Cameras:
        """Cameras for one body (V, 3) at the given azimuths (degrees, 0 = front)."""
        sc = self.stage_cfg
        framing = framing or sc.framing
        ref = vertices if framing == "fit" else self._neutral_vertices
        margin = sc.fit_margin * (sc.fixed_zoom_out if framing == "fixed" else 1.0)
        return framing_cameras(ref[None], azimuths, sc.elevation_deg, sc.fov_deg, margin)

    def render_bodies(
        self,
        vertices: torch.Tensor,
        azimuths,
        renderer: MeshRenderer | None = None,
        silhouette: bool = False,
        framing: str | None = None,
    ) -> torch.Tensor:
        """Textureless grey renders (B * len(azimuths), 3, H, W) of bodies (B, V, 3), body-major.

        ``silhouette``: add the soft silhouette's gradient straight-through (the image values
        are the ray-cast render's; the gradient also moves the body's outline).
        """
        renderer = renderer or self.renderer
        cams = [self.cameras(v, azimuths, framing) for v in vertices]
        cameras = Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fov_deg for c in cams]))
        per_view = vertices.repeat_interleave(len(azimuths), dim=0)
        out = renderer.render(per_view, self.body.faces, cameras)
        rgb = out.rgb.clamp(0.0, 1.0)
        if silhouette:
            rgb = with_silhouette_gradient(rgb, out.alpha, per_view, cameras)
        return rgb

    @torch.no_grad()
    def embed_shapes(self, guidance, shapes: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """Normalised image embeddings (N, E) of bodies, the mean over ``stage.azimuths``."""
        azimuths = list(self.stage_cfg.azimuths)
        out = []
        for start in range(0, len(shapes), chunk):
            part = shapes[start : start + chunk].to(self.body.device, self.body.dtype)
            verts = self.pose_vertices(part, self.pose)[0]
            images = self.render_bodies(verts, azimuths)
            emb = guidance.encode_image(images).float().cpu().view(len(part), len(azimuths), -1)
            out.append(F.normalize(emb.mean(1), dim=-1))
            self.codebook_renders += len(part)
        return torch.cat(out)

    # ---- the codebook and its cache --------------------------------------------------------
    def cache_key(self) -> dict:
        sc, cfg = self.stage_cfg, self.cfg
        # The mesh and the shape space: rest vertices of the neutral and of a nearby shape.
        rest = torch.cat([self.body(self.body.default_shape() + d).rest_vertices for d in (0.0, 0.1)])
        stage_keys = (
            "codebook_size",
            "codebook_seed",
            "phenotype_ranges",
            "beta_std",
            "render_pose",
            "framing",
            "azimuths",
            "elevation_deg",
            "fov_deg",
            "fit_margin",
            "fixed_zoom_out",
        )
        plain = OmegaConf.to_container(sc, resolve=True) if isinstance(sc, DictConfig) else dict(sc)
        stage_part = {k: plain[k] for k in stage_keys}
        if self.is_anny():
            stage_part.pop("beta_std")
        else:
            stage_part.pop("phenotype_ranges")
        render = config_identity(cfg.render)
        render.pop("bvh_update", None)
        return {
            "version": CACHE_VERSION,
            "guidance": config_identity(cfg.guidance),
            "body": config_identity(cfg.body),
            "mesh": tensor_fingerprint(self.body.faces, rest),
            "codebook": stage_part,
            "render": render,
        }

    def embedding_cache(self) -> EmbeddingCache:
        folder = Path(self.stage_cfg.cache_dir) if self.stage_cfg.cache_dir else cache_dir("shape_codebook")
        return EmbeddingCache(folder, f"{self.body.name}-{self.cfg.guidance.name}", "Shape codebook")

    def codebook(self, guidance) -> tuple[torch.Tensor, torch.Tensor, bool, Path]:
        """(shapes (N, D), embeddings (N, E), cache hit, cache file)."""
        key, cache = self.cache_key(), self.embedding_cache()

        def build() -> dict[str, torch.Tensor]:
            shapes = self.sample_codebook()
            log.info(
                "Shape codebook: cache miss; rendering and embedding %d bodies (%s, %s guidance) into %s",
                len(shapes),
                self.body.name,
                self.cfg.guidance.name,
                cache.path(key),
            )
            return {"shapes": shapes, "embeddings": self.embed_shapes(guidance, shapes)}

        rows = int(self.stage_cfg.codebook_size)
        tensors, hit, path = cache.load_or_build(key, build, expect_rows=rows, names=["shapes", "embeddings"])
        return tensors["shapes"], tensors["embeddings"], hit, path

    def text_map(self, guidance) -> TextDirectionMap | None:
        """The map the stage reads the prompt through (``stage.text_map``) for ``guidance``."""
        return resolve_text_map(self.stage_cfg.text_map, guidance, "shape", "stage.text_map")

    # ---- refinement --------------------------------------------------------------------------
    def _encode(self, z: torch.Tensor) -> torch.Tensor:
        """Optimised variables -> shape parameters (Anny: sigmoid to (0, 1); SMPL: z * beta_std)."""
        return torch.sigmoid(z) if self.is_anny() else z * float(self.stage_cfg.beta_std)

    def _decode(self, shape: torch.Tensor) -> torch.Tensor:
        if self.is_anny():
            return torch.logit(shape.clamp(1e-3, 1 - 1e-3))
        return shape / float(self.stage_cfg.beta_std)

    def refine(self, guidance, start: torch.Tensor, text_emb: torch.Tensor, neutral_text_emb: torch.Tensor):
        """Adam on the shape parameters; returns (shape (1, D), history of per-step dicts)."""
        sc = self.stage_cfg
        dev, dt = self.body.device, self.body.dtype
        start = start.to(dev, dt).reshape(1, -1)
        z0 = self._decode(start).detach()
        z = torch.nn.Parameter(z0.clone())
        optimizer = torch.optim.Adam([z], lr=float(sc.refine_lr))
        text_emb = text_emb.to(guidance.device).reshape(1, -1)
        text_dir = F.normalize((text_emb - neutral_text_emb.to(guidance.device).reshape(1, -1)), dim=-1)
        history = []
        for step in range(int(sc.refine_steps)):
            g = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + step)
            jitter = (torch.rand(len(sc.refine_azimuths), generator=g) * 2 - 1) * float(sc.refine_jitter_deg)
            azimuths = [a + float(j) for a, j in zip(sc.refine_azimuths, jitter)]
            shape = self._encode(z)
            verts = self.body(shape, self.pose).vertices  # (1, V, 3)
            emb = guidance.encode_image(self.render_bodies(verts, azimuths, silhouette=sc.refine_silhouette))
            losses: dict[str, torch.Tensor] = {}
            if self.active("guidance", step):
                losses["guidance"] = (1.0 - emb @ text_emb[0]).mean()
            if self.active("direction", step):
                with torch.no_grad():
                    neutral = guidance.encode_image(self.render_bodies(self._neutral_vertices[None], azimuths))
                losses["direction"] = (1.0 - F.normalize(emb - neutral, dim=-1) @ text_dir[0]).mean()
            if self.active("prior", step):
                losses["prior"] = ((z - z0) ** 2).mean() if not self.is_anny() else ((shape - start) ** 2).mean()
            if not losses:
                log.warning("Shape refinement: every lambda_ is 0, nothing to optimise")
                break
            total, _, logged = self.weigh(losses, step, advice="The refinement (stage.refine_lr) keeps no checkpoints.")
            optimizer.zero_grad()
            total.backward()
            optimizer.step()
            record = {key: float(value) for key, value in logged.items()}
            record["train/similarity"] = float((emb.detach() @ text_emb[0]).mean())
            history.append(record)
            for logger in self.loggers:
                logger.log_metrics(record, step=step)
            if step == 0 or (step + 1) % 10 == 0 or step + 1 == sc.refine_steps:
                log.info(
                    "refine step %d/%d: %s", step + 1, sc.refine_steps, {k: round(v, 4) for k, v in record.items()}
                )
        return self._encode(z).detach(), history

    @torch.no_grad()
    def score_shape(
        self, guidance, shape: torch.Tensor, text_emb: torch.Tensor, neutral_text_emb: torch.Tensor, azimuths
    ) -> dict:
        """Mean over views of the similarity to the prompt and of the direction score."""
        bodies = torch.stack([self.body.default_shape()[0].cpu().float(), shape.reshape(-1).cpu().float()])
        verts = self.pose_vertices(bodies.to(self.body.device, self.body.dtype), self.pose)[0]
        emb = guidance.encode_image(self.render_bodies(verts, list(azimuths))).view(2, len(azimuths), -1)
        text = text_emb.to(emb.device).reshape(-1)
        text_dir = F.normalize(text - neutral_text_emb.to(emb.device).reshape(-1), dim=0)
        return {
            "similarity": float((emb[1] @ text).mean()),
            "direction": float((F.normalize(emb[1] - emb[0], dim=-1) @ text_dir).mean()),
        }

    # ---- the job -------------------------------------------------------------------------------
    def export(self) -> dict:
        """Codebook search -> refinement -> shape.npz, body_rest.ply, skeleton.json, shape.png."""
        from avatar.guidance import build_guidance

        sc, run_dir = self.stage_cfg, Path(self.cfg.run_dir)
        guidance = build_guidance(self.cfg.guidance)
        shapes, embeddings, hit, cache_file = self.codebook(guidance)
        text_map = self.text_map(guidance)
        neutral_emb = embeddings[0]
        scores = score_codebook(
            guidance, embeddings, neutral_emb, self.prompt_text, sc.neutral_text, sc.scoring, text_map
        )
        k = min(int(sc.top_k), len(scores))
        top_scores, top_idx = scores.topk(k)
        names = list(self.body.shape_names)
        log.info(
            "Shape prompt %r -> %r (%s scoring, %d entries)", self.prompt, self.prompt_text, sc.scoring, len(scores)
        )
        for rank, (i, s) in enumerate(zip(top_idx.tolist(), top_scores.tolist())):
            params = ", ".join(f"{n}={v:.2f}" for n, v in zip(names, shapes[i].tolist()))
            log.info("  top-%d: entry %d score %.4f: %s", rank + 1, i, s, params)
        best = int(top_idx[0])
        chosen = shapes[best].clone()

        text_emb = read_text(guidance, self.prompt_text, text_map)
        neutral_text_emb = read_text(guidance, sc.neutral_text, text_map)
        eval_azimuths = list(sc.refine_azimuths) or list(sc.azimuths)
        before = self.score_shape(guidance, chosen, text_emb, neutral_text_emb, eval_azimuths)
        history = []
        if sc.refine_steps > 0:
            with torch.enable_grad():
                final, history = self.refine(guidance, chosen, text_emb, neutral_text_emb)
            final = final.reshape(-1).cpu().float()
        else:
            final = chosen
        after = self.score_shape(guidance, final, text_emb, neutral_text_emb, eval_azimuths)
        log.info(
            "Shape (mean over %d views): direction score %.4f -> %.4f, similarity to the prompt %.4f -> %.4f "
            "(codebook entry -> final); final %s",
            len(eval_azimuths),
            before["direction"],
            after["direction"],
            before["similarity"],
            after["similarity"],
            ", ".join(f"{n}={v:.3f}" for n, v in zip(names, final.tolist())),
        )

        self.write_outputs(run_dir, final, chosen, best, scores, top_idx, top_scores, shapes)
        result = {
            "prompt": self.prompt,
            "prompt_text": self.prompt_text,
            "body": self.body.name,
            "shape_names": names,
            "shape": [round(v, 6) for v in final.tolist()],
            "codebook_shape": [round(v, 6) for v in chosen.tolist()],
            "codebook_index": best,
            "codebook_score": float(top_scores[0]),
            "top_k": [{"index": int(i), "score": float(s)} for i, s in zip(top_idx, top_scores)],
            "codebook_size": len(shapes),
            "codebook_cache_hit": hit,
            "codebook_renders": self.codebook_renders,
            "codebook_cache": str(cache_file),
            "text_map": text_map.record() if text_map is not None else None,
            "refine_steps": len(history),
            "direction_codebook": before["direction"],
            "direction_final": after["direction"],
            "similarity_codebook": before["similarity"],
            "similarity_final": after["similarity"],
            # What a sweep minimises: the final body's loss under the scoring criterion.
            "objective": 1.0 - (after["direction"] if sc.scoring == "direction" else after["similarity"]),
        }
        for logger in self.loggers:
            logger.log_metrics(
                {"shape/codebook_score": result["codebook_score"], **{f"shape/{k}": v for k, v in result.items()
                 if k.startswith(("direction_", "similarity_"))}},
                step=len(history),
            )  # fmt: skip
        return result

    @torch.no_grad()
    def write_outputs(self, run_dir, final, chosen, best, scores, top_idx, top_scores, shapes) -> None:
        sc = self.stage_cfg
        body = self.body
        final_t = final.to(body.device, body.dtype).reshape(1, -1)
        bind = body(final_t, named_pose(sc.bind_pose, dtype=body.dtype, device=body.device))
        verts, joints = bind.vertices[0], bind.joints[0]
        faces = body.faces
        save_mesh(run_dir / "body_rest.ply", verts, faces)
        skeleton = {
            "joint_names": list(JOINT_NAMES),
            "parents": list(PARENTS),
            "joints": [[round(float(x), 6) for x in j] for j in joints],
            "pose": sc.bind_pose,
            "units": "metres",
            "up": "+z",
            "facing": "-y",
            "root": "pelvis at the origin",
        }
        atomic_write_text(run_dir / "skeleton.json", json.dumps(skeleton, indent=2))
        with atomic_path(run_dir / "shape.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    body=np.array(body.name),
                    prompt=np.array(self.prompt),
                    prompt_text=np.array(self.prompt_text),
                    shape_names=np.array(list(body.shape_names)),
                    shape=final.numpy().astype(np.float32),
                    codebook_shape=chosen.numpy().astype(np.float32),
                    codebook_index=np.array(best),
                    codebook_score=np.array(float(scores[best]), dtype=np.float32),
                    top_k_index=top_idx.numpy(),
                    top_k_score=top_scores.numpy().astype(np.float32),
                    bind_pose=np.array(str(sc.bind_pose)),
                    vertices=verts.cpu().numpy().astype(np.float32),
                    faces=faces.cpu().numpy().astype(np.int64),
                    joints=joints.cpu().numpy().astype(np.float32),
                    parents=np.array(PARENTS, dtype=np.int64),
                    joint_names=np.array(list(JOINT_NAMES)),
                    skinning_weights=body.skinning_weights.cpu().numpy().astype(np.float32),
                )
        # shape.png: neutral | top-k entries | final (front, side), with scores.
        bodies = torch.cat([shapes[:1], shapes[top_idx], final.reshape(1, -1)]).to(body.device, body.dtype)
        verts_all = self.pose_vertices(bodies, self.pose)[0]
        # One camera for every tile (framing=fixed), so sizes compare; pelvis at the origin.
        tiles = [to_uint8(t) for t in self.render_bodies(verts_all, [0.0], self.preview_renderer, framing="fixed")]
        tiles.append(to_uint8(self.render_bodies(verts_all[-1:], [90.0], self.preview_renderer, framing="fixed")[0]))
        labels = ["neutral"] + [f"#{int(i)} {float(s):+.3f}" for i, s in zip(top_idx, top_scores)]
        labels += ["final", "final (side)"]
        grid = image_grid([caption_tile(t, text) for t, text in zip(tiles, labels)], ncols=len(tiles))
        save_image(run_dir / "shape.png", grid)
        log_image(self.loggers, "shape/summary", grid, step=0, wandb_images=self.cfg.logger.wandb.log_images)
