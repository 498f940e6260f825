"""``stage.generator=codebook`` (the default): AvatarCLIP's pose search.

Every pose of the codebook is rendered on the canonical body from ``stage.azimuths`` and embedded
by the guidance model (the stage's ``embed_poses``); the prompt, wrapped in the template, is
embedded once; the poses are ranked by cosine, the top ``top_k`` filtered for near-duplicates
(:func:`select_diverse`) and the best ``num_candidates`` kept. The embeddings are cached on disk
per (guidance, body, codebook, render settings) (:class:`avatar.utils.embedding_cache.EmbeddingCache`
in ``stage.cache_dir``, default ``<project cache>/pose_codebook``), so a new prompt costs one text
encoding and a matrix product. AvatarCLIP's own codebook with its own CLIP needs no renders: its
stored embeddings are used.

Three re-rankings, not in the paper and off by default:

* ``prior_weight`` > 0: the top_k are reordered by cosine + weight * log(cluster size);
* ``contrast=pose_words``: poses are ranked by the prompt's log softmax share among prompts for
  the pose words (:meth:`CodebookGenerator.contrast_scores`), the candidates' scores then being
  log shares;
* ``description_weight`` > 0: each pose's score gains weight x how well its mocap clip's
  description names the prompt's action (:meth:`CodebookGenerator.description_scores`; the
  tiny and small presets).
"""

from __future__ import annotations

import logging
import math
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from avatar.generators.pose import POSE_GENERATORS, PoseGenerator
from avatar.utils.embedding_cache import EmbeddingCache
from avatar.utils.fingerprint import config_identity, file_fingerprint, tensor_fingerprint
from avatar.utils.paths import cache_dir

if TYPE_CHECKING:
    from avatar.stages.motion_files import CandidatePoses
    from avatar.stages.pose import PoseStage

log = logging.getLogger(__name__)

# Bump when the way codebook embeddings are computed changes: old cache files are then ignored.
CACHE_VERSION = 1


class Contrast(StrEnum):
    """``stage.contrast``: what the search ranks poses by."""

    cosine = ""  # the paper's cosine of the pose's and the prompt's embeddings
    pose_words = "pose_words"  # the prompt's log softmax share among prompts for the pose words


# OmegaConf reads a config value as a member's *name* (``Contrast[value]``) and writes names to
# YAML; configs and saved runs spell the paper's ranking "", so "" is that member's name too.
Contrast.cosine._name_ = ""
Contrast._member_map_ = {"": Contrast.cosine, "pose_words": Contrast.pose_words}
Contrast._member_names_ = ["", "pose_words"]


class EmbeddedCodebook(NamedTuple):
    rotations: torch.Tensor  # (N, 22, 3)
    sources: list[str]  # "codebook <i>: <clip> @ frame <f>"
    cluster_sizes: torch.Tensor  # (N,) corpus poses each entry stands for
    embeddings: torch.Tensor  # (N, E) normalised, the mean over the views
    cache_hit: bool
    cache_file: Path
    descriptions: list[str]  # (N,) each entry's mocap clip description ("" none), or [] (none stored)


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


