"""The motion corpus in canonical form: every clip of a mocap folder (CMU BVH / ASF-AMC, AMASS
npz) retargeted to the canonical skeleton at one frame rate, cached, split by subject, and served
as pose frames (pose prior, codebook) or fixed-length windows (motion VAE)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from avatar.body.skeleton import CanonicalPose, forward_kinematics, mirror
from avatar.mocap.retarget import CanonicalMotion, frames_at, retarget
from avatar.mocap.types import MocapFormatError
from avatar.utils.files import InputFileError, load_npz
from avatar.utils.io import atomic_path
from avatar.utils.paths import PROJECT_ROOT, cache_dir

log = logging.getLogger(__name__)

# Bump when retargeting changes, so cached corpora are rebuilt.
CORPUS_VERSION = 2
DEFAULT_MOCAP_ROOT = PROJECT_ROOT.parent / "shared" / "mocap"


@dataclass
class MotionCorpus:
    rotations: torch.Tensor  # (N, 22, 3) all frames of all clips, concatenated
    transl: torch.Tensor  # (N, 3)
    clip_starts: np.ndarray  # (C,) first frame of each clip
    clip_lengths: np.ndarray  # (C,)
    clip_names: list[str]  # source file of each clip
    subjects: list[str]  # CMU subject id (or source folder) of each clip
    fps: float
    problems: list[tuple[str, str]]  # files that could not be used, and why

    @property
    def num_frames(self) -> int:
        return self.rotations.shape[0]

    def clip(self, i: int) -> CanonicalMotion:
        s, n = int(self.clip_starts[i]), int(self.clip_lengths[i])
        return CanonicalMotion(self.rotations[s : s + n], self.transl[s : s + n], self.fps, self.clip_names[i])

    def split(self, holdout_fraction: float = 0.1) -> tuple["MotionCorpus", "MotionCorpus"]:
        """(train, held-out): whole subjects are held out, in a fixed pseudo-random order (by a
        hash of their id), until they hold ``holdout_fraction`` of the frames; so no held-out
        frame comes from a person seen in training, and the split never depends on the seed."""
        frames: dict[str, int] = {}
        for subject, n in zip(self.subjects, self.clip_lengths):
            frames[subject] = frames.get(subject, 0) + int(n)
        order = sorted(frames, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
        held, count = set(), 0
        for subject in order:
            if count >= holdout_fraction * self.num_frames:
                break
            if count + frames[subject] <= 2 * holdout_fraction * self.num_frames:  # skip giants
                held.add(subject)
                count += frames[subject]
        train = [i for i, s in enumerate(self.subjects) if s not in held]
        test = [i for i, s in enumerate(self.subjects) if s in held]
        return self.subset(train), self.subset(test)

    def subset(self, clip_indices: list[int]) -> "MotionCorpus":
        clips = [self.clip(i) for i in clip_indices]
        starts = np.cumsum([0] + [c.num_frames for c in clips[:-1]]).astype(np.int64)
        empty = torch.zeros(0, 22, 3)
        return MotionCorpus(
            rotations=torch.cat([c.rotations for c in clips]) if clips else empty,
            transl=torch.cat([c.transl for c in clips]) if clips else torch.zeros(0, 3),
            clip_starts=starts,
            clip_lengths=np.array([c.num_frames for c in clips], dtype=np.int64),
            clip_names=[self.clip_names[i] for i in clip_indices],
            subjects=[self.subjects[i] for i in clip_indices],
            fps=self.fps,
            problems=self.problems,
        )


def subject_of(path: str) -> str:
    """CMU subject id from the file name: "SS_TT" ("07_01.bvh", "acrnn_salsa_01__60_01.bvh") or
    "...__S94" (a subject without a trial number); else the parent folder's name."""
    stem = Path(path).stem
    match = re.search(r"(?:^|_)(\d+)_\d+$", stem) or re.search(r"__S(\d+)$", stem)
    return str(int(match.group(1))) if match else Path(path).parent.name


