"""Held-out attribute combinations: outfits the guidance model never trains on (issue 6's
"retrieval accuracy on held-out attribute combinations").

The rule is fixed (no randomness, no dependence on a seed) and is about *combinations* only:
every single value in it (each colour family on each garment, each garment kind, each pattern)
is common in training; only the pairs below are never rendered when ``combinations="train"``.

* Colour pairs: the (top, bottom) colour families of :data:`HELD_OUT_COLOR_PAIRS` (a green top
  with a red bottom, a yellow top with a blue bottom, a pink top with a green bottom). The
  family of a garment is read from the RGB of its main colour (``color``, not a pattern's
  ``color2``) by :func:`color_family`, so the ~750 vocabulary names need no hand labels. The
  reverse orders (a red top with green trousers, ...) stay in training: the held-out set tests
  binding colours to garments in a new pairing, not unseen co-occurrence. The colour check's
  prompts (red/blue, crimson/navy, yellow/purple) and their swaps are not held out.
* Kind-pattern pairs: the (garment kind, pattern) pairs of :data:`HELD_OUT_KIND_PATTERNS`
  (checked sleeveless tops, polka-dot shorts).

Textureless samples show no clothes (grey render, no garment in the caption), so they are never
held out. Families are hue bins: names on a bin edge ("teal green" vs "blue green") have
near neighbours on the other side, so the held-out pairs are of well-separated families.
"""

from __future__ import annotations

import colorsys
import random

from avatar.guidance.synthetic.appearance import COLORS, AppearanceConfig, sample_appearance

COMBINATIONS: tuple[str, ...] = ("all", "train", "held_out")
COLOR_FAMILIES: tuple[str, ...] = ("neutral", "red", "pink", "orange", "yellow", "green", "cyan", "blue", "purple")
# Upper hue edges (degrees) of the chromatic families; red wraps around 0.
_HUE_BINS: tuple[tuple[float, str], ...] = (
    (15.0, "red"), (45.0, "orange"), (70.0, "yellow"), (165.0, "green"), (195.0, "cyan"),
    (255.0, "blue"), (315.0, "purple"), (345.0, "pink"), (360.0, "red"),
)  # fmt: skip
HELD_OUT_COLOR_PAIRS: frozenset[tuple[str, str]] = frozenset({("green", "red"), ("yellow", "blue"), ("pink", "green")})
HELD_OUT_KIND_PATTERNS: frozenset[tuple[str, str]] = frozenset({("sleeveless", "checks"), ("shorts", "dots")})
MAX_TRIES = 10_000  # ~1 outfit in 10 is held out: a held-out draw takes ~10 tries


def color_family(name: str) -> str:
    """The family of a vocabulary colour, from its RGB: ``neutral`` (dark, or unsaturated:
    black, white, greys, beige, CSS4's pale lavender), else a hue bin; light desaturated reds
    (CSS4 pink, salmon-like tints) are ``pink``, hues 255-315 (violet, CSS4 purple, magenta)
    ``purple``, hues 15-45 ``orange`` (browns and tans included)."""
    h, s, v = colorsys.rgb_to_hsv(*COLORS[name])
    if v < 0.2 or s < 0.2:
        return "neutral"
    hue = 360.0 * h
    family = next(f for edge, f in _HUE_BINS if hue < edge)
    if family == "red" and s < 0.5 and v > 0.75:
        return "pink"
    return family


def held_out_combinations(attrs: dict) -> list[str]:
    """The held-out combinations ``attrs`` (a :func:`sample_appearance` outfit, or a generator
    sample's attributes) shows, e.g. ``["top green + bottom red", "sleeveless checks"]``."""
    if attrs["textureless"]:
        return []
    found = []
    pair = (color_family(attrs["top"]["color"]), color_family(attrs["bottom"]["color"]))
    if pair in HELD_OUT_COLOR_PAIRS:
        found.append(f"top {pair[0]} + bottom {pair[1]}")
    for g in ("top", "bottom"):
        if (attrs[g]["kind"], attrs[g]["pattern"]) in HELD_OUT_KIND_PATTERNS:
            found.append(f"{attrs[g]['kind']} {attrs[g]['pattern']}")
    return found


def is_held_out(attrs: dict) -> bool:
    """Whether ``attrs`` shows a combination that ``combinations="train"`` never renders."""
    return bool(held_out_combinations(attrs))


def sample_outfit(
    rng: random.Random, gender: float, cfg: AppearanceConfig | None = None, combinations: str = "all"
) -> dict:
    """:func:`sample_appearance` restricted to training (``"train"``) or held-out
    (``"held_out"``) combinations by redrawing the whole outfit until the rule is met (so the
    outfit follows the sampler's distribution conditioned on the rule). ``"all"`` is one plain
    draw: the same random numbers as :func:`sample_appearance`."""
    if combinations not in COMBINATIONS:
        raise ValueError(f"combinations={combinations!r}; choose one of {COMBINATIONS}")
    want = combinations == "held_out"
    for _ in range(MAX_TRIES):
        attrs = sample_appearance(rng, gender, cfg)
        if combinations == "all" or is_held_out(attrs) == want:
            return attrs
    raise RuntimeError(f"no {combinations} outfit in {MAX_TRIES} draws: does the appearance config allow one?")