# ---- the generator -----------------------------------------------------------------------------
@POSE_GENERATORS.register("codebook")
class CodebookGenerator(PoseGenerator):
    """The search; it reads ``stage.stage_cfg`` at each call (an evaluation may change settings
    between searches) and has no parameters."""

    trainable = False

    def __init__(self, stage: PoseStage) -> None:
        super().__init__(stage)
        sc = stage.stage_cfg
        if not (math.isfinite(float(sc.prior_weight)) and float(sc.prior_weight) >= 0):
            raise ValueError(
                f"stage.prior_weight={sc.prior_weight!r} must be a finite number >= 0 (0 = plain cosine order)"
            )
        if sc.contrast and not (math.isfinite(float(sc.contrast_temperature)) and float(sc.contrast_temperature) > 0):
            raise ValueError(f"stage.contrast_temperature={sc.contrast_temperature!r} must be a finite number > 0")
        if not (math.isfinite(float(sc.description_weight)) and float(sc.description_weight) >= 0):
            raise ValueError(
                f"stage.description_weight={sc.description_weight!r} must be a finite number >= 0 (0 = no description term)"
            )
        if not 0.0 <= float(sc.description_min_share) <= 1.0:
            raise ValueError(f"stage.description_min_share={sc.description_min_share!r} must be within [0, 1]")
        self._warned_undescribed = False

    # ---- the codebook and its cache ------------------------------------------------------------
    def cache_key(self, stage: PoseStage) -> dict:
        """What the embeddings depend on (not the prompt, the search settings or the run)."""
        from avatar.priors.loading import codebook_files

        sc, cfg = stage.stage_cfg, stage.cfg
        files = [file_fingerprint(f) if f.is_file() else str(f) for f in codebook_files(cfg.prior)]
        render = config_identity(cfg.render)
        render.pop("bvh_update", None)
        plain = OmegaConf.to_container(sc, resolve=True) if isinstance(sc, DictConfig) else dict(sc)
        return {
            "version": CACHE_VERSION,
            "guidance": config_identity(cfg.guidance),
            "body": config_identity(cfg.body),
            "mesh": tensor_fingerprint(stage.body.faces, stage.body().vertices),
            "codebook": files[0] if len(files) == 1 else files,
            "views": {k: plain[k] for k in ("azimuths", "elevation_deg", "fov_deg", "fit_margin")},
            "render": render,
        }

    def cache(self, stage: PoseStage) -> EmbeddingCache:
        sc = stage.stage_cfg
        folder = Path(sc.cache_dir).expanduser() if sc.cache_dir else cache_dir("pose_codebook")
        return EmbeddingCache(folder, f"{stage.body.name}-{stage.cfg.guidance.name}", "Pose codebook")

    def embedded_codebook(self, stage: PoseStage, guidance) -> EmbeddedCodebook:
        """The codebook's poses with their cached (or freshly rendered) embeddings."""
        from avatar.priors.codebook import usable_embeddings
        from avatar.priors.loading import codebook_files, load_codebook

        codebook = load_codebook(stage.cfg.prior)
        rotations = codebook.rotations.float()
        sources = [f"codebook {i}: {s}" for i, s in enumerate(codebook.sources)]
        sizes = torch.as_tensor(codebook.cluster_sizes, dtype=torch.float32)
        own = usable_embeddings(codebook, guidance)  # AvatarCLIP's codebook with its own CLIP: no renders
        if own is not None:
            log.info(
                "Pose codebook: using the %s embeddings stored in the codebook (no renders)", codebook.embedding_model
            )
            return EmbeddedCodebook(
                rotations, sources, sizes, own, True, codebook_files(stage.cfg.prior)[0], codebook.descriptions
            )
        key, cache = self.cache_key(stage), self.cache(stage)

        def build() -> dict[str, torch.Tensor]:
            log.info(
                "Pose codebook: cache miss; rendering %d poses x %d views (%s, %s guidance) into %s",
                len(rotations),
                len(stage.stage_cfg.azimuths),
                stage.body.name,
                stage.cfg.guidance.name,
                cache.path(key),
            )
            return {"embeddings": stage.embed_poses(guidance, rotations)}

        tensors, hit, path = cache.load_or_build(key, build, expect_rows=len(rotations), names=["embeddings"])
        return EmbeddedCodebook(rotations, sources, sizes, tensors["embeddings"], hit, path, codebook.descriptions)

    # ---- scoring -------------------------------------------------------------------------------
    def scores(self, stage: PoseStage, guidance, codebook: EmbeddedCodebook) -> torch.Tensor:
        """(N,) the prompt's score for each pose of the codebook: cosine, or with ``contrast`` the
        log share; plus the description term when ``description_weight`` > 0."""
        embeddings = codebook.embeddings
        text = F.normalize(guidance.encode_text([stage.prompt_text])[0].float().cpu(), dim=0)
        scores = embeddings @ text
        if stage.stage_cfg.contrast:
            scores = self.contrast_scores(stage, guidance, embeddings, scores)
        if float(stage.stage_cfg.description_weight) > 0:
            prompt = guidance.read(stage.prompt)
            scores = scores + float(stage.stage_cfg.description_weight) * self.description_scores(
                stage, codebook, prompt
            )
        return scores

    def description_scores(self, stage: PoseStage, codebook: EmbeddedCodebook, prompt: str) -> torch.Tensor:
        """(N,) per pose, the share of ``prompt`` (the prompt as the guidance reads it, see
        ``Guidance.read``) among the pose words' prompts for its clip's description (0 where
        below ``description_min_share`` or undescribed): near 1 for the frames of a "walk" clip
        given "a person walking", 0 for those of a "salsa dance". The contrast leaves out only
        the pose words the prompt names, so a paraphrase ("a man strolling along") competes
        with its own action's prompt ("a person walking") unless read snapped ("a man walking").
        A codebook without descriptions (built from a corpus without a manifest, AvatarCLIP's)
        gives 0 everywhere, with a warning."""
        from avatar.priors.motion_descriptions import description_distances

        sc, prior = stage.stage_cfg, stage.cfg.prior
        if not codebook.descriptions:
            if not self._warned_undescribed:
                log.warning(
                    "stage.description_weight=%s: %s has no clip descriptions, so poses are ranked without them. "
                    "Describe a project codebook with `python -m avatar.priors.motion_descriptions <codebook.npz>` "
                    "(reads ../shared/mocap/MANIFEST.tsv; stage=build_pose_codebook does it when its corpus has one) "
                    "or set stage.description_weight=0 (AvatarCLIP's codebook.pth has no clips to describe)",
                    sc.description_weight,
                    prior.avatarclip_codebook_path or prior.codebook or "the shipped pose codebook",
                )
                self._warned_undescribed = True
            return torch.zeros(len(codebook.rotations))
        return 1.0 - description_distances(prompt, codebook.descriptions, min_share=float(sc.description_min_share))

    def contrast_prompts(self, stage: PoseStage) -> list[str]:
        """One prompt per pose word (its first phrasing), those the prompt names left out."""
        from avatar.guidance.synthetic.captions import contrast_phrases

        return [stage.stage_cfg.template.format(f"a person {phrase}") for phrase in contrast_phrases(stage.prompt)]

    def contrast_scores(
        self, stage: PoseStage, guidance, embeddings: torch.Tensor, scores: torch.Tensor
    ) -> torch.Tensor:
        """log softmax share of the prompt among itself and :meth:`contrast_prompts`, per pose."""
        others = F.normalize(guidance.encode_text(self.contrast_prompts(stage)).float().cpu(), dim=-1)
        logits = torch.cat([scores[:, None], embeddings @ others.T], dim=1) / float(
            stage.stage_cfg.contrast_temperature
        )
        return logits[:, 0] - torch.logsumexp(logits, dim=1)

    # ---- the search ----------------------------------------------------------------------------
    def candidates(self, stage: PoseStage, guidance) -> tuple[CandidatePoses, dict]:
        """Rank, deduplicate, keep ``num_candidates``."""
        from avatar.stages.motion_files import CandidatePoses

        sc = stage.stage_cfg
        codebook = self.embedded_codebook(stage, guidance)
        rotations, sources, sizes = codebook.rotations, codebook.sources, codebook.cluster_sizes
        start = time.perf_counter()
        scores = self.scores(stage, guidance, codebook)
        prior = float(sc.prior_weight) * torch.log(sizes.clamp(min=1.0)) if sc.prior_weight else None
        kept = select_diverse(
            rotations, scores, int(sc.top_k), float(sc.dedupe_threshold), int(sc.num_candidates), prior
        )
        seconds = time.perf_counter() - start
        candidates = CandidatePoses(
            rotations[kept], scores[kept], [sources[i] for i in kept], stage.prompt, stage.prompt_text
        )
        info = {
            "codebook_size": len(rotations), "codebook_cache_hit": codebook.cache_hit,
            "codebook_cache": str(codebook.cache_file),
            "codebook_renders": stage.codebook_renders, "search_seconds": round(seconds, 4),
        }  # fmt: skip
        if codebook.descriptions:  # what the candidates' clips were described as (the description term's reading)
            info["candidate_descriptions"] = [codebook.descriptions[i] for i in kept]
        return candidates, info
