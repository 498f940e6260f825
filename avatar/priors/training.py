"""Training the free priors from mocap, as stages of the same framework:

    python train.py stage=train_pose_prior stage.publish=true      # VPoser-architecture pose VAE
    python train.py stage=train_motion_vae stage.publish=true      # AvatarCLIP-architecture motion VAE
    python train.py stage=build_pose_codebook stage.publish=true   # k-means pose codebook

Data: ``stage.mocap_root`` (default ../shared/mocap: CMU BVH and ASF/AMC; AMASS .npz files work
too), retargeted to the canonical skeleton, split by subject (held-out subjects never train).
``publish=true`` copies the result into ``avatar/priors/weights/``, which the default configs load.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import roma
import torch
from torch.utils.data import DataLoader

from avatar.body.skeleton import CanonicalPose, mirror
from avatar.engine.checkpoints import train_clock
from avatar.engine.run_info import git_revision
from avatar.mocap.contact import contact_travel_distance
from avatar.mocap.manifest import MANIFEST_NAME
from avatar.priors.codebook import WEIGHTS_DIR, build_pose_codebook
from avatar.priors.data import (
    DEFAULT_MOCAP_ROOT,
    MotionCorpus,
    MotionWindows,
    PoseFrames,
    body_joints,
    load_corpus,
    sequence_joints,
)
from avatar.priors.loading import pack_state_dict
from avatar.priors.motion_codebook import build_motion_codebook
from avatar.priors.motion_descriptions import clip_descriptions
from avatar.priors.motion_vae import (
    MotionVAE,
    MotionVAEConfig,
    canonical_to_features,
    features_to_canonical,
    rot6d_to_rotmat,
)
from avatar.priors.vposer import VPoser, VPoserConfig, vposer_to_canonical
from avatar.stages.base import STAGES, StageModule
from avatar.utils.bounds import above
from avatar.utils.io import atomic_path, publish_file

log = logging.getLogger(__name__)


@dataclass
class PriorDataConfig:
    mocap_root: str = ""  # empty: ../shared/mocap
    fps: float = above(0.0, 30.0)
    holdout_fraction: float = 0.1  # whole subjects held out for evaluation, ~this share of frames
    num_workers: int = 0
    publish: bool = False  # copy the trained weights into avatar/priors/weights/


@dataclass
class PosePriorStageConfig(PriorDataConfig):
    name: str = "train_pose_prior"
    latent_dim: int = 32
    num_neurons: int = 512
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 100
    eval_frames: int = 4096  # held-out frames scored at each validation
    lambda_rotation: Any = 1.0  # MSE of the decoded rotation matrices
    lambda_joints: Any = 1.0  # mean joint position error (m) on the template skeleton
    lambda_kl: Any = field(default_factory=lambda: [0, 0.0, 5e-3, 1000])  # KL to N(0, I), annealed in


@dataclass
class MotionVAEStageConfig(PriorDataConfig):
    name: str = "train_motion_vae"
    num_frames: int = 60
    num_joints: int = 22  # 55 reproduces AvatarCLIP's SMPL-X feature layout exactly
    # The free model: temporal convolutions with a code per time step (MotionVAEConfig.backbone).
    # AvatarCLIP's transformer (backbone=transformer latent_dim=256 num_layers=4 dropout=0.1
    # lr=2e-4 warmup_steps=200) learnt only each window's mean pose at corpus scale within a CPU's
    # budget (docs/experiments/motion-priors.md, 2026-12-05).
    backbone: str = "conv"
    # conv: a code of 32 numbers for each of 15 time steps (2 halvings of 60 frames) and 128
    # channels; a finer, wider code than the first conv model's 8 x 16 (held-out MPJPE at 1,000
    # probe steps 61 mm against 82; docs/experiments/motion-priors.md, 2026-12-06).
    latent_dim: int = 480  # code size (conv: a multiple of its bottleneck steps)
    num_layers: int = 2  # conv: residual blocks per time resolution; transformer: layers
    conv_levels: int = 2  # conv: halvings of time before the code (60 frames: 3 -> 8 steps, 2 -> 15)
    conv_channels: int = 128  # conv: channel width (0: latent_dim)
    num_heads: int = 4  # transformer only
    dropout: float = 0.0
    window_stride: int = 5
    # Tempo augmentation: each training window played at a random speed in [low, high]
    # (MotionWindows.speed_range); null: as captured.
    speed_range: Optional[list[float]] = None
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 100
    clip_grad_norm: float = 1.0  # gradient norm clip (trainer.gradient_clip_val, when set, wins); 0: off
    eval_windows: int = 256
    lambda_rotation: Any = 1.0  # MSE of the 6D features
    lambda_joints: Any = 1.0  # mean joint position error (m), template skeleton, root at origin
    lambda_velocity: Any = 1.0  # MSE of joint velocities (m/frame), for smooth motion
    lambda_kl: Any = field(default_factory=lambda: [0, 0.0, 1e-4, 2000])
    # Without these three the VAE cannot even memorise a few walks (issue #26; the overfit check
    # avatar/priors/motion_overfit.py, docs/experiments/motion-priors.md 2026-12-05).
    normalise: bool = True  # features standardised per channel (statistics of the training windows)
    norm_first: bool = True  # pre-LN transformer layers
    logvar_init: float = -6.0  # start with a narrow posterior: the decoder sees the code, not noise
    # After training, fit a Gaussian to the training clips' codes so that N(0, I) draws decode like
    # them (MotionVAEConfig.code_prior; docs/experiments/motion-priors.md, 2026-12-06).
    code_prior: bool = True
    # With code_prior: also keep those clips' posteriors, and draw prior samples from their mixture
    # (MotionVAEConfig.code_prior_components; motion-priors.md 2026-12-06): the Gaussian's draws rarely walk.
    code_prior_posteriors: bool = True
    # How the sampler weighs those clips (feature_statistics_weights): "clip" gives each recording an
    # equal share (a few long recordings hold most training windows: motion-priors.md 2026-12-06
    # (fourth)); "subject", each subject; "window", every window the same (as training sees them).
    code_prior_balance: str = "clip"


@dataclass
class MotionCodebookStageConfig(PriorDataConfig):
    name: str = "build_motion_codebook"
    size: int = 2048  # entries (~6.4 KB each as float16; 512 until 2026-12-05: few steady walks)
    num_frames: int = 60  # the motion stage's clip length at 30 fps
    window_stride: int = 10  # frames between the starts of candidate windows in a clip
    feature_stride: int = 5  # frames between the poses the clustering compares
    add_mirrored: bool = True


@dataclass
class PoseCodebookStageConfig(PriorDataConfig):
    name: str = "build_pose_codebook"
    size: int = 2048
    frame_stride: int = 2  # consecutive frames at 30 fps are near-duplicates
    add_mirrored: bool = True


def _load_split(stage_cfg) -> tuple[MotionCorpus, MotionCorpus]:
    corpus = load_corpus(stage_cfg.mocap_root or None, fps=stage_cfg.fps)
    return corpus.split(stage_cfg.holdout_fraction)


def mpjpe_mm(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-joint position error in millimetres."""
    return float((a - b).norm(dim=-1).mean() * 1000.0)


