"""The motion codebook: a few hundred real mocap clips (60 frames at 30 fps) that together cover
the corpus, the motion counterpart of the pose codebook. The motion stage's ``retrieval``
generator picks from it the clip that best passes through the candidate poses (the same
objective as the latent optimisation, minimised over real clips instead of the VAE's codes).

Why it exists: the project's motion VAE, trained on a 2-core CPU, does not reproduce gait (its
reconstructions of held-out walks cover about 1% of the ground the walks cover;
``avatar-eval priors``), so no latent code of it walks. Real clips do.

Entries are k-means representatives (scikit-learn) over heading-normalised windows of the
training subjects (and their mirror images): each entry is the real window nearest its cluster
centre, in a feature of pelvis-relative joint positions (root upright) every ``feature_stride``
frames. Rotations are stored as float16 (half the file; errors below 0.001 rad).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar.body.skeleton import CanonicalPose, mirror
from avatar.priors.codebook import WEIGHTS_DIR
from avatar.priors.data import body_joints
from avatar.utils.files import InputFileError, file_identity, load_npz
from avatar.utils.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_MOTION_CODEBOOK = WEIGHTS_DIR / "motion_codebook.npz"


@dataclass
class MotionCodebook:
    rotations: torch.Tensor  # (K, T, 22, 3) axis-angle, heading-normalised root (faces -Y at frame 0)
    fps: float
    cluster_sizes: np.ndarray  # (K,) how many corpus windows each entry stands for
    sources: list[str]  # "<clip> @ frame <i>" of each entry's first frame
    meta: dict
    # Each entry's clip description from the corpus's MANIFEST.tsv (motion_descriptions.py; ""
    # where it has none); empty when the codebook was built from a corpus without a manifest.
    descriptions: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.rotations.shape[0]

    @property
    def num_frames(self) -> int:
        return self.rotations.shape[1]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            np.savez_compressed(
                tmp, rotations=self.rotations.numpy().astype(np.float16), fps=np.float32(self.fps),
                cluster_sizes=self.cluster_sizes, sources=np.array(self.sources), meta=json.dumps(self.meta),
                descriptions=np.array(self.descriptions, dtype=str),
            )  # fmt: skip
        return path


def read_motion_codebook(path: str | Path | None = None, key: str = "prior.motion_codebook") -> MotionCodebook:
    path = Path(path).expanduser() if path else DEFAULT_MOTION_CODEBOOK
    how = (
        "Build it with `python train.py stage=build_motion_codebook stage.publish=true` (from ../shared/mocap "
        f"or `stage.mocap_root=<your CMU/AMASS folder>`), or leave `{key}` empty for the shipped one."
    )
    if not path.is_file():
        raise FileNotFoundError(f"Motion codebook {path} ({key}) not found. {how}")
    what = "a motion codebook (.npz of stage=build_motion_codebook)"
    data = load_npz(path, key, what, how, keys=("rotations", "fps", "cluster_sizes", "sources", "meta"))
    try:
        rotations = torch.from_numpy(data["rotations"].astype(np.float32))
        descriptions = [str(d) for d in data["descriptions"]] if "descriptions" in data else []
        book = MotionCodebook(rotations, float(data["fps"]), data["cluster_sizes"], [str(s) for s in data["sources"]],
                              json.loads(str(data["meta"])), descriptions)  # fmt: skip
    except (KeyError, ValueError, TypeError) as err:
        raise InputFileError(f"`{key}={path}` is not {what}: {err}. {how}") from err
    if rotations.ndim != 4 or rotations.shape[2:] != (22, 3) or len(book.sources) != len(rotations):
        raise ValueError(f"{path} ({key}) holds rotations of shape {tuple(rotations.shape)}, expected (K, T, 22, 3)")
    if book.descriptions and len(book.descriptions) != len(book):
        raise ValueError(
            f"{path} ({key}) holds {len(book.descriptions)} descriptions for {len(book)} clips: rebuild it"
        )
    log.info("Motion codebook: %d clips of %d frames at %g fps loaded from %s (%s)",
             len(book), book.num_frames, book.fps, file_identity(path), key)  # fmt: skip
    return book


def build_motion_codebook(
    windows: torch.Tensor,
    sources: list[str],
    size: int,
    fps: float,
    seed: int = 0,
    add_mirrored: bool = True,
    feature_stride: int = 5,
) -> MotionCodebook:
    """k-means over windows (N, T, 22, 3); each entry is the real window nearest its centre."""
    from sklearn.cluster import MiniBatchKMeans

    start = time.perf_counter()
    if add_mirrored:
        n, t = windows.shape[:2]
        flat = mirror(CanonicalPose(windows.reshape(n * t, 22, 3), torch.zeros(n * t, 3))).rotations
        windows = torch.cat([windows, flat.reshape(n, t, 22, 3)])
        sources = sources + [f"{s} (mirrored)" for s in sources]
    poses = windows[:, ::feature_stride].reshape(-1, 22, 3)
    features = torch.cat([body_joints(chunk) for chunk in poses.split(8192)])  # root upright, pelvis at the origin
    features = features.reshape(len(windows), -1).numpy()
    size = min(size, len(features))
    kmeans = MiniBatchKMeans(n_clusters=size, random_state=seed, batch_size=4096, n_init=3, max_no_improvement=20)
    labels = kmeans.fit_predict(features)
    chosen, sizes = [], []
    for k in range(size):
        members = np.flatnonzero(labels == k)
        if len(members):
            chosen.append(members[np.argmin(((features[members] - kmeans.cluster_centers_[k]) ** 2).sum(1))])
            sizes.append(len(members))
    return MotionCodebook(
        rotations=windows[chosen].clone(), fps=fps, cluster_sizes=np.array(sizes), sources=[sources[i] for i in chosen],
        meta={"size": len(chosen), "corpus_windows": len(features), "num_frames": int(windows.shape[1]), "seed": seed,
              "build_seconds": round(time.perf_counter() - start, 1)},
    )  # fmt: skip
