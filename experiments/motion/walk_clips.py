"""How far the motion codebook's walk clips travel: the clips whose description names "a person
walking" (share >= 0.9) and their travel in 2 s by foot contacts (docs/experiments/motion.md,
2026-12-05 evening: 19 of 512 clips, median 0.81 m, why the codebook went to 2,048 clips).

    .venv/bin/python experiments/motion/walk_clips.py [--codebook <motion_codebook.npz>]
"""

from __future__ import annotations

import argparse

from avatar.mocap.contact import contact_travel_distance
from avatar.priors.loading import PriorConfig, load_motion_codebook
from avatar.priors.motion_descriptions import description_distances


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codebook", default="", help="a motion codebook .npz (default: the shipped one)")
    args = p.parse_args()
    book = load_motion_codebook(PriorConfig(motion_codebook=args.codebook))
    share = 1.0 - description_distances("a person walking", book.descriptions, min_share=0.9)
    travel = sorted(contact_travel_distance(book.rotations[i, :60].float()) for i in range(len(book)) if share[i] > 0)
    if not travel:
        raise SystemExit("no clip of this codebook is described as a walk")
    q = [round(travel[int(f * (len(travel) - 1))], 2) for f in (0, 0.25, 0.5, 0.75, 1)]
    print(f"{len(travel)} walk-described clips of {len(book)}; travel in 2 s (m) min/quartiles/max {q}; "
          f">= 1 m: {sum(t >= 1 for t in travel)}")  # fmt: skip


if __name__ == "__main__":
    main()