class _PriorStage(StageModule):
    """Shared by the learned priors: data split, held-out evaluation, saving and publishing."""

    weights_name: str

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.train_corpus, self.test_corpus = _load_split(self.stage_cfg)
        if self.test_corpus.num_frames == 0:
            raise ValueError("The held-out split is empty: raise stage.holdout_fraction or add subjects")
        self._start = time.perf_counter()

    def train_seconds(self) -> float:
        """Optimisation time over every segment of the run (the runner's clock, kept in the
        checkpoints), so a resumed or re-exported run reports the whole training, not its last
        segment; time since this module was built when no trainer drove it."""
        clock = train_clock(self._trainer)
        return clock.seconds() if clock else time.perf_counter() - self._start

    def should_validate(self, step: int) -> bool:  # and always after the last step
        every = self.cfg.trainer.val_every_n_steps
        return every > 0 and (step % every == 0 or step == self.cfg.trainer.max_steps)

    def validate(self) -> None:
        for key, value in self.once_per_step("heldout", self.heldout_metrics).items():
            self.log(f"val/{key}", value, on_step=True, prog_bar=key == "heldout_mpjpe_mm")

    def heldout_metrics(self) -> dict[str, float]:
        """Held-out metrics of this prior (logged and stored with the weights); the first is
        ``heldout_mpjpe_mm``, the objective."""
        raise NotImplementedError

    def model_config(self) -> dict:
        raise NotImplementedError

    def evaluate(self) -> dict:
        metrics = self.once_per_step("heldout", self.heldout_metrics)
        return {**metrics, "objective": metrics["heldout_mpjpe_mm"]}

    def export(self) -> dict:
        """The weights file (``<weights_name>.pt``, its held-out metrics in its meta), published
        to avatar/priors/weights/ with ``stage.publish=true``."""
        metrics = {
            **self.once_per_step("heldout", self.heldout_metrics),
            "train_seconds": round(self.train_seconds(), 1),
            "steps": int(self.global_step),
            "train_frames": self.train_corpus.num_frames,
            "heldout_frames": self.test_corpus.num_frames,
            "heldout_subjects": sorted(set(self.test_corpus.subjects)),
        }
        payload = {
            "config": self.model_config(),
            "state_dict": pack_state_dict(self.model.state_dict()),
            "meta": {
                **metrics,
                "git": git_revision()["commit"],
                "fps": self.stage_cfg.fps,
                "data": str(self.stage_cfg.mocap_root or "../shared/mocap"),
                "stored_as": "float16, constant tables omitted",
            },  # fmt: skip
        }
        out = self.run_dir() / f"{self.weights_name}.pt"
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
        if self.stage_cfg.publish:
            publish_file(out, WEIGHTS_DIR)
        return {
            "weights_file": out.name,
            **{k: v for k, v in metrics.items() if k.endswith("_frames")},
        }

    def parameters_to_optimise(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())


