"""Clip descriptions from the mocap corpus's MANIFEST.tsv and the prompt-description match
(avatar/mocap/manifest.py, avatar/priors/motion_descriptions.py), with the real MiniLM."""

from __future__ import annotations

import shutil

import pytest
import torch

from avatar.engine.runner import run
from avatar.guidance.synthetic.captions import contrast_phrases, named_pose_words
from avatar.mocap.manifest import read_manifest
from avatar.priors.codebook import load_pose_codebook
from avatar.priors.loading import PriorConfig, load_motion_codebook
from avatar.priors.motion_descriptions import clip_descriptions, description_distances

from helpers import compose_cfg
from synthetic_mocap import write_corpus

HEADER = "rel_path\tcategories\tdescription\n"


def test_contrast_phrases_leave_out_what_the_prompt_names():
    assert named_pose_words("A person raising both arms") == {"arms raised"}
    assert "with arms raised" not in contrast_phrases("a person raising both arms")
    assert "walking" not in contrast_phrases("a man walking slowly") and "kicking" in contrast_phrases(
        "a man walking slowly"
    )
    assert len(contrast_phrases("a person dancing")) == len(contrast_phrases("")) == 11  # names no pose word
    assert named_pose_words("understanding the sitter") == set()  # whole words only


def test_description_distances_follow_the_prompt_and_ignore_what_it_does_not_name():
    descriptions = ["walk", "walk on uneven terrain", "salsa dance", "", "balance on one leg, outstretched arms"]
    walking = description_distances("a person walking", descriptions)
    assert walking[0] < 0.05 and walking[1] < 0.2  # the prompt's action
    assert walking[2] == walking[3] == walking[4] == 1.0  # another action, none, another
    # No description names raising both arms better than the other pose words: all count as none.
    assert torch.equal(description_distances("a person raising both arms", descriptions), torch.ones(5))
    assert description_distances("a person dancing", descriptions)[2] < 0.05
    assert torch.equal(description_distances("a person walking", ["", ""]), torch.ones(2))
    with pytest.raises(ValueError, match="prompt is empty"):
        description_distances("  ", descriptions)


def test_manifest_errors_name_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="walking_clips='nope.tsv'"):
        read_manifest("nope.tsv", key="walking_clips")
    (tmp_path / "bad.tsv").write_text("path\tlabel\nx.bvh\twalk\n")
    with pytest.raises(ValueError, match="rel_path/categories"):
        read_manifest(tmp_path / "bad.tsv")


def test_codebook_builds_fill_descriptions_from_the_manifest(tmp_path, monkeypatch):
    """Both codebook builds (motion clips, pose frames) give each entry its clip's description."""
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "mocap", subjects=5, clips_per_subject=2, seconds=3.0)
    stems = sorted(p.stem for p in corpus.glob("*.bvh"))
    unlisted = set(stems[::2])  # half the clips are not in the manifest
    rows = [f"cmu/{stem}.bvh\twalk\tclip {stem} walking" for stem in stems if stem not in unlisted]
    (corpus / "MANIFEST.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    common = [f"stage.mocap_root={corpus}", "stage.holdout_fraction=0.2", "stage.size=6", "stage.num_frames=30"]
    result = run(compose_cfg(tmp_path / "book", "stage=build_motion_codebook", *common))
    book = load_motion_codebook(PriorConfig(motion_codebook=str(tmp_path / "book" / "motion_codebook.npz")))
    assert result["size"] == 6 and len(book.descriptions) == 6
    for source, description in zip(book.sources, book.descriptions):
        stem = source.split(" @ ")[0].rsplit("/", 1)[-1].removesuffix(".bvh")
        assert description == ("" if stem in unlisted else f"clip {stem} walking"), source
    assert "" in book.descriptions and any(book.descriptions)  # both kinds were checked
    assert book.meta["described"] == sum(bool(d) for d in book.descriptions)
    assert clip_descriptions(book.sources, corpus / "MANIFEST.tsv") == book.descriptions
    run(compose_cfg(tmp_path / "poses", "stage=build_pose_codebook", f"stage.mocap_root={corpus}",
                    "stage.holdout_fraction=0.2", "stage.size=8"))  # fmt: skip
    poses = load_pose_codebook(tmp_path / "poses" / "pose_codebook.npz")
    assert len(poses.descriptions) == len(poses) == 8
    assert poses.descriptions == clip_descriptions(poses.sources, corpus / "MANIFEST.tsv")
    # Without a manifest the codebook is built as before, with no descriptions.
    bare = shutil.copytree(corpus, tmp_path / "bare", ignore=shutil.ignore_patterns("MANIFEST.tsv"))
    run(compose_cfg(tmp_path / "bare_book", "stage=build_motion_codebook", f"stage.mocap_root={bare}", *common[1:]))
    assert (
        load_motion_codebook(
            PriorConfig(motion_codebook=str(tmp_path / "bare_book" / "motion_codebook.npz"))
        ).descriptions
        == []
    )
