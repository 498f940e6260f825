"""The motion corpus and the prior-training stages (on a small synthetic mocap folder), and the
shipped prior weights (loaded as the default configs load them)."""

import numpy as np
import pytest
import roma
import torch

from avatar.body.skeleton import CanonicalPose, mirror
from avatar.engine.runner import run
from avatar.evaluation.priors import apd_mm, median_jerk
from avatar.mocap.bvh import read_bvh
from avatar.mocap.contact import contact_travel_distance
from avatar.mocap.retarget import retarget
from avatar.priors.codebook import WEIGHTS_DIR
from avatar.priors.data import (
    MotionCorpus,
    MotionWindows,
    PoseFrames,
    body_joints,
    load_corpus,
    sequence_joints,
    subject_of,
)
from avatar.priors.loading import PriorConfig, load_codebook, load_motion_codebook, load_motion_prior, load_pose_prior
from avatar.priors.motion_vae import features_to_canonical
from avatar.priors.training import (
    MotionVAEStage,
    feature_statistics_weights,
    feature_statistics_windows,
    normalise_heading,
)

from helpers import compose_cfg
from synthetic_mocap import oscillating_motion, write_bvh, write_corpus

FAST = ["trainer.enable_progress_bar=false", "logger=csv", "render.height=32", "render.width=32"]


@pytest.fixture(scope="module")
def mocap_folder(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("mocap"), subjects=5, clips_per_subject=2, seconds=3.0)


def test_bvh_to_canonical_round_trip(tmp_path):
    motion = oscillating_motion("kick", 90, 60.0, seed=3)
    clip = read_bvh(write_bvh(tmp_path / "07_01.bvh", motion, 60.0))
    canonical = retarget(clip, fps=None)
    assert torch.allclose(roma.rotvec_to_rotmat(canonical.rotations), motion.rotmats().float(), atol=1e-5)
    assert torch.allclose(canonical.transl, motion.transl.float(), atol=1e-5)