@STAGES.register("train_pose_prior")
class PosePriorStage(_PriorStage):
    weights_name = "pose_prior"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.model = VPoser(VPoserConfig(latent_dim=self.stage_cfg.latent_dim, num_neurons=self.stage_cfg.num_neurons))
        gen = torch.Generator().manual_seed(int(cfg.seed))
        idx = torch.randperm(self.test_corpus.num_frames, generator=gen)[: self.stage_cfg.eval_frames]
        self.register_buffer("eval_rotations", self.test_corpus.rotations[idx], persistent=False)

    def model_config(self) -> dict:
        return asdict(self.model.config)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(PoseFrames(self.train_corpus), batch_size=self.stage_cfg.batch_size, shuffle=True,
                          drop_last=True, num_workers=self.stage_cfg.num_workers)  # fmt: skip

    def compute_losses(self, body_pose: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(body_pose)
        target = roma.rotvec_to_rotmat(body_pose.reshape(-1, 21, 3))
        losses = {}
        if self.active("rotation"):
            losses["rotation"] = ((out["pose_body_matrot"] - target) ** 2).mean()
        if self.active("joints"):
            pred = body_joints(vposer_to_canonical(out["pose_body"]))
            true = body_joints(vposer_to_canonical(body_pose))
            losses["joints"] = (pred - true).norm(dim=-1).mean()
        if self.active("kl"):
            q = out["q_z"]
            losses["kl"] = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
        return losses

    @torch.no_grad()
    def heldout_metrics(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        body = self.eval_rotations[:, 1:].reshape(len(self.eval_rotations), -1)
        decoded = self.model.decode(self.model.encode(body).mean)["pose_body"]
        error = mpjpe_mm(body_joints(vposer_to_canonical(decoded)), body_joints(self.eval_rotations))
        self.model.train(was_training)
        return {"heldout_mpjpe_mm": error}


LOCOMOTION_MIN_TRAVEL = 0.5  # metres in one window: the held-out windows that walk or run


def locomotion_share(windows: torch.Tensor) -> float:
    """Share of windows (N, T, 22, 3) whose feet carry the body >= LOCOMOTION_MIN_TRAVEL."""
    return float(np.mean([contact_travel_distance(w) >= LOCOMOTION_MIN_TRAVEL for w in windows]))


def locomotion_travel_ratio(windows: torch.Tensor, reconstructions: torch.Tensor) -> dict[str, float]:
    """On the windows (N, T, 22, 3) whose feet carry the body >= LOCOMOTION_MIN_TRAVEL (walks,
    runs), the ground their reconstructions cover, driven by their own foot contacts, over the
    ground the windows cover (1 = the gait survives; near 0 = a walk comes back as swaying in
    place). Empty when no window travels that far."""
    data = torch.tensor([contact_travel_distance(w) for w in windows])
    moving = data >= LOCOMOTION_MIN_TRAVEL
    if not moving.any():
        return {}
    recon = torch.tensor([contact_travel_distance(w) for w in reconstructions[moving]])
    return {"heldout_locomotion_travel_ratio": float(recon.sum() / data[moving].sum()),
            "heldout_locomotion_windows": int(moving.sum())}  # fmt: skip


def normalise_heading(rotations: torch.Tensor, transl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a window (T, 22, 3) about the vertical so its first frame faces -Y."""
    root = roma.rotvec_to_rotmat(rotations[:, 0])
    forward = root[0] @ torch.tensor([0.0, 0.0, 1.0], dtype=root.dtype)  # body +Z is its front
    heading = torch.atan2(forward[0], -forward[1])  # 0 when facing -Y
    turn = roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, -1.0], dtype=root.dtype) * heading)
    rotations = rotations.clone()
    rotations[:, 0] = roma.rotmat_to_rotvec(turn @ root)
    return rotations, transl @ turn.T


class HeadingNormalisedWindows(MotionWindows):
    def __getitem__(self, i: int):
        rotations, transl = super().__getitem__(i)
        return normalise_heading(rotations, transl)


def feature_statistics_windows(corpus: MotionCorpus, num_frames: int, stride: int | None = None) -> torch.Tensor:
    """Windows (N, T, 22, 3) as the motion VAE trains on them (heading-normalised), one every
    ``stride`` frames (default ``num_frames``), each with its mirror image (training mirrors half
    of them): the data a normalised VAE's feature statistics are taken from."""
    windows = MotionWindows(corpus, num_frames, stride=stride or num_frames, mirror_prob=0.0)
    clips = []
    for i in range(len(windows)):
        rotations, transl = windows[i]
        mirrored = mirror(CanonicalPose(rotations, transl))
        clips += [normalise_heading(rotations, transl)[0], normalise_heading(mirrored.rotations, mirrored.transl)[0]]
    if not clips:
        raise ValueError(f"No training clip is {num_frames} frames long: lower stage.num_frames or add clips")
    return torch.stack(clips)


SAMPLE_BALANCES = ("window", "clip", "subject")


def feature_statistics_weights(
    corpus: MotionCorpus, num_frames: int, balance: str = "clip", stride: int | None = None
) -> torch.Tensor:
    """A weight per window of :func:`feature_statistics_windows` ``(corpus, num_frames, stride)``
    (same order, (N,), summing to 1): ``window``: all equal; ``clip``: each recording's windows
    share an equal part; ``subject``: each subject's windows share an equal part."""
    _, inverse, counts = np.unique(feature_statistics_groups(corpus, num_frames, balance, stride),
                                   return_inverse=True, return_counts=True)  # fmt: skip
    weights = torch.tensor(1.0 / counts[inverse], dtype=torch.float64)
    return weights / weights.sum()


def feature_statistics_groups(
    corpus: MotionCorpus, num_frames: int, balance: str = "clip", stride: int | None = None
) -> np.ndarray:
    """The group of each window of :func:`feature_statistics_windows` ``(corpus, num_frames,
    stride)`` (a window and its mirror image share one): its index (``window``), its clip's index
    (``clip``) or its subject (``subject``)."""
    if balance not in SAMPLE_BALANCES:
        raise ValueError(f"stage.code_prior_balance={balance!r}: choose one of {list(SAMPLE_BALANCES)}")
    starts = MotionWindows(corpus, num_frames, stride=stride or num_frames, mirror_prob=0.0).starts
    clips = np.searchsorted(np.asarray(corpus.clip_starts), np.asarray(starts), side="right") - 1
    groups = {"window": np.arange(len(clips)), "clip": clips, "subject": np.asarray(corpus.subjects)[clips]}[balance]
    return np.repeat(groups, 2)


def motion_vae_losses(
    model: MotionVAE, rotations: torch.Tensor, terms: set[str] | frozenset[str]
) -> dict[str, torch.Tensor]:
    """The motion VAE's unweighted training losses on windows (B, T, 22, 3), for the names in
    ``terms``: ``rotation`` (MSE of the features, in the model's normalised units when it
    normalises), ``joints`` (mean joint position error, m, template skeleton, root at the
    origin), ``velocity`` (MSE of joint velocities, m/frame) and ``kl`` (to N(0, I))."""
    features = canonical_to_features(rotations, model.config.num_joints)
    out = model(features)
    losses = {}
    if "rotation" in terms:
        losses["rotation"] = ((model.normalise(out["features"]) - model.normalise(features)) ** 2).mean()
    if "joints" in terms or "velocity" in terms:
        d6 = out["features"].reshape(*out["features"].shape[:2], -1, 6)[..., :22, :]
        pred_rot = roma.rotmat_to_rotvec(rot6d_to_rotmat(d6))
        pred, true = sequence_joints(pred_rot), sequence_joints(rotations)
        if "joints" in terms:
            losses["joints"] = (pred - true).norm(dim=-1).mean()
        if "velocity" in terms:
            losses["velocity"] = ((pred.diff(dim=1) - true.diff(dim=1)) ** 2).sum(-1).mean()
    if "kl" in terms and out["logvar"] is not None:
        mu, logvar = out["mu"], out["logvar"]
        losses["kl"] = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(-1)).mean()
    return losses


# The sampler's buffers (MotionVAEConfig.code_prior_components): filled by the export only.
_SAMPLER_BUFFERS = ("code_components_mean", "code_components_std", "code_components_weight")


@STAGES.register("train_motion_vae")
class MotionVAEStage(_PriorStage):
    weights_name = "motion_vae"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        sc = self.stage_cfg
        self.model = MotionVAE(MotionVAEConfig(
            num_frames=sc.num_frames, num_joints=sc.num_joints, latent_dim=sc.latent_dim,
            num_layers=sc.num_layers, num_heads=sc.num_heads, ff_size=4 * sc.latent_dim, variational=True,
            normalise=sc.normalise, norm_first=sc.norm_first, logvar_init=sc.logvar_init,
            backbone=sc.backbone, dropout=sc.dropout, conv_levels=sc.conv_levels, conv_channels=sc.conv_channels,
            code_prior=sc.code_prior,
            code_prior_components=len(self.statistics_features) if sc.code_prior and sc.code_prior_posteriors else 0,
        ))  # fmt: skip
        # The sampler's mixture weights of those windows (checked here, before training, not at export).
        self.sampler_weights = None
        if self.model.config.code_prior_components:
            self.sampler_weights = feature_statistics_weights(self.train_corpus, sc.num_frames, sc.code_prior_balance)
        if sc.normalise:
            self.model.set_feature_statistics(self.statistics_features)
        test = HeadingNormalisedWindows(self.test_corpus, sc.num_frames, stride=sc.num_frames, mirror_prob=0.0)
        gen = torch.Generator().manual_seed(int(cfg.seed))
        idx = torch.randperm(len(test), generator=gen)[: sc.eval_windows].tolist()
        self.register_buffer("eval_rotations", torch.stack([test[i][0] for i in idx]), persistent=False)

    def model_config(self) -> dict:
        return asdict(self.model.config)

    @functools.cached_property
    def statistics_features(self) -> torch.Tensor:
        """Features of the training windows the feature statistics and the code prior are taken
        from (:func:`feature_statistics_windows`; built once, ~12 s on the CPU corpus)."""
        clips = feature_statistics_windows(self.train_corpus, self.stage_cfg.num_frames)
        return canonical_to_features(clips, self.stage_cfg.num_joints)

    def export(self) -> dict:
        if self.model.config.code_prior:
            self.model.fit_code_prior(self.statistics_features, self.sampler_weights)
        return super().export()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The posteriors the sampler draws from are filled by the export only: 10 MB of
        # placeholders per training checkpoint otherwise (on_load_checkpoint puts them back).
        for name in _SAMPLER_BUFFERS:
            checkpoint["state_dict"].pop(f"model.{name}", None)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints written before code_prior existed, or without the sampler's placeholders:
        # the code is N(0, I) while training anyway (the prior is fitted at export), so they
        # restore with the identity.
        state = checkpoint["state_dict"]
        if self.model.config.code_prior:
            names = ["code_mean", "code_scale_tril"]
            names += list(_SAMPLER_BUFFERS) if self.model.config.code_prior_components else []
            for name in names:
                state.setdefault(f"model.{name}", getattr(self.model, name))

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val is None and self.stage_cfg.clip_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=float(self.stage_cfg.clip_grad_norm),
                                gradient_clip_algorithm="norm")  # fmt: skip
        else:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def train_dataloader(self) -> DataLoader:
        sc = self.stage_cfg
        windows = HeadingNormalisedWindows(self.train_corpus, sc.num_frames, stride=sc.window_stride,
                                           speed_range=sc.speed_range)  # fmt: skip
        return DataLoader(windows, batch_size=sc.batch_size, shuffle=True, drop_last=True, num_workers=sc.num_workers)

    def compute_losses(self, batch) -> dict[str, torch.Tensor]:
        rotations, _ = batch
        terms = {n for n in ("rotation", "joints", "velocity", "kl") if self.active(n)}
        return motion_vae_losses(self.model, rotations, terms)

    @torch.no_grad()
    def heldout_reconstructions(self) -> torch.Tensor:
        """The held-out windows (N, T, 22, 3) encoded (mean) and decoded."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for chunk in self.eval_rotations.split(64):
            features = canonical_to_features(chunk, self.stage_cfg.num_joints)
            mu, _ = self.model.encode(features)
            out.append(features_to_canonical(self.model.decode(mu, chunk.shape[1])))
        self.model.train(was_training)
        return torch.cat(out)

    def heldout_metrics(self) -> dict[str, float]:
        """MPJPE of the reconstructions and ``heldout_locomotion_travel_ratio``
        (:func:`locomotion_travel_ratio`), from one pass over the held-out windows."""
        decoded = self.heldout_reconstructions()
        errors = (sequence_joints(decoded) - sequence_joints(self.eval_rotations)).norm(dim=-1).mean(dim=(1, 2))
        return {
            "heldout_mpjpe_mm": float(errors.mean() * 1000.0),
            **locomotion_travel_ratio(self.eval_rotations, decoded),
        }


class _CodebookStage(StageModule):
    """Shared by the codebooks: built in one pass over the training subjects' mocap (nothing
    trains under Lightning; ``export()`` builds and writes the codebook)."""

    trainable = False

    def finish(self, out: Path, result: dict) -> dict:
        if self.stage_cfg.publish:
            publish_file(out, WEIGHTS_DIR)
        return result


def _describe(codebook, sc, kind: str) -> None:
    """Give each codebook entry its clip's description from the corpus's MANIFEST.tsv, if it has one."""
    manifest = Path(sc.mocap_root or DEFAULT_MOCAP_ROOT) / MANIFEST_NAME
    if manifest.is_file():
        codebook.descriptions = clip_descriptions(codebook.sources, manifest)
    else:
        log.info("No %s in the mocap folder: the %s codebook's entries get no descriptions", MANIFEST_NAME, kind)


def _sources(corpus: MotionCorpus, starts: np.ndarray) -> list[str]:
    """ "<clip file inside the corpus> @ <frame>" for corpus frame indices."""
    clip_of = np.searchsorted(corpus.clip_starts, starts, side="right") - 1
    return [f"{_clip_label(corpus.clip_names[c])} @ {int(f - corpus.clip_starts[c])}" for f, c in zip(starts, clip_of)]


@STAGES.register("build_pose_codebook")
class PoseCodebookStage(_CodebookStage):
    def export(self) -> dict:
        sc, run_dir = self.stage_cfg, Path(self.cfg.run_dir)
        train, test = _load_split(sc)
        frames = torch.arange(0, train.num_frames, sc.frame_stride)
        codebook = build_pose_codebook(
            train.rotations[frames], _sources(train, frames.numpy()), sc.size, int(self.cfg.seed), sc.add_mirrored
        )
        _describe(codebook, sc, "pose")  # the pose search's description_weight reads them
        _, errors = codebook.nearest(test.rotations[:: sc.frame_stride])
        heldout = float(errors.mean() * 1000.0)
        codebook.meta.update(heldout_quantisation_mm=round(heldout, 2), git=git_revision()["commit"],
                             heldout_subjects=sorted(set(test.subjects)))  # fmt: skip
        out = codebook.save(run_dir / "pose_codebook.npz")
        return self.finish(out, {"size": len(codebook), "heldout_quantisation_mm": heldout,
                                 "build_seconds": codebook.meta["build_seconds"], "objective": heldout})  # fmt: skip


@STAGES.register("build_motion_codebook")
class MotionCodebookStage(_CodebookStage):
    def export(self) -> dict:
        sc, run_dir = self.stage_cfg, Path(self.cfg.run_dir)
        train, test = _load_split(sc)
        windows = HeadingNormalisedWindows(train, sc.num_frames, stride=sc.window_stride, mirror_prob=0.0)
        if len(windows) == 0:
            raise ValueError(f"No training clip is {sc.num_frames} frames long: lower stage.num_frames or add clips")
        rotations = torch.stack([windows[i][0] for i in range(len(windows))])
        sources = _sources(train, np.array(windows.starts))
        codebook = build_motion_codebook(
            rotations, sources, sc.size, sc.fps, int(self.cfg.seed), sc.add_mirrored, sc.feature_stride
        )
        _describe(codebook, sc, "motion")  # the retrieval generator's lambda_description reads them
        locomotion = locomotion_share(codebook.rotations)
        codebook.meta.update(git=git_revision()["commit"], locomotion_share=round(locomotion, 3),
                             heldout_subjects=sorted(set(test.subjects)),
                             described=sum(bool(d) for d in codebook.descriptions))  # fmt: skip
        out = codebook.save(run_dir / "motion_codebook.npz")
        return self.finish(out, {"size": len(codebook), "corpus_windows": codebook.meta["corpus_windows"],
                                 "locomotion_share": locomotion, "build_seconds": codebook.meta["build_seconds"],
                                 "objective": -locomotion})  # fmt: skip


def _clip_label(name: str) -> str:
    """A clip's file as a path inside the mocap corpus (no machine-specific cache prefix)."""
    name = name.split(" (")[0]
    return name.split("/mocap/", 1)[-1]
