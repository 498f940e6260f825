"""Synthetic image-caption pairs: posed, dressed Anny bodies rendered from random views.

One batch = one Anny forward (random phenotypes, codebook mocap or named poses), per-sample
cameras (full-body views sized to fit the body from AvatarCLIP's view distribution with a wider
polar spread, or face close-ups), one batched render at ``supersample`` x the image size, average
pooled. Captions follow the view: AvatarCLIP's face template for close-ups, its back template for
back views, paraphrases otherwise. ``combinations`` restricts outfits to the training or the
held-out attribute combinations of :mod:`avatar.guidance.synthetic.holdout`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from avatar.body.anny_body import PHENOTYPES, AnnyBody, AnnyBodyConfig
from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, named_pose, pose_names
from avatar.guidance.synthetic.appearance import (
    AppearanceConfig,
    BodyParts,
    vertex_colors,
)
from avatar.guidance.synthetic.captions import caption
from avatar.guidance.synthetic.holdout import COMBINATIONS, sample_outfit
from avatar.guidance.synthetic.poses import pose_words
from avatar.mocap.manifest import read_manifest, source_clip
from avatar.priors.loading import load_codebook
from avatar.render import (
    Cameras,
    MeshRenderConfig,
    MeshRenderer,
    ViewSamplingConfig,
    make_background,
    sample_views,
)

BACKGROUNDS = ("white", "black", "noise", "checkerboard")


@dataclass
class SyntheticConfig:
    topology: str = "anny"
    image_size: int = 64
    supersample: int = 2  # render at image_size * supersample, then average-pool
    named_pose_prob: float = 0.2  # else a pose of the mocap codebook
    # Codebook poses are drawn with weight count(body word)^-b * count(arm word)^-b (words read
    # from the codebook's template-skeleton joints; None counts as a word): b = 0 draws uniformly (two in three codebook
    # poses then have no body word, 1% sit), b = 0.5 gives rare poses several times their share.
    pose_balance: float = 0.0
    # ... times cluster size^f: each codebook entry stands for a cluster of captured poses. f = 0
    # draws entries alike, so rare acrobatic poses are as common as walking strides; f = 1 draws
    # poses as often as the mocap corpus holds them (its own mix of walks, dance, sport, ...).
    pose_frequency: float = 0.0
    pose_mention_prob: float = 0.5  # chance that a caption names each of the pose's words
    # "walking" only where the view shows the stride: from within stride_view_deg of the front
    # or back a stride is depth only, and the pose reads as no body word there. 0 = everywhere.
    stride_view_deg: float = 0.0
    # "walking" from the geometry alone (ankles a stride apart) also names karate stances, lunges
    # and dance steps: of the shipped codebook's stride poses, 26% of the corpus mass comes from
    # walks (experiments/guidance/report_pose_labels.py). walking_clips = the mocap corpus's MANIFEST.tsv: then
    # "walking" is said only for codebook poses from clips it files under "walk" (a stride from
    # any other clip reads as no body word; named poses keep the geometric word). "" = geometry only.
    walking_clips: str = ""
    pose_phrasings: bool = False  # say pose words in varied phrasings (captions.POSE_PHRASES)
    face_prob: float = 0.2  # face close-ups (AvatarCLIP: 1 view in 4)
    # Lower-body views (not in AvatarCLIP): of the other samples, this share is framed on the body
    # below the pelvis, so trousers and shoes fill the image instead of a few pixels at 64 px;
    # their captions name only the bottom and the shoes. 0 (default) draws nothing extra, so
    # the batches are those of a run without the option.
    legs_prob: float = 0.0
    age_range: tuple[float, float] = (0.35, 1.0)  # Anny age: 1/3 child .. 1 old
    # Body views: distance drawn in these multiples of the distance at which the body's bounding
    # sphere fills the field of view; polar spread wider than AvatarCLIP's 60 degrees to get
    # more side and back views (back when |polar| > 90: ~26% at 80 degrees).
    fit_range: tuple[float, float] = (1.0, 1.3)
    views: ViewSamplingConfig = field(
        default_factory=lambda: ViewSamplingConfig(
            polar_std_deg=80.0, target_jitter_std=0.05, target_jitter_clip=0.1, ambient_range=(0.15, 0.45)
        )
    )
    backgrounds: tuple[str, ...] = BACKGROUNDS
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)
    # Outfits: "all" (every combination), "train" (never a held-out combination of
    # avatar/guidance/synthetic/holdout.py) or "held_out" (always one; textureless never).
    combinations: str = "all"


@dataclass
class SyntheticBatch:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    attributes: list[dict]  # per image: phenotype, pose words, outfit, view, background
    captions: list[str]
    plans: list  # the CaptionPlan of each caption (for hard negatives)


def pose_draw_weights(joints: torch.Tensor, cluster_sizes, balance: float, frequency: float) -> torch.Tensor | None:
    """Sampling weights of codebook poses with joints (N, 22, 3) and cluster sizes (N,) (None:
    uniform); see ``SyntheticConfig.pose_balance`` and ``pose_frequency``."""
    for name, exponent in (("pose_balance", balance), ("pose_frequency", frequency)):
        if not exponent >= 0:
            raise ValueError(f"{name}={exponent}; use 0 (uniform) or a positive exponent such as 0.5")
    if balance == 0 and frequency == 0:
        return None
    weights = torch.as_tensor(cluster_sizes, dtype=torch.float64).clamp(min=1) ** frequency
    if balance:
        words = pose_words(joints)
        for group in ("arms", "body"):
            labels = [w[group] for w in words]
            counts = Counter(labels)
            weights *= torch.tensor([counts[label] for label in labels], dtype=torch.float64) ** -balance
    return weights / weights.sum()


def clips_in_category(sources: list[str], manifest: str | Path, category: str) -> torch.Tensor:
    """(N,) bool: is the source clip of each codebook entry filed under ``category`` in the mocap
    corpus's MANIFEST.tsv? Clips the manifest does not list count as not in it."""
    clips = read_manifest(manifest, key="walking_clips")
    return torch.tensor(
        [source_clip(s) in clips and category in clips[source_clip(s)].categories for s in sources], dtype=torch.bool
    )


