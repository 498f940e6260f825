"""The pose codebook: a few thousand diverse, real body poses. AvatarCLIP scores every entry
with the guidance model to find candidate poses for a motion prompt; here the entries are
k-means cluster representatives over mocap poses (each one a real captured pose, the member
nearest its cluster's centre), in joint-position space with the root upright."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avatar.body.skeleton import NUM_JOINTS, CanonicalPose, mirror
from avatar.priors.data import body_joints, canonical_body_pose
from avatar.utils.files import InputFileError, file_identity, load_npz, load_torch_file
from avatar.utils.io import atomic_path

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # shipped inside the package
DEFAULT_CODEBOOK = WEIGHTS_DIR / "pose_codebook.npz"


@dataclass
class PoseCodebook:
    rotations: torch.Tensor  # (K, 22, 3) canonical poses, root upright at the origin
    joints: torch.Tensor  # (K, 22, 3) their template-skeleton joints
    cluster_sizes: np.ndarray  # (K,) how many corpus poses each entry stands for
    sources: list[str]  # "<clip> @ frame <i>" of each entry
    meta: dict
    # Each entry's clip description from the corpus's MANIFEST.tsv ("walk", "salsa dance", ...;
    # "" where it has none; avatar/priors/motion_descriptions.py): the pose search's
    # ``stage.description_weight`` reads them. Empty for a codebook built without a manifest.
    descriptions: list[str] = field(default_factory=list)
    # Text-image embeddings the file itself holds (AvatarCLIP's codebook.pth; not saved by
    # ``save``), and the model that made them (see usable_embeddings).
    embeddings: torch.Tensor | None = None
    embedding_model: str = ""

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
                descriptions=np.array(self.descriptions, dtype=str),
            )  # fmt: skip
        return path


def load_pose_codebook(path: str | Path | None = None, key: str = "prior.codebook") -> PoseCodebook:
    path = Path(path).expanduser() if path else DEFAULT_CODEBOOK
    how = (
        "Build it with `python train.py stage=build_pose_codebook` (from ../shared/mocap or "
        f"`stage.mocap_root=<your CMU/AMASS folder>`), or leave `{key}` empty for the shipped one."
    )
    if not path.is_file():
        raise FileNotFoundError(f"Pose codebook `{key}={path}` not found. {how}")
    what = "a project pose codebook (.npz of stage=build_pose_codebook)"
    hint = f"AvatarCLIP's codebook.pth goes to `{AVATARCLIP_CODEBOOK_KEY}`. {how}"
    data = load_npz(path, key, what, hint, keys=("rotations", "joints", "cluster_sizes", "sources", "meta"))
    rotations, joints = data["rotations"], data["joints"]
    n = len(rotations)
    if rotations.ndim != 3 or rotations.shape[1:] != (NUM_JOINTS, 3) or joints.shape != rotations.shape or n == 0:
        raise InputFileError(
            f"`{key}={path}` holds rotations {rotations.shape} and joints {joints.shape}, not (K >= 1, "
            f"{NUM_JOINTS}, 3) each: not {what}. {hint}"
        )
    if len(data["cluster_sizes"]) != n or len(data["sources"]) != n:
        raise InputFileError(f"`{key}={path}` holds {n} poses but {len(data['cluster_sizes'])} cluster sizes and "
                             f"{len(data['sources'])} sources: a damaged file. {how}")  # fmt: skip
    descriptions = [str(d) for d in data["descriptions"]] if "descriptions" in data else []
    if descriptions and len(descriptions) != n:
        raise InputFileError(
            f"`{key}={path}` holds {n} poses but {len(descriptions)} descriptions: a damaged file. {how}"
        )
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError as err:
        raise InputFileError(f"`{key}={path}`: its 'meta' entry is not JSON ({err}): not {what}. {how}") from err
    log.info("Pose codebook: project codebook of %d poses loaded from %s (%s)", n, file_identity(path), key)
    return PoseCodebook(
        rotations=torch.from_numpy(rotations),
        joints=torch.from_numpy(joints),
        cluster_sizes=data["cluster_sizes"],
        sources=[str(s) for s in data["sources"]],
        meta=meta,
        descriptions=descriptions,
    )


# ---- AvatarCLIP's own codebook -----------------------------------------------------------------

AVATARCLIP_CODEBOOK_KEY = "prior.avatarclip_codebook_path"
# What AvatarCLIP embedded its codebook with (``clip.load('ViT-B/32')`` in AvatarAnimate/models/
# pose_generation.py): its embeddings are reused only by that model (see usable_embeddings).
AVATARCLIP_EMBEDDING_MODEL = "clip ViT-B/32"
AVATARCLIP_CODEBOOK_WHAT = (
    "AvatarCLIP's pose codebook (data/codebook.pth: a dict of 'codebook', VPoser latents (N, 32), "
    "and 'codebook_embedding', CLIP ViT-B/32 embeddings (N, 512))"
)
AVATARCLIP_CODEBOOK_HELP = (
    "It is not shipped: download codebook.pth from the 'Pretrained weights ... for motion generation' "
    "Google Drive folder linked in AvatarCLIP's README (https://github.com/hongfz16/AvatarCLIP"
    "#download-pretrained-models--other-data) and point `prior.avatarclip_codebook_path` at it, with "
    "`prior.vposer_path` at the VPoser v2 release that decodes its latents."
)


def read_avatarclip_codebook(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents (N, L), embeddings (N, E)) of AvatarCLIP's ``codebook.pth``, float32, validated."""
    key, what, hint = AVATARCLIP_CODEBOOK_KEY, AVATARCLIP_CODEBOOK_WHAT, AVATARCLIP_CODEBOOK_HELP
    payload = load_torch_file(path, key, what, hint)
    found = sorted(map(str, payload)) if isinstance(payload, Mapping) else type(payload).__name__
    if not isinstance(payload, Mapping) or not {"codebook", "codebook_embedding"} <= set(payload):
        raise InputFileError(f"`{key}={path}` holds {found}, not {what}. {hint}")
    latents, embeddings = payload["codebook"], payload["codebook_embedding"]
    if not (isinstance(latents, torch.Tensor) and isinstance(embeddings, torch.Tensor)
            and latents.ndim == 2 and embeddings.ndim == 2 and len(latents) == len(embeddings) >= 1):  # fmt: skip
        shapes = [tuple(getattr(v, "shape", ())) or type(v).__name__ for v in (latents, embeddings)]
        raise InputFileError(
            f"`{key}={path}`: 'codebook' and 'codebook_embedding' must be (N, latent) and (N, embedding) "
            f"tensors with the same N >= 1; found {shapes[0]} and {shapes[1]}. Expected {what}."
        )
    latents, embeddings = latents.float(), embeddings.float()
    if not (torch.isfinite(latents).all() and torch.isfinite(embeddings).all()):
        raise InputFileError(f"`{key}={path}` holds NaN or infinite values: a damaged file. {hint}")
    return latents, embeddings


