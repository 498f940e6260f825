"""Caption grammar for synthetic renders, held-out paraphrases and hard negatives.

A caption is made in two steps: :func:`plan_caption` draws the *choices* (template, which
attributes to mention, garment synonyms, word order) and :func:`render_caption` writes the
text from a plan and the attributes. Hard negatives re-render the same plan with altered
attributes, so a negative differs from its positive only by the alteration.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass, field

from avatar.guidance.synthetic.appearance import HAIR_COLORS, AppearanceConfig, color_distance, sample_color
from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS

# AvatarCLIP's templates, picked by the view; then plain paraphrases for body views.
FACE_TEMPLATE = "the face of {}"
BACK_TEMPLATE = "the back of {}"
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a 3D rendering of {} in unreal engine", "{}", "a photo of {}", "a render of {}",
)  # fmt: skip
# Never used in training: to measure paraphrase generalisation.
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "an image of {}", "a picture showing {}", "a 3D model of {}", "a digital avatar of {}",
)  # fmt: skip

TOP_NAMES = {
    "long sleeves": ("shirt", "top", "sweater", "long-sleeved shirt"),
    "short sleeves": ("t-shirt", "top", "shirt", "short-sleeved shirt"),
    "sleeveless": ("tank top", "sleeveless top"),
}
BOTTOM_NAMES = {"trousers": ("trousers", "pants", "jeans"), "shorts": ("shorts",), "skirt": ("skirt",)}
SHOE_NAMES = {"shoes": ("shoes",), "sneakers": ("sneakers", "shoes"), "boots": ("boots",)}
PATTERN_WORDS = {
    "horizontal stripes": ("striped",), "vertical stripes": ("vertically striped",),
    "checks": ("checked", "plaid"), "dots": ("polka-dot", "dotted"),
}  # fmt: skip
PLURAL = {"trousers", "pants", "jeans", "shorts", "shoes", "sneakers", "boots"}
GARMENTS = ("top", "bottom", "shoes")
# Phrasings of the pose words (``pose_phrasings``): the first is the word itself as the grammar
# says it by default; the others are the verb phrases people type ("a person raising both arms").
POSE_PHRASES: dict[str, tuple[str, ...]] = {
    "arms raised": ("with arms raised", "raising both arms", "with both arms up", "with both hands above the head"),
    "one arm raised": ("with one arm raised", "raising one arm", "with one hand up"),
    "arms spread": ("with arms spread", "with arms stretched out to the sides", "spreading both arms"),
    "arms forward": ("with arms forward", "reaching forward with both arms", "with arms stretched out in front"),
    "arms down": ("with arms down", "with arms at the sides", "with arms hanging down"),
    "squatting": ("squatting", "crouching", "in a deep squat"),
    "sitting": ("sitting", "seated", "sitting down"),
    "kicking": ("kicking", "kicking a leg out", "doing a kick"),
    "walking": ("walking", "taking a step", "striding", "mid-stride"),
    "bending forward": ("bending forward", "bending over", "leaning forward"),
    "standing": ("standing", "standing upright", "standing still"),
}  # fmt: skip


def named_pose_words(text: str) -> set[str]:
    """The pose words one of whose phrasings ``text`` contains (whole words, any case)."""
    return {word for word, phrases in POSE_PHRASES.items()
            if any(re.search(rf"\b{re.escape(p)}\b", text, flags=re.IGNORECASE) for p in phrases)}  # fmt: skip


def contrast_phrases(text: str) -> list[str]:
    """Zero-shot-classification alternatives to a prompt: each pose word's first phrasing,
    except the words the prompt itself names ("raising both arms" leaves out "with arms raised")."""
    named = named_pose_words(text)
    return [phrases[0] for word, phrases in POSE_PHRASES.items() if word not in named]


# Words whose meaning comes from phenotypes (Anny: gender 0 male..1 female, age 1/3 child,
# 2/3 adult, 1 old). A word is only said beyond these thresholds.
CHILD_AGE, OLD_AGE = 0.45, 0.9
MAN_GENDER, WOMAN_GENDER = 0.3, 0.7
LOW, HIGH = 0.2, 0.8  # height: short/tall, weight: slim/heavy, muscle: -/muscular


def subject_noun(phenotype: dict[str, float]) -> str:
    g, age = phenotype["gender"], phenotype["age"]
    sex = "man" if g < MAN_GENDER else ("woman" if g > WOMAN_GENDER else None)
    if age < CHILD_AGE:
        return {"man": "boy", "woman": "girl"}.get(sex, "child")
    noun = sex or "person"
    return f"old {noun}" if age > OLD_AGE else noun


def shape_words(phenotype: dict[str, float]) -> list[str]:
    words = []
    if phenotype["height"] > HIGH:
        words.append("tall")
    elif phenotype["height"] < LOW:
        words.append("short")
    if phenotype["weight"] > HIGH:
        words.append("heavy")
    elif phenotype["weight"] < LOW:
        words.append("slim")
    if phenotype["muscle"] > HIGH:
        words.append("muscular")
    return words


@dataclass
class CaptionPlan:
    """The choices behind one caption (see the module docstring)."""

    template: str
    shape: list[str] = field(default_factory=list)  # shape words said
    garments: list[str] = field(default_factory=list)  # garments said, in order
    names: dict[str, str] = field(default_factory=dict)  # garment -> synonym
    pattern_words: dict[str, str] = field(default_factory=dict)  # garment -> pattern word
    second_color: dict[str, bool] = field(default_factory=dict)  # say a pattern's 2nd colour
    hair: bool = False
    pose: list[str] = field(default_factory=list)  # "arms"/"body" words said
    # Per pose group, where in its word's POSE_PHRASES list the phrasing is taken (a fraction
    # in [0, 1), so a changed word of a negative keeps the slot); 0 = the word itself.
    pose_phrasing: dict[str, float] = field(default_factory=dict)
    verb: str = "wearing"  # "wearing" or "in"


def plan_caption(
    attrs: dict, rng: random.Random, held_out: bool = False, pose_prob: float = 0.5, pose_phrasings: bool = False
) -> CaptionPlan:
    """Draw the choices of a caption for ``attrs`` (a generator sample's attributes).

    Face views use AvatarCLIP's face template and may only mention the head and the top;
    back views the back template; body and lower-body ("legs") views a training (or
    ``held_out``) paraphrase, lower-body views mentioning only the bottom, the shoes and the
    body's pose word (no hair, no arms).
    Every attribute is mentioned with probability 1/2 (garments 2/3, pose words ``pose_prob``)
    and none is invented; ``pose_phrasings`` draws a phrasing of each pose word from
    POSE_PHRASES (else the word itself, with no extra draw from ``rng``).
    """
    view = attrs["view"]
    templates = HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES
    template = {"face": FACE_TEMPLATE, "back": BACK_TEMPLATE}.get(view) or rng.choice(templates)
    plan = CaptionPlan(template=template, verb=rng.choice(("wearing", "in")))
    plan.shape = [w for w in shape_words(attrs["phenotype"]) if rng.random() < 0.5]
    if not attrs["textureless"]:
        visible = {"face": ("top",), "legs": ("bottom", "shoes")}.get(view, GARMENTS)
        for g in visible:
            garment = attrs[g]
            if garment["kind"] == "barefoot" or rng.random() > 2 / 3:
                continue
            plan.garments.append(g)
            table = {"top": TOP_NAMES, "bottom": BOTTOM_NAMES, "shoes": SHOE_NAMES}[g]
            plan.names[g] = rng.choice(table[garment["kind"]])
            if garment["pattern"] != "solid":
                plan.pattern_words[g] = rng.choice(PATTERN_WORDS[garment["pattern"]])
                plan.second_color[g] = rng.random() < 0.5
        rng.shuffle(plan.garments)
        plan.hair = view != "legs" and attrs["hair"] is not None and rng.random() < 0.5
    if view != "face":
        groups = ("body",) if view == "legs" else ("arms", "body")
        plan.pose = [k for k in groups if attrs["pose"][k] is not None and rng.random() < pose_prob]
        if pose_phrasings:
            plan.pose_phrasing = {k: rng.random() for k in plan.pose}
    return plan


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def garment_phrase(garment: dict, plan: CaptionPlan, which: str) -> str:
    name = plan.names[which]
    words = [garment["color"]]
    if which in plan.pattern_words:
        if plan.second_color[which]:
            words = [garment["color"], "and", garment["color2"]]
        words.append(plan.pattern_words[which])
    phrase = " ".join([*words, name])
    return phrase if name in PLURAL else with_article(phrase)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def pose_phrase(plan: CaptionPlan, attrs: dict, group: str) -> str:
    phrases = POSE_PHRASES[attrs["pose"][group]]
    return phrases[int(plan.pose_phrasing.get(group, 0.0) * len(phrases))]


def render_caption(plan: CaptionPlan, attrs: dict) -> str:
    subject = with_article(" ".join([*plan.shape, subject_noun(attrs["phenotype"])]))
    if plan.hair:
        subject += f" with {attrs['hair']['color']} hair"
    if plan.garments:
        subject += f" {plan.verb} " + _join([garment_phrase(attrs[g], plan, g) for g in plan.garments])
    if "body" in plan.pose:
        subject += ", " + pose_phrase(plan, attrs, "body")
    if "arms" in plan.pose:
        arms = pose_phrase(plan, attrs, "arms")
        if "body" not in plan.pose:
            subject += ", " + arms
        else:  # "walking with arms raised", "walking and raising both arms"
            subject += (" " if arms.startswith("with ") else " and ") + arms
    return plan.template.format(subject)


def caption(
    attrs: dict, rng: random.Random, held_out: bool = False, pose_prob: float = 0.5, pose_phrasings: bool = False
) -> tuple[str, CaptionPlan]:
    """A caption of ``attrs`` and the plan it was written from."""
    plan = plan_caption(attrs, rng, held_out, pose_prob, pose_phrasings)
    return render_caption(plan, attrs), plan


# ---- hard negatives ------------------------------------------------------------------------
def swap_negative(plan: CaptionPlan, attrs: dict, rng: random.Random) -> str | None:
    """The caption with the main colours of two mentioned garments swapped ("a red shirt and blue
    trousers" -> "a blue shirt and red trousers"); None if fewer than two garments with
    different colours are mentioned."""
    pair = swap_pair(plan, attrs, rng)
    return None if pair is None else swapped_caption(plan, attrs, *pair)


def swap_pairs(plan: CaptionPlan, attrs: dict) -> list[tuple[str, str]]:
    """Every pair of mentioned garments (in the caption's order) with different colours."""
    return [
        (a, b)
        for i, a in enumerate(plan.garments)
        for b in plan.garments[i + 1 :]
        if attrs[a]["color"] != attrs[b]["color"]
    ]


def swap_pair(plan: CaptionPlan, attrs: dict, rng: random.Random) -> tuple[str, str] | None:
    """The two mentioned garments (in the caption's order) whose colours ``swap_negative`` swaps."""
    pairs = swap_pairs(plan, attrs)
    return rng.choice(pairs) if pairs else None


def all_swap_negatives(plan: CaptionPlan, attrs: dict) -> list[str]:
    """The caption once per pair in ``swap_pairs`` with that pair's colours swapped (a caption
    naming three garments of different colours gets three)."""
    return [swapped_caption(plan, attrs, a, b) for a, b in swap_pairs(plan, attrs)]


def swapped_caption(plan: CaptionPlan, attrs: dict, a: str, b: str) -> str:
    swapped = copy.deepcopy(attrs)
    swapped[a]["color"], swapped[b]["color"] = attrs[b]["color"], attrs[a]["color"]
    return render_caption(plan, swapped)


def change_negative(
    plan: CaptionPlan, attrs: dict, rng: random.Random, min_distance: float = 0.35, copy_prob: float = 0.0
) -> str | None:
    """The caption with one mentioned attribute changed: a garment's colour (to a colour at
    least ``min_distance`` away in RGB; with chance ``copy_prob`` to another mentioned garment's
    colour, "a red shirt and blue trousers" -> "a blue shirt and blue trousers": the one-colour
    body a colour fit drifts to), the hair colour, or the body pose word. None if the caption
    mentions none of them."""
    options = [("garment", g) for g in plan.garments]
    if plan.hair:
        options.append(("hair", None))
    if "body" in plan.pose:
        options.append(("pose", None))
    if not options:
        return None
    kind, which = rng.choice(options)
    changed = copy.deepcopy(attrs)
    if kind == "garment":
        old = attrs[which]["color"]
        others = [attrs[g]["color"] for g in plan.garments if color_distance(attrs[g]["color"], old) >= min_distance]
        if copy_prob > 0 and others and rng.random() < copy_prob:
            new = rng.choice(others)
        else:
            new = sample_color(rng, AppearanceConfig(), avoid=old)
            while color_distance(old, new) < min_distance:
                new = sample_color(rng, AppearanceConfig(), avoid=old)
        changed[which]["color"] = new
    elif kind == "hair":
        changed["hair"]["color"] = rng.choice([c for c in HAIR_COLORS if c != attrs["hair"]["color"]])
    else:
        changed["pose"]["body"] = rng.choice([w for w in BODY_WORDS if w != attrs["pose"]["body"]])
    return render_caption(plan, changed)


def pose_negative(plan: CaptionPlan, attrs: dict, rng: random.Random) -> str | None:
    """The caption with one mentioned pose word replaced by another of its group ("..., walking"
    -> "..., kicking"; "with arms raised" -> "with arms spread"); None if no pose word is
    mentioned. The hard negative that teaches poses apart, as swap_negative does for colours."""
    if not plan.pose:
        return None
    which = rng.choice(plan.pose)
    words = BODY_WORDS if which == "body" else ARM_WORDS
    changed = copy.deepcopy(attrs)
    changed["pose"][which] = rng.choice([w for w in words if w != attrs["pose"][which]])
    return render_caption(plan, changed)
