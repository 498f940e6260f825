"""Synthetic image-caption data: colour vocabulary, garment colours in renders, pose words,
caption grammar and hard negatives, reproducibility (low-poly Anny)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from avatar.body.skeleton import CanonicalPose, forward_kinematics, named_pose, pose_names
from avatar.guidance.synthetic import (
    COLORS,
    BodyParts,
    SyntheticConfig,
    SyntheticRenderer,
    caption,
    change_negative,
    pose_words,
    sample_appearance,
    swap_negative,
    vertex_colors,
)
from avatar.render import MeshRenderConfig, MeshRenderer, orbit_cameras

LOW_POLY = "notoes_collapse5pc"
EXPECTED_WORDS = {
    "t_pose": ("arms spread", "standing"), "a_pose": (None, "standing"),
    "arms_raised": ("arms raised", "standing"), "squat": ("arms forward", "squatting"),
    "walk_stride": (None, "walking"), "kick": (None, "kicking"),
    "bend_forward": (None, "bending forward"),
}  # fmt: skip


@pytest.fixture(scope="module")
def synth(anny_low):
    return SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=32), body=anny_low)


def test_colour_vocabulary_has_real_rgb():
    assert len(COLORS) > 500
    assert COLORS["crimson"] == pytest.approx((220 / 255, 20 / 255, 60 / 255))
    assert COLORS["navy"] == pytest.approx((0.0, 0.0, 128 / 255))
    assert COLORS["teal"] == pytest.approx((0.0, 128 / 255, 128 / 255))
    assert "dark green" in COLORS and "darkgreen" not in COLORS


@pytest.mark.parametrize("source", ["template", "anny"])
def test_pose_words_of_named_poses(anny_low, source):
    poses = CanonicalPose.cat([named_pose(n) for n in pose_names()])
    joints = forward_kinematics(poses) if source == "template" else anny_low(None, poses).joints
    for name, words in zip(pose_names(), pose_words(joints)):
        assert (words["arms"], words["body"]) == EXPECTED_WORDS[name], name


def _torso_pixels(anny_low, synth, colors):
    out = anny_low(None, named_pose("a_pose"))
    cams = orbit_cameras(1, 2.5, 0.0, (0.0, 0.0, 0.0), 40.0)
    img = MeshRenderer(MeshRenderConfig(height=64, width=64)).render(
        out.vertices[0], anny_low.faces, cams, colors=colors, background="black", ambient=1.0, diffuse=0.0
    )
    torso_faces = synth.parts.mask(("torso",))[anny_low.faces].all(1)
    hit = img.face_id[0]
    on_torso = (hit >= 0) & torso_faces[hit.clamp_min(0)]
    assert on_torso.sum() > 20
    return img.rgb[0][:, on_torso].mean(1)


def test_red_top_renders_red_and_textureless_grey(anny_low, synth):
    attrs = sample_appearance(random.Random(0), 0.5)
    attrs.update(textureless=False, top={"kind": "long sleeves", "color": "red", "pattern": "solid"})
    red = _torso_pixels(anny_low, synth, vertex_colors(attrs, synth.parts))
    assert red[0] > 0.9 and red[1] < 0.1 and red[2] < 0.1
    attrs["textureless"] = True
    grey = _torso_pixels(anny_low, synth, vertex_colors(attrs, synth.parts))
    assert torch.allclose(grey, torch.full((3,), 0.7), atol=1e-4)


def test_captions_mention_only_present_attributes(synth):
    batch = synth.generate(12, torch.Generator().manual_seed(3))
    assert batch.images.shape == (12, 3, 32, 32)
    assert 0.0 <= batch.images.min() and batch.images.max() <= 1.0
    rng = random.Random(0)
    for attrs in batch.attributes:
        for _ in range(20):
            text, plan = caption(attrs, rng)
            for g in plan.garments:
                assert attrs[g]["color"] in text
            assert set(plan.garments) <= {"top", "bottom", "shoes"}
            if attrs["textureless"]:
                assert not plan.garments and not plan.hair
            for key in plan.pose:
                assert attrs["pose"][key] in text
            if attrs["view"] == "face":
                assert text.startswith("the face of") and set(plan.garments) <= {"top"} and not plan.pose
            elif attrs["view"] == "back":
                assert text.startswith("the back of")


def test_hard_negatives_differ_by_the_swap_only(synth):
    batch = synth.generate(12, torch.Generator().manual_seed(4))
    rng, swaps = random.Random(1), 0
    for attrs in batch.attributes:
        attrs = copy.deepcopy(attrs)
        attrs.update(textureless=False, view="body")
        attrs["top"]["color"], attrs["bottom"]["color"] = "red", "blue"
        attrs["top"]["pattern"] = attrs["bottom"]["pattern"] = "solid"
        attrs["shoes"] = {"kind": "barefoot", "color": None, "pattern": "solid"}  # two garments only
        attrs["hair"] = None  # "red hair" would be swapped by the string check
        text, plan = caption(attrs, rng)
        negative = swap_negative(plan, attrs, rng)
        if {"top", "bottom"} <= set(plan.garments):
            swaps += 1
            assert negative == text.replace("red", "@").replace("blue", "red").replace("@", "blue")
        else:
            assert negative is None
        changed = change_negative(plan, attrs, rng)
        if changed is not None:
            assert changed != text and len(changed.split()) >= len(text.split()) - 2
    assert swaps > 0


def test_generation_is_reproducible(synth):
    a = synth.generate(4, torch.Generator().manual_seed(7))
    b = synth.generate(4, torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images) and a.captions == b.captions
