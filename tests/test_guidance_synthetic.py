"""Synthetic image-caption data: colour vocabulary, garment colours in renders, pose words,
caption grammar and hard negatives, reproducibility, held-out attribute combinations
(low-poly Anny)."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import replace

import pytest
import torch

from avatar.body.skeleton import JOINT_INDEX, CanonicalPose, forward_kinematics, named_pose, pose_names
from avatar.guidance.synthetic import (
    ARM_WORDS,
    BODY_WORDS,
    COLORS,
    HELD_OUT_COLOR_PAIRS,
    HELD_OUT_KIND_PATTERNS,
    SyntheticConfig,
    SyntheticRenderer,
    all_swap_negatives,
    caption,
    change_negative,
    color_family,
    held_out_combinations,
    is_held_out,
    pose_negative,
    pose_words,
    sample_appearance,
    sample_outfit,
    swap_negative,
    swap_pair,
    vertex_colors,
)
from avatar.guidance.synthetic.appearance import TOP_KINDS
from avatar.guidance.synthetic.captions import PATTERN_WORDS, POSE_PHRASES, pose_phrase
from avatar.guidance.synthetic.generator import clips_in_category, source_clip
from avatar.priors.loading import load_codebook
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


def test_color_vocabulary_has_real_rgb():
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
        if attrs["view"] != "face":  # the camera's side: 0 = the front, |azimuth| > 90 = behind
            assert (abs(attrs["azimuth_deg"]) > 90) == (attrs["view"] == "back"), attrs["azimuth_deg"]


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
        state = rng.getstate()
        negative = swap_negative(plan, attrs, rng)
        rng.setstate(state)
        assert swap_pair(plan, attrs, rng) == (tuple(plan.garments[:2]) if negative else None)  # caption order
        if {"top", "bottom"} <= set(plan.garments):
            swaps += 1
            assert negative == text.replace("red", "@").replace("blue", "red").replace("@", "blue")
        else:
            assert negative is None
        changed = change_negative(plan, attrs, rng)
        if changed is not None:
            assert changed != text and len(changed.split()) >= len(text.split()) - 2
    assert swaps > 0


def test_all_swap_negatives_swap_every_pair_of_differently_colored_garments(synth):
    attrs = copy.deepcopy(synth.generate(1, torch.Generator().manual_seed(4)).attributes[0])
    attrs.update(textureless=False, view="body", hair=None)
    for garment, color in (("top", "red"), ("bottom", "blue"), ("shoes", "green")):
        attrs[garment] = {
            "kind": {"shoes": "boots"}.get(garment, attrs[garment]["kind"]),
            "color": color,
            "pattern": "solid",
        }
    rng = random.Random(3)
    text, plan = caption(attrs, rng)
    while len(plan.garments) < 3:
        text, plan = caption(attrs, rng)
    negatives = all_swap_negatives(plan, attrs)
    assert len(negatives) == 3 and len(set(negatives)) == 3 and text not in negatives
    words = [w.strip(",.") for w in text.split()]
    for negative in negatives:  # two of the three colour words trade places, the third stays
        swapped = [w.strip(",.") for w in negative.split()]
        moved = [c for c in ("red", "blue", "green") if words.index(c) != swapped.index(c)]
        assert len(moved) == 2 and sorted(text.split()) == sorted(negative.split())
    attrs["shoes"]["color"] = "blue"  # the bottom and the shoes now share a colour: no swap between them
    assert len(all_swap_negatives(plan, attrs)) == 2


def test_change_negative_can_copy_another_garments_color(synth):
    """copy_prob=1: the changed garment takes the other mentioned garment's colour (a one-colour
    outfit, the drift of a failed colour fit); copy_prob=0: some other distant colour."""
    attrs = copy.deepcopy(synth.generate(1, torch.Generator().manual_seed(4)).attributes[0])
    attrs.update(textureless=False, view="body", hair=None)
    attrs["top"].update(color="red", pattern="solid")
    attrs["bottom"].update(color="blue", pattern="solid")
    attrs["shoes"] = {"kind": "barefoot", "color": None, "pattern": "solid"}
    rng = random.Random(0)
    plan = None
    while plan is None or set(plan.garments) != {"top", "bottom"} or plan.pose:
        text, plan = caption(attrs, rng, pose_prob=0.0)
    copied = {change_negative(plan, attrs, rng, copy_prob=1.0) for _ in range(20)}
    assert copied == {text.replace("red", "blue"), text.replace("blue", "red")}
    fresh = [change_negative(plan, attrs, rng, copy_prob=0.0) for _ in range(20)]
    assert all(t != text for t in fresh)
    assert sum(t in copied for t in fresh) < 5  # another colour, almost never the other garment's


def test_pose_negative_changes_one_pose_word_within_its_group(synth):
    batch = synth.generate(24, torch.Generator().manual_seed(5))
    rng, changed = random.Random(2), 0
    for attrs in batch.attributes:
        text, plan = caption(attrs, rng)
        negative = pose_negative(plan, attrs, rng)
        if not plan.pose:
            assert negative is None
            continue
        changed += 1
        said = {attrs["pose"][k] for k in plan.pose}
        removed = [w for w in said if w not in negative]
        new = [w for w in (*BODY_WORDS, *ARM_WORDS) if w in negative and w not in text]
        assert len(removed) == 1 and len(new) == 1, (text, negative)
        assert (new[0] in BODY_WORDS) == (removed[0] in BODY_WORDS), (text, negative)  # same group
    assert changed > 0


def test_pose_balance_draws_rare_pose_words_more_often(anny_low, synth):
    balanced = SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=16, pose_balance=0.5), body=anny_low)
    assert synth.codebook_weights is None  # the default draws uniformly
    weights = balanced.codebook_weights
    assert weights.shape == (synth.codebook_poses.batch_size,) and weights.sum().item() == pytest.approx(1.0)
    body = [w["body"] for w in pose_words(load_codebook().joints)]
    share = {word: body.count(word) / len(body) for word in set(body)}
    mass = {word: sum(w for w, b in zip(weights.tolist(), body) if b == word) for word in share}
    rarest, commonest = min(share, key=share.get), max(share, key=share.get)
    assert mass[rarest] > 2 * share[rarest] and mass[commonest] < share[commonest], (share, mass)
    drawn = balanced.generate(64, torch.Generator().manual_seed(0)).attributes
    assert sum(a["pose"]["body"] == commonest for a in drawn) < share[commonest] * 64
    with pytest.raises(ValueError, match="pose_balance"):
        SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=16, pose_balance=-1.0), body=anny_low)


def test_pose_frequency_draws_poses_as_often_as_the_corpus_holds_them(anny_low):
    codebook = load_codebook()
    sizes = torch.as_tensor(codebook.cluster_sizes, dtype=torch.float64)
    natural = SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=16, pose_frequency=1.0), body=anny_low)
    assert torch.allclose(natural.codebook_weights, sizes / sizes.sum())
    half = SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=16, pose_frequency=0.5), body=anny_low)
    big, small = int(sizes.argmax()), int(sizes.argmin())
    ratio = half.codebook_weights[big] / half.codebook_weights[small]
    assert ratio.item() == pytest.approx((sizes[big] / sizes[small]).sqrt().item())
    with pytest.raises(ValueError, match="pose_frequency"):
        SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, image_size=16, pose_frequency=-0.5), body=anny_low)


def test_walking_is_only_said_where_the_view_shows_the_stride(anny_low):
    def body_words(within_deg: float) -> list:
        synth = SyntheticRenderer(
            SyntheticConfig(topology=LOW_POLY, image_size=16, stride_view_deg=within_deg), body=anny_low
        )
        return [
            (a["pose"]["body"], a["azimuth_deg"], a["view"])
            for a in synth.generate(48, torch.Generator().manual_seed(5)).attributes
        ]

    everywhere, sided = body_words(0.0), body_words(45.0)
    assert [w for w, _, _ in everywhere].count("walking") >= 3  # the same draws, labelled both ways
    for (before, azimuth, view), (after, _, _) in zip(everywhere, sided):
        side = abs(math.sin(math.radians(azimuth))) > math.sin(math.radians(45.0))
        assert after == (before if side or before != "walking" else None), (before, after, azimuth, view)
    assert "walking" not in [w for w, _, _ in body_words(90.0)]


def _manifest(path, rows: dict[str, str]):
    lines = ["rel_path\tframes\tcategories"] + [f"cmu_asfamc/{clip}.amc\t100\t{cats}" for clip, cats in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_clips_in_category_reads_the_manifest(tmp_path):
    manifest = _manifest(
        tmp_path / "MANIFEST.tsv", {"07_09": "walk", "135_09": "punch/box/martial/sword", "49_22": "dance|walk"}
    )
    sources = [
        "/cache/cmu_asfamc/07_09.amc @ frame 3",
        "/cache/cmu_asfamc/135_09.amc @ frame 0",
        "/cache/cgspeed_daz/49_22.bvh @ frame 8",
        "/cache/x/99_99.bvh @ frame 1",
    ]
    assert clips_in_category(sources, manifest, "walk").tolist() == [True, False, True, False]
    with pytest.raises(FileNotFoundError, match="walking_clips"):
        clips_in_category(sources, tmp_path / "missing.tsv", "walk")
    (tmp_path / "other.tsv").write_text("path\tkind\nx\ty\n")
    with pytest.raises(ValueError, match="rel_path/categories"):
        clips_in_category(sources, tmp_path / "other.tsv", "walk")


def test_walking_is_only_said_for_strides_from_walk_clips(anny_low, tmp_path):
    clips = sorted({source_clip(s) for s in load_codebook().sources})
    no_walks = _manifest(tmp_path / "none.tsv", {clip: "dance" for clip in clips})
    all_walks = _manifest(tmp_path / "all.tsv", {clip: "walk" for clip in clips})

    def attributes(manifest: str) -> list:
        cfg = SyntheticConfig(topology=LOW_POLY, image_size=16, named_pose_prob=0.0, walking_clips=manifest)
        return SyntheticRenderer(cfg, body=anny_low).generate(48, torch.Generator().manual_seed(5)).attributes

    geometry = [a["pose"]["body"] for a in attributes("")]
    assert geometry.count("walking") >= 3
    assert [a["pose"]["body"] for a in attributes(str(all_walks))] == geometry  # the same draws
    assert [a["pose"]["body"] for a in attributes(str(no_walks))] == [None if w == "walking" else w for w in geometry]


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_pose_mention_probability(synth, prob):
    batch = synth.generate(12, torch.Generator().manual_seed(3))
    rng = random.Random(0)
    for attrs in batch.attributes:
        text, plan = caption(attrs, rng, pose_prob=prob)
        said = (
            {k for k in ("arms", "body") if attrs["pose"][k] is not None} if prob and attrs["view"] != "face" else set()
        )
        assert set(plan.pose) == said, text


def test_pose_phrasings_vary_and_a_pose_negative_keeps_the_phrasing_slot(synth):
    batch = synth.generate(24, torch.Generator().manual_seed(5))
    rng, phrases, words, negatives = random.Random(3), set(), set(), 0
    for attrs in batch.attributes:
        for _ in range(8):
            text, plan = caption(attrs, rng, pose_prob=1.0, pose_phrasings=True)
            for group in plan.pose:
                phrase = pose_phrase(plan, attrs, group)
                assert phrase in POSE_PHRASES[attrs["pose"][group]] and phrase in text, text
                phrases.add(phrase)
                words.add(attrs["pose"][group])
            negative = pose_negative(plan, attrs, rng)
            if negative is None:
                continue
            negatives += 1
            missing = [g for g in plan.pose if pose_phrase(plan, attrs, g) not in negative]
            assert len(missing) == 1, (text, negative)
            group, slot = missing[0], plan.pose_phrasing[missing[0]]
            replacements = [w for w in POSE_PHRASES if w != attrs["pose"][group]
                            and POSE_PHRASES[w][int(slot * len(POSE_PHRASES[w]))] in negative]  # fmt: skip
            assert replacements, (text, negative)
    assert negatives > 0 and len(phrases) > len(words) + 3  # verb phrases, not only the words
    # Off (the default), a pose word is said as itself.
    text, plan = caption(batch.attributes[0], random.Random(0), pose_prob=1.0)
    assert all(
        pose_phrase(plan, batch.attributes[0], g) == POSE_PHRASES[batch.attributes[0]["pose"][g]][0] for g in plan.pose
    )


def test_lower_body_views_frame_the_legs_and_caption_only_what_they_show(anny_low):
    legs = SyntheticRenderer(
        SyntheticConfig(topology=LOW_POLY, image_size=32, face_prob=0.0, legs_prob=1.0), body=anny_low
    )
    batch = legs.generate(24, torch.Generator().manual_seed(3))
    assert {a["view"] for a in batch.attributes} == {"legs"}
    assert sum(bool(p.garments) for p in batch.plans) >= 12
    for plan in batch.plans:
        assert "top" not in plan.garments and not plan.hair and "arms" not in plan.pose

    out = anny_low()  # the same body seen 16 times as a body view and as a lower-body view
    vertices, joints = out.vertices.float().expand(16, -1, -1), out.joints.float().expand(16, -1, -1)
    spans = {}
    for name, prob in (("body", 0.0), ("legs", 1.0)):
        synth = SyntheticRenderer(replace(legs.cfg, legs_prob=prob), body=anny_low)
        cameras, info = synth._cameras(vertices, joints, torch.Generator().manual_seed(4))
        assert info["is_legs"].all() == bool(prob) and info["is_legs"].any() == bool(prob)
        ends = joints[0, [JOINT_INDEX["pelvis"], JOINT_INDEX["left_ankle"]]]
        pixels, _ = cameras.project(ends, 64, 64)
        spans[name] = (pixels[:, 0] - pixels[:, 1]).norm(dim=-1).median()
    # pelvis to ankle is about half the body's height: framed alone it spans ~twice the pixels
    assert spans["legs"] > 1.5 * spans["body"], spans


def test_generation_is_reproducible(synth):
    a = synth.generate(4, torch.Generator().manual_seed(7))
    b = synth.generate(4, torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images) and a.captions == b.captions


# ---- held-out attribute combinations -------------------------------------------------------
@pytest.fixture(scope="module")
def split(anny_low):
    """64 renders (16 px) of training and of held-out combinations."""
    out = {}
    for mode in ("train", "held_out"):
        renderer = SyntheticRenderer(
            SyntheticConfig(topology=LOW_POLY, image_size=16, combinations=mode), body=anny_low
        )
        out[mode] = renderer.generate(64, torch.Generator().manual_seed(11))
    return out


def test_color_families_of_everyday_colors():
    expected = {
        "red": "red", "crimson": "red", "maroon": "red", "pink": "pink", "orange": "orange",
        "yellow": "yellow", "gold": "yellow", "green": "green", "dark green": "green", "teal": "cyan",
        "blue": "blue", "navy": "blue", "sky blue": "blue", "purple": "purple", "black": "neutral",
        "white": "neutral", "grey": "neutral",
    }  # fmt: skip
    assert {n: color_family(n) for n in expected} == expected


def test_train_mode_never_and_held_out_mode_always_shows_a_held_out_combination(split):
    assert not any(is_held_out(a) for a in split["train"].attributes)
    assert all(is_held_out(a) and not a["textureless"] for a in split["held_out"].attributes)
    color_pair = {" + " in c for a in split["held_out"].attributes for c in held_out_combinations(a)}
    assert color_pair == {True, False}  # colour pairs and kind-pattern pairs both occur
    textureless = sample_appearance(random.Random(0), 0.5)
    textureless.update(textureless=True, top={"kind": "sleeveless", "color": "green", "pattern": "checks"})
    assert not is_held_out(textureless)  # a grey render shows no combination


def test_held_out_values_occur_in_training_only_the_combination_is_new(split):
    """Every colour family, garment kind and pattern of a held-out combination is drawn in
    ``train`` mode on the same garment; only the pair is missing."""
    rng = random.Random(0)
    train = [*split["train"].attributes, *(sample_outfit(rng, rng.random(), combinations="train") for _ in range(2000))]
    train = [a for a in train if not a["textureless"]]
    families = {g: {color_family(a[g]["color"]) for a in train} for g in ("top", "bottom")}
    kinds = {(g, a[g]["kind"]) for a in train for g in ("top", "bottom")}
    patterns = {(g, a[g]["pattern"]) for a in train for g in ("top", "bottom")}
    for top, bottom in HELD_OUT_COLOR_PAIRS:
        assert top in families["top"] and bottom in families["bottom"]
        assert not any(
            (color_family(a["top"]["color"]), color_family(a["bottom"]["color"])) == (top, bottom) for a in train
        )
    for kind, pattern in HELD_OUT_KIND_PATTERNS:
        garment = "top" if kind in TOP_KINDS else "bottom"
        assert (garment, kind) in kinds and (garment, pattern) in patterns
        assert not any((a[garment]["kind"], a[garment]["pattern"]) == (kind, pattern) for a in train)
    # The colour names of held-out renders are drawn in training too (with another partner).
    names = {g: {a[g]["color"] for a in train} for g in ("top", "bottom")}
    held = split["held_out"].attributes
    assert (
        sum(a["top"]["color"] in names["top"] and a["bottom"]["color"] in names["bottom"] for a in held)
        > len(held) // 2
    )


def test_combination_modes_are_deterministic_and_all_is_the_plain_sampler(anny_low, split):
    for mode, batch in split.items():
        renderer = SyntheticRenderer(
            SyntheticConfig(topology=LOW_POLY, image_size=16, combinations=mode), body=anny_low
        )
        again = renderer.generate(64, torch.Generator().manual_seed(11))
        assert torch.equal(again.images, batch.images) and again.captions == batch.captions
        assert again.attributes == batch.attributes
    for seed in range(20):
        assert sample_outfit(random.Random(seed), 0.6, combinations="all") == sample_appearance(
            random.Random(seed), 0.6
        )
    with pytest.raises(ValueError, match="combinations"):
        SyntheticRenderer(SyntheticConfig(topology=LOW_POLY, combinations="unseen"), body=anny_low)


def test_captions_of_held_out_renders_mention_their_attributes(split):
    rng, both = random.Random(2), 0
    for attrs, text, plan in zip(split["held_out"].attributes, split["held_out"].captions, split["held_out"].plans):
        for g in plan.garments:
            assert attrs[g]["color"] in text
            if attrs[g]["pattern"] != "solid":
                assert plan.pattern_words[g] in PATTERN_WORDS[attrs[g]["pattern"]] and plan.pattern_words[g] in text
        for _ in range(5):
            text, plan = caption(attrs, rng)
            if "top" in plan.garments and "bottom" in plan.garments:
                both += 1
                assert attrs["top"]["color"] in text and attrs["bottom"]["color"] in text
    assert both > 0
