"""Root travel and height from foot contacts (avatar.mocap.contact) on a captured walk with its
translation removed, as the motion stage hands clips over: how much of the captured distance
comes back, and foot skating (avatar.metrics.motion.foot_skating) in place, with the travel at
a constant height, with the foot-contact height (the skeleton-level height; the animate stage
then stands each in-place frame on the avatar mesh's lowest point) and as captured.

    .venv/bin/python experiments/mocap/report_foot_contact.py            # CMU 07_01 from ../shared/mocap
    .venv/bin/python experiments/mocap/report_foot_contact.py --bvh <clip.bvh>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from avatar.body.skeleton import CanonicalPose, forward_kinematics
from avatar.metrics.motion import foot_skating
from avatar.mocap.bvh import read_bvh
from avatar.mocap.contact import travel_from_foot_contacts
from avatar.mocap.dataset import find_motion_files
from avatar.mocap.retarget import retarget
from avatar.priors.data import DEFAULT_MOCAP_ROOT

CORPUS_WALK = "cgspeed_daz/Przestr__motion-capture/07_01.bvh"  # in the shared corpus (extracted once, cached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bvh", help="a BVH clip (default: CMU 07_01, a straight walk, from the shared corpus)")
    args = parser.parse_args()
    if args.bvh:
        path = Path(args.bvh)
    else:
        path = next(p for p in find_motion_files(DEFAULT_MOCAP_ROOT, ("bvh",)) if p.as_posix().endswith(CORPUS_WALK))
    walk = retarget(read_bvh(path))
    flat = walk.transl.clone()
    flat[:] = walk.transl[0]  # in place, no vertical motion: as the motion stage hands clips over
    travel = travel_from_foot_contacts(walk.rotations, flat)
    constant_height = travel.clone()
    constant_height[:, 2] = flat[:, 2]

    def skating(transl) -> float:
        return foot_skating(forward_kinematics(CanonicalPose(walk.rotations, transl)), walk.fps)["skate_speed"]

    captured = float((walk.transl[-1, :2] - walk.transl[0, :2]).norm())
    print(
        f"distance: captured {captured:.2f} m, from the foot contacts {float((travel[-1, :2] - travel[0, :2]).norm()):.2f} m"
    )
    print(f"foot skating (m/s): in place {skating(flat):.2f}, travel at a constant height {skating(constant_height):.2f}, "
          f"travel with the foot-contact height {skating(travel):.2f}, as captured {skating(walk.transl):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