def stride_hidden(azimuth_deg: float, within_deg: float) -> bool:
    """Is a camera at this azimuth (0 = the front) within ``within_deg`` of the body's front or back?"""
    return abs(math.sin(math.radians(azimuth_deg))) < math.sin(math.radians(min(within_deg, 90.0)))


class SyntheticRenderer:
    """Generates :class:`SyntheticBatch` es for one body (default: Anny of ``cfg.topology``)."""

    def __init__(self, cfg: SyntheticConfig | None = None, body=None, codebook=None) -> None:
        self.cfg = cfg or SyntheticConfig()
        if self.cfg.combinations not in COMBINATIONS:
            raise ValueError(f"combinations={self.cfg.combinations!r}; choose one of {COMBINATIONS}")
        self.body = body or AnnyBody(AnnyBodyConfig(topology=self.cfg.topology))
        self.parts = BodyParts.from_body(self.body)
        codebook = codebook or load_codebook()
        self.codebook_poses = codebook.poses()
        self.codebook_weights = pose_draw_weights(
            codebook.joints, codebook.cluster_sizes, self.cfg.pose_balance, self.cfg.pose_frequency
        )
        self.walk_entries = (
            clips_in_category(codebook.sources, self.cfg.walking_clips, "walk") if self.cfg.walking_clips else None
        )
        self.named = CanonicalPose.cat([named_pose(n) for n in pose_names()])
        size = self.cfg.image_size * self.cfg.supersample
        self.renderer = MeshRenderer(MeshRenderConfig(height=size, width=size))

    def _poses(self, n: int, g: torch.Generator) -> tuple[CanonicalPose, list[str]]:
        named = torch.rand(n, generator=g) < self.cfg.named_pose_prob
        k_named = torch.randint(self.named.batch_size, (n,), generator=g)
        if self.codebook_weights is None:
            k_code = torch.randint(self.codebook_poses.batch_size, (n,), generator=g)
        else:
            k_code = torch.multinomial(self.codebook_weights, n, replacement=True, generator=g)
        rot = torch.where(named[:, None, None], self.named.rotations[k_named], self.codebook_poses.rotations[k_code])
        sources = [f"named:{pose_names()[a]}" if m else f"codebook:{b}" for m, a, b in zip(named, k_named, k_code)]
        return CanonicalPose(rot, torch.zeros(n, 3)), sources

    def _from_walk(self, source: str) -> bool:
        """May a pose drawn from ``source`` ("codebook:<k>" or "named:<name>") be called walking?"""
        if self.walk_entries is None or not source.startswith("codebook:"):
            return True
        return bool(self.walk_entries[int(source.split(":")[1])])

    def _cameras(self, vertices: torch.Tensor, joints: torch.Tensor, g: torch.Generator):
        """Per-sample views (a loop of single-view draws: each body has its own size and aim)."""
        cfg = self.cfg
        face = (torch.rand(len(vertices), generator=g) < cfg.face_prob).tolist()
        legs = [False] * len(vertices)
        if cfg.legs_prob > 0:
            legs = [not f and bool(u < cfg.legs_prob) for f, u in zip(face, torch.rand(len(vertices), generator=g))]
        half_fov = math.radians(cfg.views.fov_deg) / 2
        cams, infos = [], []
        for i, verts in enumerate(vertices):
            if legs[i]:  # up is +Z: the vertices below the pelvis joint
                verts = verts[verts[:, 2] <= joints[i, JOINT_INDEX["pelvis"], 2]]
            lo, hi = verts.min(0).values, verts.max(0).values
            centre = (lo + hi) / 2
            fit = (verts - centre).norm(dim=-1).max().item() / math.sin(half_fov)
            view_cfg = replace(
                cfg.views, distance_range=(fit * cfg.fit_range[0], fit * cfg.fit_range[1]),
                face_every=1 if face[i] else 0,
            )  # fmt: skip
            cam, info = sample_views(1, view_cfg, g, centre, face_target=joints[i, JOINT_INDEX["head"]], step=0)
            cams.append(cam)
            infos.append(info)
        info = {k: torch.cat([d[k] for d in infos]) for k in infos[0]}
        info["is_legs"] = torch.tensor(legs, dtype=torch.bool)
        cameras = Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fov_deg for c in cams]))
        return cameras, info

    @torch.no_grad()
    def generate(self, n: int, generator: torch.Generator | None = None) -> SyntheticBatch:
        cfg = self.cfg
        g = generator or torch.Generator().manual_seed(0)
        rng = random.Random(int(torch.randint(2**62, (1,), generator=g)))
        shape = torch.rand(n, len(PHENOTYPES), generator=g)
        age = PHENOTYPES.index("age")
        shape[:, age] = cfg.age_range[0] + (cfg.age_range[1] - cfg.age_range[0]) * shape[:, age]
        pose, sources = self._poses(n, g)
        out = self.body(shape.to(self.body.skinning_weights.dtype), pose)
        vertices, joints = out.vertices.float(), out.joints.float()
        words = pose_words(joints)
        cameras, info = self._cameras(vertices, joints, g)

        attributes, colors = [], []
        kinds = [rng.choice(cfg.backgrounds) for _ in range(n)]
        for i in range(n):
            phenotype = dict(zip(PHENOTYPES, shape[i].tolist()))
            attrs = sample_outfit(rng, phenotype["gender"], cfg.appearance, cfg.combinations)
            view = (
                "face"
                if info["is_face"][i]
                else "legs"
                if info["is_legs"][i]
                else "back"
                if info["is_back"][i]
                else "body"
            )
            azimuth = float(info["azimuth_deg"][i])  # 0 = the front, 90 = the body's left
            if words[i]["body"] == "walking" and (
                stride_hidden(azimuth, cfg.stride_view_deg) or not self._from_walk(sources[i])
            ):
                words[i] = {**words[i], "body": None}
            attrs.update(
                phenotype=phenotype,
                pose=words[i],
                pose_source=sources[i],
                view=view,
                background=kinds[i],
                azimuth_deg=azimuth,
            )
            attributes.append(attrs)
            colors.append(vertex_colors(attrs, self.parts))
        size = cfg.image_size * cfg.supersample
        background = torch.empty(n, 3, size, size)
        for kind in set(kinds):
            idx = [i for i, k in enumerate(kinds) if k == kind]
            background[idx] = make_background(kind, len(idx), size, size, g)
        rendered = self.renderer.render(
            vertices, self.body.faces, cameras, colors=torch.stack(colors), background=background,
            light_dir=info["light_dir"], ambient=info["ambient"], diffuse=1.0 - info["ambient"],
        )  # fmt: skip
        images = F.avg_pool2d(rendered.rgb, cfg.supersample).clamp(0.0, 1.0)
        texts, plans = zip(
            *(caption(a, rng, pose_prob=cfg.pose_mention_prob, pose_phrasings=cfg.pose_phrasings) for a in attributes)
        )
        return SyntheticBatch(images, attributes, list(texts), list(plans))


_RENDERERS: dict[str, SyntheticRenderer] = {}  # by repr(config)


def generate_batch(
    n: int, generator: torch.Generator | None = None, cfg: SyntheticConfig | None = None
) -> SyntheticBatch:
    """``n`` synthetic samples with a renderer built once per configuration."""
    cfg = cfg or SyntheticConfig()
    key = repr(cfg)
    if key not in _RENDERERS:
        _RENDERERS[key] = SyntheticRenderer(cfg)
    return _RENDERERS[key].generate(n, generator)