def test_corpus_resamples_splits_by_subject_and_caches(mocap_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    corpus = load_corpus(mocap_folder, fps=30.0)
    assert len(corpus.clip_names) == 10 and corpus.problems == []
    assert corpus.num_frames == 10 * 90  # 3 s at 60 fps -> 90 frames at 30 fps
    train, test = corpus.split(0.2)
    assert set(train.subjects).isdisjoint(test.subjects) and test.num_frames >= 0.2 * corpus.num_frames
    assert list((tmp_path / "cache" / "datasets").glob("*.npz"))
    again = load_corpus(mocap_folder, fps=30.0)
    assert torch.equal(again.rotations, corpus.rotations) and again.subjects == corpus.subjects
    assert subject_of("x/acrnn_salsa_01__60_01.bvh") == "60" and subject_of("x/foo__S94.bvh") == "94"


def test_datasets_serve_frames_and_windows(mocap_folder):
    corpus = load_corpus(mocap_folder, fps=30.0)
    frames = PoseFrames(corpus, mirror_prob=0.0)
    assert len(frames) == corpus.num_frames and frames[0].shape == (63,)
    windows = MotionWindows(corpus, length=60, stride=10, mirror_prob=0.0)
    assert len(windows) == 10 * 4  # windows start at 0, 10, 20, 30 in each 90-frame clip
    rot, transl = windows[3]
    assert rot.shape == (60, 22, 3) and torch.allclose(transl[0, :2], torch.zeros(2))
    turned, _ = normalise_heading(rot, transl)
    forward = roma.rotvec_to_rotmat(turned[0, 0]) @ torch.tensor([0.0, 0.0, 1.0])
    assert forward[1] < -0.99  # the first frame now faces -Y


def test_tempo_augmentation_plays_the_clip_faster_or_slower(mocap_folder):
    corpus = load_corpus(mocap_folder, fps=30.0)
    plain = MotionWindows(corpus, length=30, stride=30, mirror_prob=0.0)
    tempo = MotionWindows(corpus, length=30, stride=30, mirror_prob=0.0, speed_range=(0.5, 2.0))
    rot, transl = plain[1]
    same_rot, same_transl = tempo._resampled(1, 1.0)
    same_transl[:, :2] -= same_transl[0, :2].clone()  # what __getitem__ does
    assert torch.allclose(same_rot, rot, atol=1e-5) and torch.allclose(same_transl, transl, atol=1e-5)
    # at speed 2 frame k is source frame 2k (these fall on frames: no interpolation)
    start = tempo.starts[1]
    fast, _ = tempo._resampled(1, 2.0)
    assert torch.allclose(fast[:, 1:], corpus.rotations[start : start + 60 : 2, 1:], atol=1e-5)
    # at speed 0.5 the odd frames are halfway rotations between two source frames
    slow, _ = tempo._resampled(1, 0.5)
    a, b = roma.rotvec_to_rotmat(corpus.rotations[start + 3]), roma.rotvec_to_rotmat(corpus.rotations[start + 4])
    halfway = roma.rotvec_to_rotmat(slow[7])
    assert torch.allclose(
        roma.rotmat_geodesic_distance(a, halfway), roma.rotmat_geodesic_distance(halfway, b), atol=1e-4
    )
    # the last window of a clip is shifted back to stay inside it when played fast
    last = len(tempo.starts) // 10 - 1  # 3 windows per 90-frame clip: index 2 starts at frame 60
    first_frame, last_frame = tempo.clips[last]
    fast_end, _ = tempo._resampled(last, 2.0)
    assert torch.allclose(fast_end[-1], corpus.rotations[last_frame], atol=1e-5)
    assert fast_end.shape == (30, 22, 3) and torch.isfinite(fast_end).all()
    with pytest.raises(ValueError, match="speed_range"):
        MotionWindows(corpus, length=30, speed_range=(1.2, 0.8))


def test_sampler_weights_balance_recordings_and_subjects():
    """feature_statistics_weights: one weight per window of feature_statistics_windows (same
    order, mirror images included), all equal, equal per recording or equal per subject."""
    lengths, subjects = [300, 60, 120], ["a", "a", "b"]  # 5, 1 and 2 windows of 60 frames
    n = sum(lengths)
    corpus = MotionCorpus(
        rotations=0.1 * torch.randn(n, 22, 3, generator=torch.Generator().manual_seed(0)), transl=torch.zeros(n, 3),
        clip_starts=np.array([0, 300, 360]), clip_lengths=np.array(lengths), clip_names=["x", "y", "z"],
        subjects=subjects, fps=30.0, problems=[],
    )  # fmt: skip
    assert len(feature_statistics_windows(corpus, 60)) == 16
    per_window = feature_statistics_weights(corpus, 60, "window")
    per_clip = feature_statistics_weights(corpus, 60, "clip")
    per_subject = feature_statistics_weights(corpus, 60, "subject")
    assert torch.allclose(per_window, torch.full((16,), 1 / 16, dtype=torch.float64))
    clip_of = torch.tensor([0] * 10 + [1] * 2 + [2] * 4)
    assert torch.allclose(torch.stack([per_clip[clip_of == c].sum() for c in range(3)]), torch.tensor(1 / 3).double())
    assert torch.allclose(per_subject[:12].sum(), per_subject[12:].sum()) and per_subject[0] == per_subject[11]
    with pytest.raises(ValueError, match=r"stage.code_prior_balance='frame': choose one of \['window', 'clip'"):
        feature_statistics_weights(corpus, 60, "frame")


@pytest.mark.slow
def test_training_stages_run_and_their_weights_load(mocap_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    common = [*FAST, f"stage.mocap_root={mocap_folder}", "stage.holdout_fraction=0.2", "trainer.val_every_n_steps=10"]
    pose = run(
        compose_cfg(
            tmp_path / "pose",
            "stage=train_pose_prior",
            *common,
            "trainer.max_steps=30",
            "stage.batch_size=64",
            "stage.eval_frames=128",
            "trainer.log_every_n_steps=1",
        )
    )
    assert pose["steps"] == 30 and pose["heldout_mpjpe_mm"] > 0
    import pandas as pd

    losses = pd.read_csv(tmp_path / "pose" / "csv" / "metrics.csv")["train/loss_rotation"].dropna()
    assert losses.iloc[-5:].mean() < losses.iloc[:5].mean()
    prior = load_pose_prior(PriorConfig(pose_prior=str(tmp_path / "pose" / "pose_prior.pt")))
    decoded = prior.decode(torch.zeros(2, 32))["pose_body_matrot"]
    assert torch.allclose(decoded @ decoded.transpose(-1, -2), torch.eye(3).expand(2, 21, 3, 3), atol=1e-5)

    motion = run(
        compose_cfg(
            tmp_path / "motion",
            "stage=train_motion_vae",
            *common,
            "trainer.max_steps=4",
            "stage.batch_size=4",
            "stage.backbone=transformer",  # AvatarCLIP's architecture still trains
            "stage.latent_dim=32",
            "stage.num_layers=1",
            "stage.num_heads=2",
            "stage.eval_windows=8",
            "stage.window_stride=30",
        )
    )
    assert motion["steps"] == 4
    vae = load_motion_prior(PriorConfig(motion_prior=str(tmp_path / "motion" / "motion_vae.pt")))
    assert vae.config.num_joints == 22 and vae.decode(torch.zeros(1, 32)).shape == (1, 60, 22 * 6)
    # The free model's convolutional backbone (the default) trains and loads through the same format.
    conv_overrides = ["stage=train_motion_vae", *common, "trainer.max_steps=4", "stage.batch_size=4",
                      "stage.latent_dim=30", "stage.conv_channels=16", "stage.num_layers=1", "stage.eval_windows=8",
                      "stage.window_stride=30"]  # fmt: skip
    conv = run(compose_cfg(tmp_path / "conv", *conv_overrides))
    assert conv["steps"] == 4
    vae = load_motion_prior(PriorConfig(motion_prior=str(tmp_path / "conv" / "motion_vae.pt")))
    # The stage's time grid (conv_levels) and width travel with the weights.
    assert (vae.config.backbone, vae.config.conv_levels, vae.config.conv_channels) == ("conv", 2, 16)
    # The export fitted the code prior to the training clips (training itself ran under N(0, I)).
    assert vae.config.code_prior and not torch.allclose(vae.code_scale_tril.float(), torch.eye(30), atol=1e-3)
    # ... and kept every training clip's posterior, the mixture its samples are drawn from.
    assert vae.config.code_prior_components == vae.code_components_mean.shape[0] > 1
    assert vae.code_components_mean.float().std(0).min() > 0 and (vae.code_components_std != 1).all()
    assert vae.sample_codes(3).shape == (3, 30)
    # ... weighted so that each recording gets an equal share (stage.code_prior_balance=clip).
    train = load_corpus(mocap_folder, fps=30.0).split(0.2)[0]
    weights = feature_statistics_weights(train, 60, "clip")
    assert torch.allclose(vae.code_components_weight.float(), (weights / weights.max()).float(), atol=1e-3)
    # Training checkpoints leave out those placeholders (filled by the export only); a stage
    # restored from one (as avatar-export restores it) fits the same posteriors again.
    checkpoint = torch.load(max((tmp_path / "conv").rglob("*.ckpt")), weights_only=False)
    assert "model.code_scale_tril" in checkpoint["state_dict"]
    assert not any("code_components" in k for k in checkpoint["state_dict"])
    stage = MotionVAEStage(compose_cfg(tmp_path / "restored", *conv_overrides))
    stage.on_load_checkpoint(checkpoint)
    stage.load_state_dict(checkpoint["state_dict"])
    stage.model.fit_code_prior(stage.statistics_features)
    assert torch.equal(stage.model.code_components_mean.half().float(), vae.code_components_mean)
    with pytest.raises(ValueError, match="stage.code_prior_balance='recording': choose one of"):
        MotionVAEStage(compose_cfg(tmp_path / "bad", *conv_overrides, "stage.code_prior_balance=recording"))
    # With recordings of unequal length the stage's sampler weights are per recording, not per window.
    uneven = write_corpus(tmp_path / "uneven", subjects=5, clips_per_subject=1, seconds=3.0)
    write_bvh(uneven / "01_02.bvh", oscillating_motion("walk_stride", 360, 60.0, seed=5), 60.0)  # 6 s: 3 windows
    stage = MotionVAEStage(compose_cfg(tmp_path / "uneven_run", *conv_overrides, f"stage.mocap_root={uneven}"))
    assert torch.equal(stage.sampler_weights, feature_statistics_weights(stage.train_corpus, 60, "clip"))
    assert stage.sampler_weights.max() > 2 * stage.sampler_weights.min()
    assert vae.decode(torch.zeros(1, 30)).shape == (1, 60, 22 * 6)

    book = run(compose_cfg(tmp_path / "book", "stage=build_pose_codebook", *common, "stage.size=16"))
    assert book["size"] == 16 and book["heldout_quantisation_mm"] > 0
    codebook = load_codebook(PriorConfig(codebook=str(tmp_path / "book" / "pose_codebook.npz")))
    # Every entry is a real corpus pose (upright), and its joints are its own FK.
    assert torch.allclose(codebook.joints, body_joints(codebook.rotations), atol=1e-5)
    assert len(set(codebook.sources)) == 16

    clips = run(
        compose_cfg(tmp_path / "clips", "stage=build_motion_codebook", *common, "stage.size=6", "stage.num_frames=30")
    )
    assert clips["size"] == 6 and 0.0 <= clips["locomotion_share"] <= 1.0
    motion_book = load_motion_codebook(PriorConfig(motion_codebook=str(tmp_path / "clips" / "motion_codebook.npz")))
    assert motion_book.rotations.shape == (6, 30, 22, 3) and motion_book.fps == 30.0
    # Every entry is a real window of a training clip (or its mirror image), heading-normalised.
    train, _ = load_corpus(mocap_folder).split(0.2)
    for rotations, source in zip(motion_book.rotations, motion_book.sources):
        label, offset = source.removesuffix(" (mirrored)").rsplit(" @ ", 1)
        clip = next(i for i, name in enumerate(train.clip_names) if name.split(" (")[0].endswith(label))
        start = int(train.clip_starts[clip]) + int(offset)
        real, _ = normalise_heading(train.rotations[start : start + 30], train.transl[start : start + 30])
        if source.endswith("(mirrored)"):
            real = mirror(CanonicalPose(real, torch.zeros(30, 3))).rotations
        assert torch.allclose(rotations, real, atol=2e-3), source  # float16 storage


# ---- the shipped weights (what the default configs load) ---------------------------------------
def shipped(name: str):
    return pytest.mark.skipif(not (WEIGHTS_DIR / name).is_file(), reason=f"{name} not trained yet")


@shipped("pose_prior.pt")
def test_shipped_pose_prior_samples_plausible_poses():
    prior = load_pose_prior()
    meta = torch.load(WEIGHTS_DIR / "pose_prior.pt", weights_only=True)["meta"]
    assert meta["heldout_mpjpe_mm"] < 80
    samples = prior.sample(256, torch.Generator().manual_seed(0))["pose_body"]
    joints = body_joints(torch.cat([torch.zeros(256, 1, 3), samples], 1))
    # Samples differ from each other and keep the skeleton's proportions (rigid bones).
    assert joints.std(0).mean() > 0.03
    rest = body_joints(torch.zeros(1, 22, 3))
    for child, parent in ((4, 1), (18, 16)):  # thigh and upper arm lengths
        lengths = (joints[:, child] - joints[:, parent]).norm(dim=-1)
        assert torch.allclose(lengths, (rest[0, child] - rest[0, parent]).norm().expand(256), atol=1e-4)


@shipped("pose_codebook.npz")
def test_shipped_codebook():
    codebook = load_codebook()
    assert len(codebook) >= 1000 and torch.isfinite(codebook.rotations).all()
    assert codebook.meta["heldout_quantisation_mm"] < 80
    # Entries are diverse: no two of them are (nearly) the same pose.
    flat = codebook.joints.reshape(len(codebook), -1)
    dist = torch.cdist(flat[:500], flat)
    dist[torch.arange(500), torch.arange(500)] = float("inf")
    assert dist.min() > 0.01


@shipped("motion_codebook.npz")
def test_shipped_motion_codebook_holds_walks():
    book = load_motion_codebook()
    assert len(book) >= 256 and book.num_frames == 60 and torch.isfinite(book.rotations).all()
    travel = torch.tensor([contact_travel_distance(c) for c in book.rotations])
    assert (travel >= 0.5).sum() >= 64  # walks and runs (101 of 512 carry the body half a metre or more in 2 s)
    assert not any(s.startswith("/") for s in book.sources)  # paths inside the corpus, not this machine's cache


@shipped("motion_vae.pt")
def test_shipped_motion_prior():
    vae = load_motion_prior()
    clip = features_to_canonical(vae.decode(torch.zeros(1, vae.config.latent_dim)))
    assert clip.shape == (1, 60, 22, 3) and torch.isfinite(clip).all()
    # Gait survives (issue #26): held-out walks keep most of their travel once encoded and decoded
    # (0.76 at publication, MPJPE 38.9 mm; the first conv model 0.69 / 69 mm, the transformer
    # before it 0.01 / 103 mm).
    meta = torch.load(WEIGHTS_DIR / "motion_vae.pt", weights_only=True)["meta"]
    assert meta["heldout_locomotion_travel_ratio"] >= 0.7 and meta["heldout_mpjpe_mm"] <= 60
    # Its fitted code prior: N(0, I) draws decode as diverse and smoother clips than the same
    # draws fed to the decoder unwhitened (APD 204 vs 128 mm, held-out data 206; median jerk 324
    # vs 593 m/s^3), and some of them walk (9 % of these 64; the training windows: 24 %).
    assert vae.config.code_prior
    draws = torch.randn(64, vae.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        samples = features_to_canonical(vae.decode(draws))
        unwhitened = features_to_canonical(vae._decode_raw(draws))
    assert apd_mm(sequence_joints(samples)) > 1.3 * apd_mm(sequence_joints(unwhitened))
    assert median_jerk(sequence_joints(samples)) < 0.7 * median_jerk(sequence_joints(unwhitened))
    travel = torch.tensor([contact_travel_distance(c) for c in samples])
    assert (travel >= 0.5).float().mean() >= 0.05, travel
    # Its sampler draws from the training clips' posteriors (code_prior_components), each
    # recording's clips together weighing as much as any other's: those draws walk (issue #26's
    # target: >= 25 %) about three times as often as the Gaussian's and jerk less (avatar-eval
    # priors, 1,000 draws: 33 vs 10 %, 266 vs 320 m/s^3; the training windows, weighted so, 38 %;
    # every window equal, 26 %, and its draws 22 %; these 400 with equal weights: 18.5 %).
    assert vae.config.code_prior_components == 2704 and vae.code_components_weight.min() < 0.1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mixture = features_to_canonical(vae.decode(vae.sample_codes(400, g)))
        gaussian = features_to_canonical(vae.decode(torch.randn(400, vae.config.latent_dim, generator=g)))
    walks = [float(np.mean([contact_travel_distance(c) >= 0.5 for c in clips])) for clips in (mixture, gaussian)]
    assert walks[0] >= 0.25 and walks[0] > 2 * walks[1], walks
    assert median_jerk(sequence_joints(mixture)) < 0.85 * median_jerk(sequence_joints(gaussian))
