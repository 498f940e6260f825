"""``avatar-eval`` (avatar/evaluation/): each subcommand run on something small, through the
command line parser, and its printed tables read back."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import imageio.v2 as imageio
import pytest
import torch

from avatar.body.skeleton import CanonicalPose
from avatar.evaluation import cli
from avatar.evaluation.motion import PROMPTS as MOTION_PROMPTS
from avatar.evaluation.pose_search import PROMPTS as POSE_PROMPTS
from avatar.evaluation.pose_search import roc_auc
from avatar.guidance.synthetic.poses import pose_words
from avatar.priors.codebook import PoseCodebook, load_pose_codebook

from helpers import LOW_POLY
from synthetic_mocap import write_corpus

PER_WORD = 3  # codebook entries per expected word of the pose prompts


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of the markdown table rows whose first cell starts with ``first_cell``."""
    rows = [
        [c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line.startswith("|")
    ]
    return [r for r in rows if r[0].startswith(first_cell)]


@pytest.fixture(scope="module")
def word_codebook(tmp_path_factory, anny_low):
    """A codebook cut from the shipped one: the first PER_WORD entries that read (on the low-poly
    body) as each expected word of the pose prompts, and as many standing with arms down."""
    full = load_pose_codebook()
    with torch.no_grad():
        joints = anny_low(pose=CanonicalPose(full.rotations.to(anny_low.dtype), torch.zeros(len(full), 3))).joints
    words = pose_words(joints)
    wanted = {*POSE_PROMPTS.values(), ("body", "standing")}
    index: set[int] = set()
    for group, word in wanted:
        members = [i for i, w in enumerate(words) if w[group] == word]
        assert len(members) >= PER_WORD, (word, len(members))
        index.update(members[:PER_WORD])
    index = sorted(index)
    small = PoseCodebook(
        full.rotations[index], full.joints[index], full.cluster_sizes[index], [full.sources[i] for i in index],
        {**full.meta, "subset_of_shipped": index},
    )  # fmt: skip
    return small.save(tmp_path_factory.mktemp("codebook") / "codebook.npz")


def test_help_lists_every_command_and_each_command_parses_its_options():
    proc = subprocess.run(
        [sys.executable, "-m", "avatar.evaluation", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    for name in cli.COMMANDS:
        assert re.search(rf"^\s+{name}\s", proc.stdout, re.M), name
    parser = cli.build_parser()  # every command's module imported
    args = parser.parse_args(["guidance", "--samples", "8", "--steps", "0"])
    assert (args.command, args.samples, args.steps, args.checkpoint.endswith("mini.pt")) == ("guidance", 8, 0, True)
    args = parser.parse_args(["priors", "--samples", "10"])
    assert args.samples == 10 and args.mocap_root is None and args.motion_prior == ""
    with pytest.raises(SystemExit):
        cli.main(["pose", "--no-such-option"])
    with pytest.raises(SystemExit, match="color-pairs=.*unknown: \\['no such colour'\\]"):  # checked before any work
        cli.main(["guidance", "--color-pairs", "red/no such colour"])


def test_overrides_may_follow_an_option(monkeypatch):
    """``avatar-eval motion a=1 --keep out b=2 --prompt P``: both overrides reach the evaluation, in
    order, with the prompt chosen; a prompt the evaluation does not know is refused."""
    from avatar.evaluation import motion

    seen = {}
    monkeypatch.setattr(motion, "evaluate", lambda overrides, keep="", prompts=None: seen.update(
        overrides=overrides, keep=keep, prompts=prompts))  # fmt: skip
    cli.main(["motion", "seed=1", "--keep", "out", "pose:stage.top_k=8", "--prompt", "a person walking"])
    assert seen == {"overrides": ["seed=1", "pose:stage.top_k=8"], "keep": "out", "prompts": ["a person walking"]}
    with pytest.raises(SystemExit):
        cli.main(["motion", "--prompt", "a person dancing"])


def test_roc_auc_counts_ties_half():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1])
    assert roc_auc(scores, torch.tensor([True, True, False, False])) == 0.875
    assert math.isnan(roc_auc(scores, torch.zeros(4, dtype=torch.bool)))


def test_pose_search_evaluation(tmp_path, word_codebook, capsys):
    cli.main([
        "pose", f"body.topology={LOW_POLY}", "render.height=64", "render.width=64", f"prior.codebook={word_codebook}",
        f"stage.cache_dir={tmp_path / 'cache'}", "logger=none",
    ])  # fmt: skip
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    summary = json.loads(lines[-1])
    for prompt, (_, word) in POSE_PROMPTS.items():
        row = next(line for line in lines if line.startswith(prompt))
        hits, auc = (float(x) for x in row[len(prompt) :].split()[len(word.split()) : len(word.split()) + 2])
        assert 0.0 <= hits <= 1.0 and 0.0 <= auc <= 1.0, row
    assert 0.0 <= summary["mean_hit_rate"] <= 1.0
    assert 0.5 < summary["mean_auc"] <= 1.0  # the search ranks the prompt's poses above the others


@pytest.mark.slow
def test_motion_evaluation_keeps_each_prompts_runs(tmp_path, word_codebook, capsys):
    keep = tmp_path / "keep"
    cli.main([
        "motion", f"body.topology={LOW_POLY}", "render.height=32", "render.width=32", "stage.preview_size=48",
        "trainer.max_steps=20",
        "--keep", str(keep), f"pose:prior.codebook={word_codebook}", f"pose:stage.cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["prompt"] for r in rows] == list(MOTION_PROMPTS)
    for i, row in enumerate(rows):
        assert 0.0 <= row["candidates_hit"] <= 1.0 and 0.0 <= row["frames_hit"] <= 1.0
        assert row["travel_m"] >= 0.0 and math.isfinite(row["jerk"]) and row["source"]
        assert (keep / f"motion_{i}" / "motion.mp4").is_file() and (keep / f"poses_{i}.npz").is_file()
    assert len(table_rows(out, "a person")) == len(rows)


def test_guidance_evaluation_tables_color_check_and_figure(tmp_path, capsys):
    figure = tmp_path / "fits.png"
    cli.main([
        "guidance", "--samples", "32", "--steps", "2", "--color-seeds", "1", "--color-pairs", "red/blue",
        "--topology", LOW_POLY, "--color-views", "1", "--color-size", "32", "--figure", str(figure),
    ])  # fmt: skip
    out = capsys.readouterr().out
    for name in ("training templates", "paraphrases", "held-out attribute combinations"):
        (row,) = [r for r in table_rows(out, name) if len(r) == 5]  # the first table
        t2i, i2t = float(row[1]), float(row[2])
        binding, pairs = re.fullmatch(r"([\d.]+) \((\d+)\)", row[3]).groups()
        assert 0.0 <= t2i <= 1.0 and 0.0 <= i2t <= 1.0 and 0.0 <= float(binding) <= 1.0 and int(pairs) > 0
        assert len(table_rows(out, name)) == 2  # and its row of the binding-by-garments table
    (color,) = table_rows(out, "a person in a red shirt and blue trousers")
    assert re.fullmatch(r"[01]/1", color[1]) and len(color[2].split(",")) == 3
    image = imageio.imread(figure)
    assert image.shape[:2] == (2 + 192 + 2, 2 + 3 * (192 + 2)) and image.std() > 5  # one pair: front, side, back


def test_priors_evaluation_on_a_small_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))  # the retargeted corpus's cache
    corpus = write_corpus(tmp_path / "mocap", subjects=5, clips_per_subject=1, seconds=4.0)  # 1 held out: 2 windows
    cli.main(["priors", "--mocap-root", str(corpus), "--samples", "20"])
    out = capsys.readouterr().out
    names = ["held-out data", "pose prior", "pose codebook", "motion VAE (", "motion VAE reconstructions",
             "motion VAE samples: prior", "motion VAE samples: N(0, I)"]  # fmt: skip
    rows = {name: table_rows(out, name) for name in names}
    assert all(len(r) == 1 for r in rows.values()), out
    assert float(rows["held-out data"][0][3]) > 0  # the data's own diversity, the yardstick
    for name in names[1:3]:
        error, apd = float(rows[name][0][1]), float(rows[name][0][3])
        assert 0.0 < error < 1000.0 and apd > 0.0, rows[name]
    assert 0.0 < float(rows["motion VAE ("][0][1]) < 1000.0
    # The shipped motion VAE's samples (20 draws, from the posteriors and from the Gaussian), with
    # their distance to the nearest training window of this corpus.
    for name in names[-2:]:
        share, nearest = re.search(r"20 draws: travelling >= 0.5 m (\d+)%.* nearest training window (\d+) mm",
                                   rows[name][0][4]).groups()  # fmt: skip
        assert float(rows[name][0][3]) > 0 and 0 <= int(share) <= 100 and int(nearest) > 0, rows[name]


def test_the_paraphrase_set_is_held_out_and_names_known_expectations(tmp_path):
    """avatar/evaluation/paraphrases.yaml: >= 60 paraphrases over the three kinds, each expectation
    a known pose word, Anny phenotype and direction, or body regions with vocabulary colours; none
    is in the training grammar or the fine-tunes' anchor prompts."""
    import inspect

    from avatar.body.anny_body import PHENOTYPES
    from avatar.body.regions import REGIONS
    from avatar.evaluation.paraphrase import PARAPHRASES, load_paraphrases
    from avatar.guidance import training
    from avatar.guidance.synthetic import captions
    from avatar.guidance.synthetic.appearance import COLORS
    from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS

    assert PARAPHRASES.read_text().startswith("# HELD OUT: never used for training")
    data = load_paraphrases()
    assert sum(len(entries) for entries in data.values()) >= 60
    assert {kind: len(entries) >= 15 for kind, entries in data.items()} == {"pose": True, "shape": True, "color": True}
    assert {e["word"] for e in data["pose"]} <= {*ARM_WORDS, *BODY_WORDS}
    assert {e["word"] for e in data["pose"]} == {w for _, w in POSE_PROMPTS.values()}  # every tuned pose word
    assert all(set(e["moves"]) <= set(PHENOTYPES) and set(e["moves"].values()) <= {"up", "down"} for e in data["shape"])
    assert {p for e in data["shape"] for p in e["moves"]} == {"height", "weight", "muscle", "age", "gender"}
    assert all(set(e["regions"]) <= set(REGIONS) and set(e["regions"].values()) <= set(COLORS) for e in data["color"])
    grammar = inspect.getsource(captions).lower()  # no paraphrase is one of the grammar's strings
    prompts = [e["prompt"].lower() for kind in data.values() for e in kind]
    assert [p for p in prompts if f'"{p}"' in grammar or p in map(str.lower, training.ANCHOR_PROMPTS)] == []
    bad = tmp_path / "bad.yaml"
    bad.write_text('pose: [{prompt: "a cartwheel", word: cartwheeling, phrasing: [short]}]\nshape: []\ncolor: []\n')
    with pytest.raises(ValueError, match="cartwheel"):
        load_paraphrases(bad)


def test_paraphrase_evaluation_on_a_tiny_subset(tmp_path, word_codebook, capsys):
    cli.main([
        "paraphrase", f"body.topology={LOW_POLY}", "render.height=32", "render.width=32",
        f"pose:prior.codebook={word_codebook}", f"pose:stage.cache_dir={tmp_path / 'pose'}",
        "shape:stage.codebook_size=8", f"shape:stage.cache_dir={tmp_path / 'shape'}", "--limit", "2",
        "--color-seeds", "1", "--color-steps", "2", "--color-views", "1", "--color-size", "32",
    ])  # fmt: skip
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary) == {"pose", "shape", "color"}
    assert summary["pose"]["tuned"]["prompts"] == summary["pose"]["paraphrases"]["prompts"] == 2
    assert summary["shape"]["tuned"]["directions"] == 2 and summary["shape"]["paraphrases"]["directions"] == 2
    assert summary["color"]["paraphrases"] == {"prompts": 2, "passed": summary["color"]["paraphrases"]["passed"],
                                                "runs": 2, "runs_right": summary["color"]["paraphrases"]["runs_right"]}  # fmt: skip
    (hits,) = table_rows(out, "pose: mean hit rate")
    assert re.fullmatch(r"[\d.]+ \(2\)", hits[1]) and re.fullmatch(r"[\d.]+ \(2\)", hits[2])
    (shape,) = table_rows(out, "shape: directions right")
    assert re.fullmatch(r"\d/2 \(2\)", shape[1]) and re.fullmatch(r"\d/2 \(2\)", shape[2])
    assert len(table_rows(out, "colour: check passed")) == 1
    assert len(table_rows(out, "someone with their hands up in the air")) == 1  # the first pose paraphrase's row