def _fingerprint(root: Path, fps: float) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha1(f"v{CORPUS_VERSION}|{fps}".encode())
    for p in files:
        stat = p.stat()
        h.update(f"{p.relative_to(root)}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_corpus(root: str | Path | None = None, fps: float = 30.0, use_cache: bool = True) -> MotionCorpus:
    """Retarget every clip under ``root`` (default ../shared/mocap) to canonical poses at ``fps``.

    The result is cached in the project cache, keyed by the files and the settings. Files that
    fail to read or retarget are reported in ``problems`` and skipped.
    """
    from avatar.mocap.amass import read_amass_npz
    from avatar.mocap.dataset import iter_folder

    root = Path(root) if root else DEFAULT_MOCAP_ROOT
    if not root.exists():
        raise FileNotFoundError(
            f"Mocap folder {root} does not exist. Point `data.mocap_root` at a folder of CMU "
            "BVH/ASF-AMC files (or the project's ../shared/mocap archives) or AMASS .npz files."
        )
    cache_file = cache_dir("datasets") / f"canonical_{root.name}_{_fingerprint(root, fps)}.npz"
    if use_cache and cache_file.exists():
        try:
            return _read_cache(cache_file)
        except (InputFileError, KeyError, ValueError) as err:  # a damaged cache is rebuilt, never fatal
            log.warning("Mocap corpus cache %s is unreadable (%s); rebuilding it", cache_file, err)

    motions, problems = [], []
    for clip in tqdm(iter_folder(root, problems=problems), desc=f"retargeting {root.name}"):
        try:
            motions.append(retarget(clip, fps))
        except MocapFormatError as err:
            problems.append((clip.path, str(err)))
    for npz in sorted(root.rglob("*.npz")):
        try:
            motions.append(read_amass_npz(npz, fps))
        except MocapFormatError as err:
            problems.append((str(npz), str(err)))
    for path, why in problems:
        log.warning("skipped %s: %s", path, why)
    motions = [m for m in motions if m.num_frames >= 2]
    if not motions:
        raise FileNotFoundError(f"No usable motion clips under {root} ({len(problems)} problems)")
    corpus = MotionCorpus(
        rotations=torch.cat([m.rotations for m in motions]),
        transl=torch.cat([m.transl for m in motions]),
        clip_starts=np.cumsum([0] + [m.num_frames for m in motions[:-1]]).astype(np.int64),
        clip_lengths=np.array([m.num_frames for m in motions], dtype=np.int64),
        clip_names=[m.source for m in motions],
        subjects=[subject_of(m.source.split(" (")[0]) for m in motions],
        fps=fps,
        problems=problems,
    )
    if use_cache:
        _write_cache(cache_file, corpus)
    return corpus


def _write_cache(path: Path, corpus: MotionCorpus) -> None:
    meta = {"clip_names": corpus.clip_names, "subjects": corpus.subjects, "fps": corpus.fps,
            "problems": corpus.problems}  # fmt: skip
    with atomic_path(path) as tmp:
        np.savez(tmp, rotations=corpus.rotations.numpy(), transl=corpus.transl.numpy(),
                 clip_starts=corpus.clip_starts, clip_lengths=corpus.clip_lengths, meta=json.dumps(meta))  # fmt: skip


def _read_cache(path: Path) -> MotionCorpus:
    data = load_npz(path, "cache", "a retargeted mocap corpus cache",
                    keys=("rotations", "transl", "clip_starts", "clip_lengths", "meta"))  # fmt: skip
    meta = json.loads(str(data["meta"]))
    return MotionCorpus(
        rotations=torch.from_numpy(data["rotations"]),
        transl=torch.from_numpy(data["transl"]),
        clip_starts=data["clip_starts"],
        clip_lengths=data["clip_lengths"],
        clip_names=meta["clip_names"],
        subjects=meta["subjects"],
        fps=meta["fps"],
        problems=[tuple(p) for p in meta["problems"]],
    )


def canonical_body_pose(rotations: torch.Tensor) -> CanonicalPose:
    """Poses with the root reset to upright at the origin: what pose priors and codebooks
    model (the body's articulation, not where it is or which way it faces)."""
    pose = CanonicalPose.rest(rotations.shape[0], rotations.dtype, rotations.device)
    pose.rotations[:, 1:] = rotations[:, 1:]
    return pose


def body_joints(rotations: torch.Tensor) -> torch.Tensor:
    """Template-skeleton joints (N, 22, 3) of the body poses (root upright at the origin)."""
    return forward_kinematics(canonical_body_pose(rotations))


def sequence_joints(rotations: torch.Tensor) -> torch.Tensor:
    """Template joints (B, T, 22, 3) of pose sequences with their root orientation, pelvis at
    the origin (what motion reconstruction errors compare)."""
    b, t = rotations.shape[:2]
    flat = rotations.reshape(b * t, 22, 3)
    return forward_kinematics(CanonicalPose(flat, torch.zeros(b * t, 3, dtype=flat.dtype))).reshape(b, t, 22, 3)


class PoseFrames(Dataset):
    """Single body poses (N, 21 joints x 3 axis-angle), optionally mirrored at random."""

    def __init__(self, corpus: MotionCorpus, stride: int = 1, mirror_prob: float = 0.5) -> None:
        self.rotations = corpus.rotations[::stride]
        self.mirror_prob = mirror_prob

    def __len__(self) -> int:
        return self.rotations.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        rot = self.rotations[i]
        if self.mirror_prob and torch.rand(()) < self.mirror_prob:  # global RNG: seeded per run
            rot = mirror(CanonicalPose(rot[None], torch.zeros(1, 3))).rotations[0]
        return rot[1:].reshape(-1)


class MotionWindows(Dataset):
    """Fixed-length windows of motion (rotations (T, 22, 3), root translation (T, 3) starting at
    the origin in the ground plane), taken every ``stride`` frames inside each clip.

    ``speed_range=(lo, hi)``: each window plays its clip at a random speed in [lo, hi] (tempo
    augmentation: ``length * speed`` source frames resampled to ``length``, rotations slerped,
    translation interpolated; the window is shifted back where it would pass the clip's end)."""

    def __init__(
        self,
        corpus: MotionCorpus,
        length: int = 60,
        stride: int = 10,
        mirror_prob: float = 0.5,
        speed_range: tuple[float, float] | None = None,
    ) -> None:
        self.corpus, self.length, self.mirror_prob = corpus, length, mirror_prob
        self.speed_range = tuple(speed_range) if speed_range else None
        if self.speed_range and (len(self.speed_range) != 2 or not 0 < self.speed_range[0] <= self.speed_range[1]):
            raise ValueError(
                f"speed_range={list(self.speed_range)}: give [low, high] with 0 < low <= high, e.g. [0.8, 1.25]"
            )
        self.starts, self.clips = [], []  # window start frames, their clips' (first, last) frames
        for s, n in zip(corpus.clip_starts, corpus.clip_lengths):
            for o in range(0, int(n) - length + 1, stride):
                self.starts.append(int(s) + o)
                self.clips.append((int(s), int(s) + int(n) - 1))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        if self.speed_range:  # global RNG: seeded per run
            lo, hi = self.speed_range
            speed = lo + (hi - lo) * float(torch.rand(()))
            rot, transl = self._resampled(i, speed)
        else:
            rot = self.corpus.rotations[s : s + self.length]
            transl = self.corpus.transl[s : s + self.length].clone()
        transl[:, :2] -= transl[0, :2].clone()
        if self.mirror_prob and torch.rand(()) < self.mirror_prob:
            mirrored = mirror(CanonicalPose(rot, transl))
            rot, transl = mirrored.rotations, mirrored.transl
        return rot, transl

    def _resampled(self, i: int, speed: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``length`` frames of window ``i``'s clip from its start, played ``speed`` times as fast."""
        first, last = self.clips[i]
        span = (self.length - 1) * speed  # source frames covered
        start = max(first, min(self.starts[i], last - span))  # shifted back to stay inside the clip
        t = start - first + torch.arange(self.length, dtype=torch.float64) * (span / (self.length - 1))
        rot, transl = frames_at(self.corpus.rotations[first : last + 1], self.corpus.transl[first : last + 1], t)
        return rot, transl