def load_avatarclip_codebook(path: str | Path, vposer, chunk: int = 4096) -> PoseCodebook:
    """AvatarCLIP's ``codebook.pth`` as a :class:`PoseCodebook`: each VPoser latent decoded by
    ``vposer`` (the release its latents come from) to a body pose, root upright (as AvatarCLIP
    renders them), with the file's CLIP embeddings kept in ``embeddings``."""
    from avatar.priors.vposer import vposer_to_canonical

    file = Path(path).expanduser()
    latents, embeddings = read_avatarclip_codebook(file)
    if latents.shape[1] != vposer.latent_dim:
        raise InputFileError(
            f"`{AVATARCLIP_CODEBOOK_KEY}={path}` holds {latents.shape[1]}-d latents but the VPoser of "
            f"`prior.vposer_path` has {vposer.latent_dim}-d ones: the codebook needs the VPoser v2 release."
        )
    dtype = next(vposer.parameters()).dtype
    with torch.no_grad():
        body = torch.cat([vposer.decode(z.to(dtype))["pose_body"].float() for z in latents.split(chunk)])
    rotations = vposer_to_canonical(body)
    log.info(
        "Pose codebook: AvatarCLIP codebook of %d VPoser latents (%d-d) with %d-d %s embeddings loaded "
        "from %s (%s)", len(latents), latents.shape[1], embeddings.shape[1], AVATARCLIP_EMBEDDING_MODEL,
        file_identity(file), AVATARCLIP_CODEBOOK_KEY,
    )  # fmt: skip
    return PoseCodebook(
        rotations=rotations,
        joints=body_joints(rotations),
        cluster_sizes=np.ones(len(rotations), dtype=np.int64),
        sources=[f"AvatarCLIP codebook.pth entry {i}" for i in range(len(rotations))],
        meta={"source": "avatarclip", "file": str(file), "size": len(rotations)},
        embeddings=embeddings,
        embedding_model=AVATARCLIP_EMBEDDING_MODEL,
    )


def guidance_embedding_model(guidance) -> str:
    """``"clip ViT-B/32"`` for an OpenAI CLIP ViT with 32-px patches (AvatarCLIP's model), else
    the guidance's class name: which embeddings a codebook may reuse."""
    model = getattr(guidance, "model", None)
    conv1 = getattr(getattr(model, "visual", None), "conv1", None)
    if type(guidance).__name__ == "ClipGuidance" and tuple(getattr(conv1, "kernel_size", ())) == (32, 32):
        return AVATARCLIP_EMBEDDING_MODEL
    return type(guidance).__name__


def usable_embeddings(codebook: PoseCodebook, guidance) -> torch.Tensor | None:
    """The codebook's own embeddings, L2-normalised, when ``guidance`` is the model that made them
    (same model family and width), else None (the pose stage then renders and embeds the poses)."""
    if codebook.embeddings is None:
        return None
    same_model = guidance_embedding_model(guidance) == codebook.embedding_model
    if not same_model or int(getattr(guidance, "embed_dim", -1)) != codebook.embeddings.shape[1]:
        log.info(
            "Pose codebook: its %s embeddings (%d-d) do not fit the %s guidance (%s-d): embedding the poses anew",
            codebook.embedding_model, codebook.embeddings.shape[1], guidance_embedding_model(guidance),
            getattr(guidance, "embed_dim", "?"),
        )  # fmt: skip
        return None
    return F.normalize(codebook.embeddings.float(), dim=-1)


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
        meta={
            "size": len(chosen),
            "corpus_poses": len(features),
            "seed": seed,
            "build_seconds": round(time.perf_counter() - start, 1),
        },  # fmt: skip
    )
