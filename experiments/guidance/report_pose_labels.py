"""Where the guidance model's pose words come from: per body word read from the pose codebook's
geometry (avatar.guidance.synthetic.poses), how many entries and corpus poses (cluster sizes)
carry it, and which of the mocap manifest's clip categories those poses come from.

A word whose poses mostly come from other kinds of clips teaches the model something else than
the word: "walking" (ankles a stride apart) also reads karate stances, lunges and dance steps.

    .venv/bin/python experiments/guidance/report_pose_labels.py          # ../shared/mocap/MANIFEST.tsv
    .venv/bin/python experiments/guidance/report_pose_labels.py --manifest <corpus>/MANIFEST.tsv --top 4
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

from avatar.guidance.synthetic.poses import BODY_WORDS, pose_words
from avatar.mocap.manifest import MANIFEST_NAME, read_manifest, source_clip
from avatar.priors.data import DEFAULT_MOCAP_ROOT
from avatar.priors.loading import load_codebook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", default=str(DEFAULT_MOCAP_ROOT / MANIFEST_NAME))
    parser.add_argument("--top", type=int, default=3, help="categories listed per word")
    args = parser.parse_args()
    categories = {
        clip: "|".join(sorted(info.categories)) or "(none)"
        for clip, info in read_manifest(args.manifest, "--manifest").items()
    }
    codebook = load_codebook()
    words = [w["body"] for w in pose_words(codebook.joints)]
    mass: dict[str, Counter] = defaultdict(Counter)  # word -> clip categories -> corpus poses
    entries = Counter(words)
    for word, source, size in zip(words, codebook.sources, codebook.cluster_sizes):
        mass[word][categories.get(source_clip(source), "(not in the manifest)")] += int(size)
    total = sum(int(s) for s in codebook.cluster_sizes)
    print(f"{len(words)} codebook entries standing for {total} corpus poses\n")
    print(
        "| body word | entries | corpus poses | from clips filed under (share of the word's poses) |\n|---|---|---|---|"
    )
    for word in [*BODY_WORDS, None]:
        m = mass[word]
        n = sum(m.values())
        top = ", ".join(f"{cat} {count / n:.2f}" for cat, count in m.most_common(args.top)) if n else "-"
        print(f"| {word or '(none)'} | {entries[word]} | {n} | {top} |")
    walk = sum(c for cat, c in mass["walking"].items() if "walk" in cat.split("|"))
    print(f"\n'walking' poses from clips filed under walk: {walk} of {sum(mass['walking'].values())}")


if __name__ == "__main__":
    main()
