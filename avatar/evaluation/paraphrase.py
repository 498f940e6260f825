"""Does the guidance model follow prompts phrased as people write them? The held-out paraphrase
set (avatar/evaluation/paraphrases.yaml: never used for training; issue #28) through three checks,
each side by side with the tuned prompts, and each judged by geometry or colour, never by a
guidance model:

* pose: the pose stage's codebook search (as ``avatar-eval pose``) for every pose paraphrase: the
  share of the kept candidates whose joints read as the entry's pose word
  (avatar/guidance/synthetic/poses.py) and the ROC-AUC of the prompt's score over the codebook for
  the entries that read as it; tuned: ``avatar-eval pose``'s eight prompts.
* shape: the shape stage's codebook query (AvatarCLIP's direction score, avatar/stages/shape.py):
  a direction is right when the mean phenotype of the top ``stage.top_k`` entries moves at least
  ``--shape-margin`` from the codebook's mean the way the entry says (Anny: gender 0 male .. 1
  female, age, muscle, weight, height); tuned: the grammar's own phrases ("a tall person", "a
  woman", ...; SHAPE_PROMPTS).
* colour: the colour check (``avatar-eval guidance``) with the paraphrase as the prompt: a run is
  right when each named region's mean RGB is nearer its colour than the other region's; tuned:
  the same colours in the check's own sentence ("a person in a red shirt and blue trousers").
  Defaults: the tests' check (low-poly body, 100 steps, 4 views, 96 px, 3 seeds); ``--color-topology
  anny --color-steps 200 --color-views 8 --color-size 128`` is ``avatar-eval guidance``'s.

    avatar-eval paraphrase                                          # all three checks, mini
    avatar-eval paraphrase guidance.checkpoint=avatar/guidance/weights/mini_scorer.pt --kinds pose
    avatar-eval paraphrase body.topology=notoes_collapse5pc shape:stage.codebook_size=128 --limit 4

Overrides (key=value) apply to the pose and the shape stage, the ``guidance...`` ones also to the
colour check; "pose:key=value" / "shape:key=value" to one stage only. Prints a table per check, a summary
table (tuned prompts | paraphrases) and, last, one JSON line with the summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import yaml

# Tuned shape prompts: the training grammar's own phrasing of each direction (captions.py
# shape_words and subject_noun), prompt -> {phenotype: up | down}.
SHAPE_PROMPTS: dict[str, dict[str, str]] = {
    "a tall person": {"height": "up"},
    "a short person": {"height": "down"},
    "a heavy person": {"weight": "up"},
    "a slim person": {"weight": "down"},
    "a muscular person": {"muscle": "up"},
    "a man": {"gender": "down"},
    "a woman": {"gender": "up"},
    "a child": {"age": "down"},
    "an old person": {"age": "up"},
}
PARAPHRASES = Path(__file__).resolve().parent / "paraphrases.yaml"
KINDS = ("pose", "shape", "color")
PHRASING_TAGS = ("subject", "verb", "order", "synonym", "garment", "short", "long")
DIRECTIONS = {"up": 1.0, "down": -1.0}
ONE_STAGE = ("pose:", "shape:")  # "pose:key=value": an override for that stage alone


def load_paraphrases(path: str | Path = PARAPHRASES) -> dict[str, list[dict]]:
    """The paraphrase set, checked: every entry's expectation names a known pose word, Anny
    phenotype and direction, or body regions with vocabulary colours (a ValueError names the
    first entry that does not)."""
    from avatar.body.anny_body import PHENOTYPES
    from avatar.body.regions import REGIONS
    from avatar.evaluation.pose_search import PROMPTS as POSE_PROMPTS
    from avatar.guidance.synthetic.appearance import COLORS
    from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or sorted(data) != sorted(KINDS):
        raise ValueError(f"{path}: expected the sections {list(KINDS)}, found {list(data or {})}")
    seen: set[str] = set()
    tuned = {*POSE_PROMPTS, *SHAPE_PROMPTS}
    for kind in KINDS:
        if not data[kind]:
            raise ValueError(f"{path}: section {kind!r} is empty")
        for i, entry in enumerate(data[kind]):
            where = f"{path}: {kind}[{i}] {entry!r}"
            prompt = entry.get("prompt") if isinstance(entry, dict) else None
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{where}: needs a prompt")
            if prompt in seen or prompt in tuned:
                raise ValueError(f"{where}: the prompt is given twice, or is a tuned prompt")
            seen.add(prompt)
            tags = entry.get("phrasing") or []
            if not tags or set(tags) - set(PHRASING_TAGS):
                raise ValueError(f"{where}: phrasing tags must be some of {PHRASING_TAGS}")
            if kind == "pose" and entry.get("word") not in (*ARM_WORDS, *BODY_WORDS):
                raise ValueError(f"{where}: word must be a pose word, one of {(*ARM_WORDS, *BODY_WORDS)}")
            if kind == "shape":
                moves = entry.get("moves") or {}
                if not moves or set(moves) - set(PHENOTYPES) or set(moves.values()) - set(DIRECTIONS):
                    raise ValueError(f"{where}: moves must map phenotypes {PHENOTYPES} to up or down")
            if kind == "color":
                regions = entry.get("regions") or {}
                colors = list(regions.values())
                if (len(regions) < 2 or set(regions) - set(REGIONS) or set(colors) - set(COLORS)
                        or len(set(colors)) != len(colors)):  # fmt: skip
                    raise ValueError(f"{where}: regions must name two or more body regions {REGIONS} "
                                     "with different vocabulary colours")  # fmt: skip
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*",
                        help='config overrides of the pose and shape stages (key=value; "pose:key=value", "shape:key=value": one stage)')  # fmt: skip
    parser.add_argument("--file", default=str(PARAPHRASES), help="the paraphrase set (YAML)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="checks to run, comma-separated: pose,shape,color")
    parser.add_argument(
        "--limit", type=int, default=0, help="only the first N tuned prompts and paraphrases of each kind"
    )
    parser.add_argument("--shape-margin", type=float, default=0.1,
                        help="how far the top entries' mean phenotype must move from the codebook's mean")  # fmt: skip
    parser.add_argument("--color-seeds", type=int, default=3)
    parser.add_argument("--color-steps", type=int, default=100)
    parser.add_argument("--color-topology", default="notoes_collapse5pc", help="anny (full) or notoes_collapse5pc")
    parser.add_argument("--color-views", type=int, default=4)
    parser.add_argument("--color-size", type=int, default=96)


def run(args: argparse.Namespace) -> dict:
    """``avatar-eval paraphrase``."""
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or set(kinds) - set(KINDS):
        raise SystemExit(f"--kinds={args.kinds!r}: choose from {','.join(KINDS)}")
    data = load_paraphrases(args.file)
    limit = args.limit or None
    shared = [o for o in args.overrides if not o.startswith(ONE_STAGE)]
    only = {p[:-1]: [o.removeprefix(p) for o in args.overrides if o.startswith(p)] for p in ONE_STAGE}
    summary: dict[str, dict] = {}
    if "pose" in kinds:
        summary["pose"] = pose_check(data["pose"][:limit], [*shared, *only["pose"]], limit)
    if "shape" in kinds:
        summary["shape"] = shape_check(data["shape"][:limit], [*shared, *only["shape"]], args.shape_margin, limit)
    if "color" in kinds:
        summary["color"] = color_check_paraphrases(data["color"][:limit], shared, args)
    print_summary(summary)
    print(json.dumps(summary))
    return summary


# ---- pose --------------------------------------------------------------------------------------
def pose_check(entries: list[dict], overrides: list[str], limit: int | None) -> dict:
    from avatar.evaluation import pose_search
    from avatar.guidance.synthetic.poses import ARM_WORDS

    tuned = dict(list(pose_search.PROMPTS.items())[:limit])
    ours = {e["prompt"]: ("arms" if e["word"] in ARM_WORDS else "body", e["word"]) for e in entries}
    rows = pose_search.evaluate(overrides, {**tuned, **ours}, table=False)["prompts"]
    print("\n| pose paraphrase | expected | hits | AUC | candidates read as |\n|---|---|---|---|---|")
    for prompt in ours:
        r = rows[prompt]
        print(
            f"| {prompt} | {r['expected']} | {r['hit_rate']:.1f} | {r['auc']:.3f} | {', '.join(map(str, r['read_as']))} |"
        )
    print("\n| pose word | tuned prompt: hits, AUC | paraphrases: n, mean hits, mean AUC |\n|---|---|---|")
    words = dict.fromkeys([w for _, w in tuned.values()] + [w for _, w in ours.values()])
    for word in words:
        tuned_rows = [rows[p] for p, (_, w) in tuned.items() if w == word]
        para = [rows[p] for p, (_, w) in ours.items() if w == word]
        t = f"{tuned_rows[0]['hit_rate']:.1f}, {tuned_rows[0]['auc']:.3f}" if tuned_rows else "-"
        p = f"{len(para)}, {_mean(para, 'hit_rate'):.2f}, {_mean(para, 'auc'):.3f}" if para else "-"
        print(f"| {word} | {t} | {p} |")
    return {
        name: {"prompts": len(group), "mean_hit_rate": _mean(group, "hit_rate"), "mean_auc": _mean(group, "auc")}
        for name, group in (("tuned", [rows[p] for p in tuned]), ("paraphrases", [rows[p] for p in ours]))
    }


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r[key] == r[key]]  # AUC is NaN where no codebook entry reads as the word
    return sum(values) / len(values) if values else float("nan")


# ---- shape -------------------------------------------------------------------------------------
def shape_moves(shapes, names: list[str], scores, moves: dict[str, str], k: int, margin: float) -> list[dict]:
    """How the top ``k`` codebook entries under ``scores`` move each phenotype of ``moves``
    ({phenotype: up | down}) from the codebook mean (``shapes`` (N, D), phenotype ``names``): one
    dict per phenotype with its ``delta`` and whether it is ``right`` (at least ``margin`` the way
    said)."""
    top, mean = shapes[scores.topk(k).indices].mean(0), shapes.mean(0)
    out = []
    for name, way in moves.items():
        delta = float(top[names.index(name)] - mean[names.index(name)])
        out.append({"phenotype": name, "way": way, "delta": delta, "right": DIRECTIONS[way] * delta >= margin})
    return out


def shape_codebook(overrides: list[str], guidance=None):
    """(config, stage, guidance, shapes (N, D), image embeddings (N, E)): the shape stage's
    codebook under ``overrides`` (cached by the stage; ``guidance``: reuse one already built)."""
    from hydra import compose, initialize_config_dir

    from avatar.config import register_configs
    from avatar.guidance import build_guidance
    from avatar.stages.shape import ShapeStage
    from avatar.utils.paths import PROJECT_ROOT

    register_configs()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["stage=shape", *overrides, f"run_dir={tmp}"])
        stage = ShapeStage(cfg)
        if not stage.is_anny():
            raise SystemExit("the shape check reads Anny's phenotypes; use body=anny")
        guidance = guidance if guidance is not None else build_guidance(cfg.guidance)
        shapes, embeddings, _, _ = stage.codebook(guidance)
    return cfg, stage, guidance, shapes, embeddings


def shape_check(entries: list[dict], overrides: list[str], margin: float, limit: int | None) -> dict:
    from avatar.stages.shape import score_codebook

    cfg, stage, guidance, shapes, embeddings = shape_codebook(overrides)
    text_map = stage.text_map(guidance)  # the stage reads the prompt through it (stage.text_map)
    names = list(stage.body.shape_names)
    k = min(int(cfg.stage.top_k), len(shapes))

    def judge(prompt: str, moves: dict[str, str]) -> list[dict]:
        text = cfg.stage.template.format(prompt)
        scores = score_codebook(
            guidance, embeddings, embeddings[0], text, cfg.stage.neutral_text, cfg.stage.scoring, text_map
        )
        return shape_moves(shapes, names, scores, moves, k, margin)

    tuned = {p: judge(p, m) for p, m in list(SHAPE_PROMPTS.items())[:limit]}
    ours = {e["prompt"]: judge(e["prompt"], e["moves"]) for e in entries}
    print(
        f"\n| shape prompt | kind | phenotype moved (top-{k} mean - codebook mean; right at >= {margin}) |\n|---|---|---|"
    )
    for kind, table in (("tuned", tuned), ("paraphrase", ours)):
        for prompt, checks in table.items():
            cells = ", ".join(f"{c['phenotype']} {c['way']}: {c['delta']:+.2f} {'right' if c['right'] else 'WRONG'}"
                              for c in checks)  # fmt: skip
            print(f"| {prompt} | {kind} | {cells} |")
    result = {}
    for name, table in (("tuned", tuned), ("paraphrases", ours)):
        checks = [c for cs in table.values() for c in cs]
        result[name] = {"prompts": len(table), "directions": len(checks), "right": sum(c["right"] for c in checks)}
    return result


# ---- colour ------------------------------------------------------------------------------------
def regions_right(region_means: dict, expected: dict[str, str]) -> bool:
    """Each region's mean RGB nearer its expected vocabulary colour than any other region's."""
    from avatar.guidance.synthetic.appearance import COLORS

    def distance(rgb, name):
        return float(torch.dist(torch.tensor(rgb, dtype=torch.float32), torch.tensor(COLORS[name])))

    return all(
        distance(region_means[region], color) < distance(region_means[region], other)
        for region, color in expected.items()
        for other in expected.values()
        if other != color
    )


def color_check_paraphrases(entries: list[dict], overrides: list[str], args: argparse.Namespace) -> dict:
    from hydra import compose, initialize_config_dir

    from avatar.body.anny_body import AnnyBody, AnnyBodyConfig
    from avatar.config import register_configs
    from avatar.guidance import build_guidance
    from avatar.guidance.evaluation import color_check, optimise_body_colors
    from avatar.utils.paths import PROJECT_ROOT

    register_configs()
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[o for o in overrides if o.startswith("guidance")])
    guidance = build_guidance(cfg.guidance)
    body = AnnyBody(AnnyBodyConfig(topology=args.color_topology))
    fit = {"steps": args.color_steps, "views": args.color_views, "size": args.color_size}
    seeds = range(args.color_seeds)
    rows = []  # (kind, prompt, expected, [right per seed], median RGB per region)
    pairs = list(dict.fromkeys((e["regions"]["torso"], e["regions"]["legs"]) for e in entries
                               if set(e["regions"]) == {"torso", "legs"}))  # fmt: skip
    for top, bottom in pairs:  # the tuned sentence of every colour pair the paraphrases use
        check = color_check(guidance, body, top, bottom, seeds=args.color_seeds, **fit)
        medians = {
            r: torch.tensor(v).median(0).values.tolist() for r, v in (("torso", check.torso), ("legs", check.legs))
        }
        rows.append(("tuned", check.prompt, {"torso": top, "legs": bottom}, check.right, medians))
    for entry in entries:
        fits = [optimise_body_colors(guidance, body, entry["prompt"], seed=s, **fit).region_means for s in seeds]
        right = [regions_right(m, entry["regions"]) for m in fits]
        medians = {r: torch.tensor([m[r] for m in fits]).median(0).values.tolist() for r in entry["regions"]}
        rows.append(("paraphrase", entry["prompt"], entry["regions"], right, medians))
    print("\n| colour prompt | kind | expected | right (seeds) | median RGB per region |\n|---|---|---|---|---|")
    for kind, prompt, expected, right, medians in rows:
        wanted = ", ".join(f"{r} {c}" for r, c in expected.items())
        rgb = "; ".join(f"{r} {', '.join(f'{v:.2f}' for v in medians[r])}" for r in expected)
        print(f"| {prompt} | {kind} | {wanted} | {sum(right)}/{len(right)} | {rgb} |")
    result = {}
    for name, kind in (("tuned", "tuned"), ("paraphrases", "paraphrase")):
        group = [r for r in rows if r[0] == kind]
        result[name] = {
            "prompts": len(group),
            "passed": sum(all(r[3]) for r in group),  # right from every seed
            "runs": sum(len(r[3]) for r in group),
            "runs_right": sum(sum(r[3]) for r in group),
        }
    return result


def print_summary(summary: dict) -> None:
    print("\n| check | tuned prompts | paraphrases |\n|---|---|---|")
    if "pose" in summary:
        t, p = summary["pose"]["tuned"], summary["pose"]["paraphrases"]
        print(f"| pose: mean hit rate (prompts) | {t['mean_hit_rate']:.2f} ({t['prompts']}) | "
              f"{p['mean_hit_rate']:.2f} ({p['prompts']}) |")  # fmt: skip
        print(f"| pose: mean AUC | {t['mean_auc']:.3f} | {p['mean_auc']:.3f} |")
    if "shape" in summary:
        t, p = summary["shape"]["tuned"], summary["shape"]["paraphrases"]
        print(f"| shape: directions right (prompts) | {t['right']}/{t['directions']} ({t['prompts']}) | "
              f"{p['right']}/{p['directions']} ({p['prompts']}) |")  # fmt: skip
    if "color" in summary:
        t, p = summary["color"]["tuned"], summary["color"]["paraphrases"]
        print(
            f"| colour: check passed on every seed (prompts) | {t['passed']}/{t['prompts']} | {p['passed']}/{p['prompts']} |"
        )
        print(f"| colour: runs right | {t['runs_right']}/{t['runs']} | {p['runs_right']}/{p['runs']} |")
