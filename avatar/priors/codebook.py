"""The pose codebook: a few thousand diverse, real body poses. AvatarCLIP scores every entry
with the guidance model to find candidate poses for a motion prompt; here the entries are
k-means cluster representatives over mocap poses (each one a real captured pose, the member
nearest its cluster's centre), in joint-position space with the root upright."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avatar.body.skeleton import CanonicalPose, mirror
from avatar.priors.data import body_joints, canonical_body_pose
from avatar.utils.io import atomic_path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # shipped inside the package
DEFAULT_CODEBOOK = WEIGHTS_DIR / "pose_codebook.npz"


@dataclass
class PoseCodebook:
    rotations: torch.Tensor  # (K, 22, 3) canonical poses, root upright at the origin
    joints: torch.Tensor  # (K, 22, 3) their template-skeleton joints
    cluster_sizes: np.ndarray  # (K,) how many corpus poses each entry stands for
    sources: list[str]  # "<clip> @ frame <i>" of each entry
    meta: dict

    def __len__(self) -> int:
        return self.rotations.shape[0]

    def poses(self) -> CanonicalPose:
        return canonical_body_pose(self.rotations)

    def nearest(self, rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, mean per-joint position error in metres) of the nearest entry to each pose."""
        query = body_joints(rotations)
        dist = torch.cdist(query.reshape(len(query), -1), self.joints.reshape(len(self), -1))
        index = dist.argmin(1)
        error = (query - self.joints[index]).norm(dim=-1).mean(-1)
        return index, error

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            np.savez_compressed(
                tmp, rotations=self.rotations.numpy().astype(np.float32), joints=self.joints.numpy().astype(np.float32),
                cluster_sizes=self.cluster_sizes, sources=np.array(self.sources), meta=json.dumps(self.meta),
            )  # fmt: skip
        return path


def load_pose_codebook(path: str | Path | None = None) -> PoseCodebook:
    path = Path(path) if path else DEFAULT_CODEBOOK
    if not path.is_file():
        raise FileNotFoundError(
            f"Pose codebook {path} not found. Build it with `python train.py stage=build_pose_codebook` "
            "(from ../shared/mocap or `stage.mocap_root=<your CMU/AMASS folder>`)."
        )
    data = np.load(path)
    return PoseCodebook(
        rotations=torch.from_numpy(data["rotations"]),
        joints=torch.from_numpy(data["joints"]),
        cluster_sizes=data["cluster_sizes"],
        sources=[str(s) for s in data["sources"]],
        meta=json.loads(str(data["meta"])),
    )


def build_pose_codebook(
    rotations: torch.Tensor, sources: list[str], size: int, seed: int = 0, add_mirrored: bool = True
) -> PoseCodebook:
    """k-means (mini-batch, scikit-learn) over pelvis-relative joint positions of the body poses;
    each entry is the real pose closest to its cluster centre."""
    from sklearn.cluster import MiniBatchKMeans

    start = time.perf_counter()
    if add_mirrored:
        mirrored = mirror(CanonicalPose(rotations, torch.zeros(len(rotations), 3))).rotations
        rotations = torch.cat([rotations, mirrored])
        sources = sources + [f"{s} (mirrored)" for s in sources]
    joints = body_joints(rotations)
    features = joints.reshape(len(joints), -1).numpy()
    size = min(size, len(features))
    kmeans = MiniBatchKMeans(n_clusters=size, random_state=seed, batch_size=4096, n_init=3, max_no_improvement=20)
    labels = kmeans.fit_predict(features)
    centres = kmeans.cluster_centers_
    chosen, sizes = [], []
    for k in range(size):
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        best = members[np.argmin(((features[members] - centres[k]) ** 2).sum(1))]
        chosen.append(best)
        sizes.append(len(members))
    chosen = np.array(chosen)
    root_upright = canonical_body_pose(rotations[chosen]).rotations
    return PoseCodebook(
        rotations=root_upright,
        joints=joints[chosen],
        cluster_sizes=np.array(sizes),
        sources=[sources[i] for i in chosen],
        meta={"size": len(chosen), "corpus_poses": len(features), "seed": seed,
              "build_seconds": round(time.perf_counter() - start, 1)},  # fmt: skip
    )
