"""Reading a prompt in the grammar the ``mini`` model was trained on (``guidance.text_reading``).

The mini model's text tower is all-MiniLM-L6-v2 fine-tuned on captions from one grammar
(avatar/guidance/synthetic/captions.py). Fine-tuning narrowed what it follows: on the held-out
paraphrases (avatar/evaluation/paraphrases.yaml) it does worse than on the grammar's own phrasing,
while the *frozen* MiniLM still maps most paraphrases near the right grammar phrase. With
``guidance.text_reading=snapped`` a prompt is rewritten into the grammar before the tower sees it,
by nearest neighbours in the frozen MiniLM sentence space (mean-pooled, the vocabulary check's
space, avatar/guidance/vocabulary.py); ``as_written`` (the default) gives the tower the prompt
as it is.

How a prompt is snapped (:func:`snap_prompt`):

1. A stage's template around the prompt ("a 3D rendering of {} in unreal engine", the grammar's
   templates) is kept and only the inside is read.
2. A prompt whose every word the grammar uses (its templates, nouns, shape, pose and garment
   words; colour names, multi-word ones as a whole) is returned **unchanged**: the tuned prompts
   and the stages' defaults are guided exactly as with ``as_written``.
3. Colours are read by exact vocabulary (the ~750 names of avatar.guidance.synthetic COLORS,
   "gray" as "grey", as avatar/metrics/appearance.py ``prompt_colors`` reads them) and kept as
   said, in the order said. Each colour is tied to the garment it names: the first garment word
   after it ("a red hoodie"), or before it after "is"/"are" ("whose shirt is red"); a garment word
   is one of the grammar's garment names or hair, a clothing word of WordNet whose nearest grammar
   garment it is a kind of (the shipped lexicon, below: "jumper" -> sweater, "chinos" ->
   trousers), or a word whose nearest garment name in the frozen space is at least
   ``GARMENT_THRESHOLD`` ("hoodie" -> "sweater"); pattern words ("striped") between them are kept.
4. In the rest of the prompt, an adjective the lexicon knows becomes its grammar shape word
   ("a chubby guy" -> "a heavy guy", "an elderly woman" -> "an old woman"). The rest (the person
   and what they do) then snaps, caption-level, to the nearest
   grammar caption "<subject> <pose>" (:func:`snap_person`): the pose among none, every phrasing
   of every pose word and body-with-arms pairs; the subject among "a <shape words> <noun>" (the
   grammar's nouns and shape-word combinations). The pose is then written as its word's first
   phrasing, the word itself ("with arms raised", "squatting"): the mini model follows the other
   phrasings less well (pose search AUC of "a person with both arms up" 0.33 against 0.90 for
   "a person with arms raised"; docs/experiments/guidance-model.md, 2026-12-05).
5. The snapped prompt is written as the grammar writes a caption: "<subject> [with <colour> hair]
   [wearing <garments>][, <pose>]".

The lexicon (avatar/guidance/wordnet_lexicon.json) is read from WordNet 3.0 by
experiments/guidance/wordnet_lexicon.py: the frozen space does not know what many words mean
("chubby" and "fat" were nearest "slim", "jumper" pants; 33 of 47 dev garment words reached the
right body region). The candidate captions' embeddings are cached
(``<project cache>/mini_snapping``); the encoder is loaded only for a prompt with a word the
grammar does not use. Measured on the held-out paraphrases in
docs/experiments/guidance-model.md (2026-12-05; the lexicon 2026-12-06).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum

import torch

from avatar.guidance.lexicon import look_up
from avatar.guidance.vocabulary import FUNCTION_WORDS

log = logging.getLogger(__name__)


class TextReading(StrEnum):
    """How the mini model's text tower reads a prompt (``guidance.text_reading``)."""

    as_written = "as_written"  # the prompt as it is
    snapped = "snapped"  # rewritten into the training grammar first (this module)


# An unfamiliar word is a garment when its nearest garment name (frozen MiniLM, word alone) is at
# least this near. Set on the module's own dev words (tests/test_guidance_snapping.py), not on the
# held-out paraphrases.
GARMENT_THRESHOLD = 0.5
# An unfamiliar word names a person, not a garment, when it is this much nearer a person noun of
# the grammar than any garment name (dev words: guy, bloke, dude, fellow, lad, chap, gal are at
# least 0.05 nearer; kimono, sari, poncho, cardigan, blazer, gown are not).
PERSON_MARGIN = 0.04
# Words that tie a subject to its garments; dropped from the rest before it is snapped.
CONNECTORS = frozenset("wearing in with and a an the over on dressed clad sporting".split())
COPULAS = frozenset("is are was were".split())
GARMENT_WINDOW = 4  # how many words after (or before) a colour its garment may be
TOKEN = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*|,")


@dataclass(frozen=True)
class Grammar:
    """What the snapper writes: the grammar's words, garments and candidate captions."""

    words: frozenset[str]  # every word the grammar uses (no other function words)
    colors: tuple[tuple[str, ...], ...]  # colour names as word tuples, longest first
    basic_colors: frozenset[str]  # everyday colours: kept even when said with no garment ("in red")
    garments: tuple[str, ...]  # garment names (one or two words), what a garment word snaps to
    garment_heads: frozenset[str]  # the last word of each garment name, and "hair"
    patterns: frozenset[str]  # pattern words kept between a colour and its garment
    plural: frozenset[str]
    nouns: tuple[str, ...]  # "person", "old man", ...
    subjects: tuple[str, ...]  # "a tall heavy man", ...
    poses: tuple[str, ...]  # "" (no pose), "raising both arms", "walking with arms raised", ...
    written: dict[str, str]  # pose phrasing -> how the snap writes it: its word's first phrasing


@functools.lru_cache(maxsize=1)
def grammar() -> Grammar:
    from avatar.guidance.synthetic.appearance import BASIC_COLORS, COLORS
    from avatar.guidance.synthetic.captions import (
        BOTTOM_NAMES,
        PATTERN_WORDS,
        PLURAL,
        POSE_PHRASES,
        SHOE_NAMES,
        TOP_NAMES,
        with_article,
    )
    from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS
    from avatar.guidance.vocabulary import grammar_people, vocabulary

    garments = tuple(dict.fromkeys(n for table in (TOP_NAMES, BOTTOM_NAMES, SHOE_NAMES) for ns in table.values()
                                   for n in ns))  # fmt: skip
    patterns = frozenset(w for ws in PATTERN_WORDS.values() for p in ws for w in p.split())
    shape_combinations, nouns = grammar_people()
    shapes = sorted({" ".join(combination) for combination in shape_combinations})
    subjects = tuple(with_article(f"{s} {n}".strip()) for s in shapes for n in nouns)
    arms = [p for w in ARM_WORDS for p in POSE_PHRASES[w]]
    body = [p for w in BODY_WORDS for p in POSE_PHRASES[w]]
    # Body-with-arms pairs in each word's first phrasing ("standing with arms spread").
    pairs = [f"{POSE_PHRASES[b][0]} {POSE_PHRASES[a][0]}" for b in BODY_WORDS for a in ARM_WORDS]
    colors = sorted({tuple(c.split()) for c in COLORS}, key=lambda c: (-len(c), c))
    return Grammar(
        words=vocabulary().grammar_words,
        colors=tuple(colors),
        basic_colors=frozenset(BASIC_COLORS),
        garments=garments,
        garment_heads=frozenset({n.split()[-1] for n in garments} | {"hair"}),
        patterns=patterns,
        plural=frozenset(PLURAL),
        nouns=tuple(nouns),
        subjects=subjects,
        poses=("", *arms, *body, *pairs),
        written={
            "": "",
            **{p: POSE_PHRASES[w][0] for w in POSE_PHRASES for p in POSE_PHRASES[w]},
            **{pair: pair for pair in pairs},
        },  # fmt: skip
    )


def _embeddings(texts: tuple[str, ...], folder: str) -> torch.Tensor:
    from avatar.priors.motion_descriptions import cached_sentence_embeddings

    return cached_sentence_embeddings(list(texts), folder, "Mini snapping captions")


@functools.lru_cache(maxsize=1)
def noun_pose_embeddings() -> torch.Tensor:
    """(nouns x poses, 384): "a <noun> <pose>" for every noun and pose (none included), noun-major."""
    g = grammar()
    return _embeddings(tuple(with_article(f"{n} {p}".strip()) for n in g.nouns for p in g.poses), "mini_snapping")


@functools.lru_cache(maxsize=1)
def subject_embeddings() -> torch.Tensor:
    return _embeddings(grammar().subjects, "mini_snapping")


@functools.lru_cache(maxsize=1)
def garment_embeddings() -> torch.Tensor:
    return _embeddings(grammar().garments, "mini_snapping")


@functools.lru_cache(maxsize=1)
def noun_embeddings() -> torch.Tensor:
    return _embeddings(grammar().nouns, "mini_snapping")


def tokens(text: str) -> list[str]:
    """Lower-case words and commas; "gray" read as "grey"; hyphenated words the grammar does not
    use split ("cherry-red" -> "cherry", "red"; "t-shirt" stays)."""
    words = grammar().words
    out: list[str] = []
    for token in TOKEN.findall(text.lower()):
        parts = [token] if token in words or "-" not in token else token.split("-")
        out.extend("grey" if p == "gray" else p for p in parts)
    return out


def is_grammar_text(text: str) -> bool:
    """Every word of ``text`` is one the grammar uses or part of a colour name (one-letter words,
    such as the "d" of "3D", are skipped)."""
    toks = [t for t in tokens(text) if t != ","]
    spans = _color_spans(toks)
    inside = {i for start, end, _ in spans for i in range(start, end)}
    words = grammar().words
    return all(t in words or len(t) < 2 for i, t in enumerate(toks) if i not in inside)


def _color_spans(toks: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, name) of every colour name in ``toks``, longest names first, not overlapping."""
    taken: set[int] = set()
    spans = []
    for name in grammar().colors:
        n = len(name)
        for i in range(len(toks) - n + 1):
            if tuple(toks[i : i + n]) == name and not taken & set(range(i, i + n)):
                spans.append((i, i + n, " ".join(name)))
                taken.update(range(i, i + n))
    return sorted(spans)


@dataclass
class Snap:
    """One prompt's reading: what was asked, what the model reads, and the parts found."""

    text: str
    snapped: str
    subject: str = ""
    pose: str = ""
    garments: list[str] = field(default_factory=list)  # "a red sweater", ...
    garment_words: dict[str, str] = field(default_factory=dict)  # word said -> garment name written

    @property
    def changed(self) -> bool:
        return self.snapped != self.text


class Snapper:
    """Rewrites prompts into the training grammar (module docstring); one per guidance model,
    remembering each prompt's snap."""

    def __init__(self) -> None:
        self._snaps: dict[str, Snap] = {}

    def __call__(self, text: str) -> str:
        return self.snap(text).snapped

    def snap(self, text: str) -> Snap:
        if text not in self._snaps:
            snap = self._snaps[text] = snap_prompt(text)
            if snap.changed:
                log.info("guidance.text_reading=snapped: the mini model reads %r as %r", text, snap.snapped)
        return self._snaps[text]


def _templates() -> list[tuple[str, str]]:
    """(prefix, suffix) of the grammar's templates and the stages' ("a 3d rendering of {} ...")."""
    from avatar.guidance.synthetic.captions import BACK_TEMPLATE, FACE_TEMPLATE, HELD_OUT_TEMPLATES, TRAIN_TEMPLATES

    found = {tuple(t.split("{}")) for t in (*TRAIN_TEMPLATES, *HELD_OUT_TEMPLATES, FACE_TEMPLATE, BACK_TEMPLATE)}
    return sorted((f for f in found if f != ("", "")), key=lambda f: -len(f[0] + f[1]))


def split_template(text: str) -> tuple[str, str, str]:
    """(prefix, inside, suffix): the longest grammar template around ``text`` (any case), else
    ("", text, "")."""
    for prefix, suffix in _templates():
        if (len(text) > len(prefix) + len(suffix) and text.lower().startswith(prefix.lower())
                and text.lower().endswith(suffix.lower())):  # fmt: skip
            return text[: len(prefix)], text[len(prefix) : len(text) - len(suffix)], text[len(text) - len(suffix) :]
    return "", text, ""


def snap_prompt(text: str) -> Snap:
    """``text`` rewritten into the training grammar (module docstring); unchanged when every word
    is the grammar's."""
    if is_grammar_text(text):
        return Snap(text, text)
    prefix, inside, suffix = split_template(text)
    snap = _snap_inside(inside)
    snap.text, snap.snapped = text, prefix + snap.snapped + suffix
    return snap


def _nearest(query: torch.Tensor, candidates: torch.Tensor) -> tuple[int, float]:
    sims = candidates @ query
    i = int(sims.argmax())
    return i, float(sims[i])


def _snap_inside(inside: str) -> Snap:
    from avatar.priors.motion_descriptions import sentence_encoder

    g = grammar()
    encoder = sentence_encoder()
    toks = tokens(inside)
    spans = _color_spans(toks)
    in_color = {i: span for span in spans for i in range(span[0], span[1])}
    unknown = sorted({t for t in toks if t not in g.words and t != "," and len(t) > 1 and t not in in_color})
    garment_of: dict[str, str] = {t: t for t in g.garment_heads}  # garment words -> garment names
    nearest_garment: dict[str, str] = {}  # every unfamiliar word -> its nearest garment name
    person_like: set[str] = set()  # unfamiliar words nearer a person noun than any garment ("guy")
    for word in unknown:
        garment = look_up("garment", word)
        if garment is not None:
            garment_of[word] = nearest_garment[word] = garment
    unread = [w for w in unknown if w not in garment_of]
    if unread:
        vectors = encoder.encode(unread)
        sims = vectors @ garment_embeddings().T
        to_noun = (vectors @ noun_embeddings().T).max(-1).values
        for word, row, noun in zip(unread, sims, to_noun):
            nearest_garment[word] = g.garments[int(row.argmax())]
            if float(row.max()) >= GARMENT_THRESHOLD:
                garment_of[word] = nearest_garment[word]
            elif float(noun) > float(row.max()) + PERSON_MARGIN:
                person_like.add(word)

    used: set[int] = set()  # token positions read as colours, garments or their patterns
    phrases: list[tuple[int, str]] = []  # (position, phrase)
    hair: list[str] = []
    pending: list[str] = []  # colours said before another with no garment of their own, and joiners
    found_words: dict[str, str] = {}
    for k, (start, end, color) in enumerate(spans):
        stop = spans[k + 1][0] if k + 1 < len(spans) else len(toks)
        back_stop = spans[k - 1][1] if k else 0
        ahead = [i for i in range(end, min(stop, end + GARMENT_WINDOW)) if i not in used]
        ahead = ahead[: next((n for n, i in enumerate(ahead) if toks[i] == ","), len(ahead))]
        behind = [i for i in range(start - 1, max(back_stop, start - GARMENT_WINDOW) - 1, -1) if i not in used]
        behind = behind[: next((n for n, i in enumerate(behind) if toks[i] == ","), len(behind))]
        order = (behind, ahead) if start and toks[start - 1] in COPULAS else (ahead, behind)
        hit = next((i for seq in order for i in seq if toks[i] in garment_of), None)
        if hit is None:  # the first unfamiliar word after the colour names its garment: "a pink cardigan",
            # unless it names a person: "a buff guy" is a build, not a buff-coloured garment
            hit = next(
                (i for i in ahead if toks[i] in nearest_garment and toks[i] not in FUNCTION_WORDS | person_like), None
            )
            if hit is not None:
                garment_of.setdefault(toks[hit], nearest_garment[toks[hit]])
        if hit is None:
            nxt = spans[k + 1][0] if k + 1 < len(spans) else None
            if nxt == end or (nxt == end + 1 and toks[end] == "and"):
                # "red and white striped shirt", "faded blue denim jeans": one garment's colours
                pending += [color, "and" if nxt > end else ""]
                used.update(range(start, nxt))
            elif color in g.basic_colors:
                phrases.append((start, " ".join(w for w in [*pending, color] if w)))
                pending = []
                used.update(range(start, end))
            # else: a colour name said as a plain word ("a buff guy", "the sky"): read with the rest
            continue
        used.update(range(start, end))
        used.add(hit)
        name = garment_of[toks[hit]]
        found_words[toks[hit]] = name
        if hit > end and toks[hit - 1] in g.words and f"{toks[hit - 1]} {name}" in g.garments:
            name = f"{toks[hit - 1]} {name}"  # "tank top", "long-sleeved shirt"
            used.add(hit - 1)
        pattern = [toks[i] for i in range(end, hit) if toks[i] in g.patterns] if hit > end else []
        used.update(i for i in range(end, hit) if toks[i] in g.patterns)
        colors = " ".join(w for w in [*pending, color] if w)
        pending = []
        if name == "hair":
            hair.append(colors)
            continue
        words = " ".join([colors, *pattern, name])
        phrases.append((min(start, hit), words if name in g.plural else with_article(words)))
    garments = [p for _, p in sorted(phrases)]

    # The rest: the words before and after the garment region, without the connectors next to it.
    first, last = (min(used), max(used)) if used else (len(toks), len(toks))
    before = [t for t in toks[:first] if t != ","]
    while before and before[-1] in CONNECTORS:
        before.pop()
    rest = before + [t for i, t in enumerate(toks) if i > last and i not in used and t != ","]
    rest_text = _shape_words_read(rest) or "a person"
    subject, pose = snap_person(rest_text)
    pose = g.written[pose]  # the pose word as the grammar says it by default: "with arms raised"
    if hair:
        subject += f" with {' and '.join(hair)} hair"
    snapped = subject
    if garments:
        snapped += " wearing " + (
            garments[0] if len(garments) == 1 else ", ".join(garments[:-1]) + " and " + garments[-1]
        )
    if pose:
        snapped += (", " if garments or hair else " ") + pose
    return Snap(inside, snapped, subject, pose, garments, found_words)


def snap_person(text: str) -> tuple[str, str]:
    """(subject, pose): a grammar caption "<subject> <pose>" near ``text`` in the frozen space. The
    nearest subject alone gives the noun; the nearest "a <noun> <pose>" (cached; no pose is one
    choice) gives the pose; the nearest "<subject> <pose>" over every subject then gives the
    subject (shape words and noun) for that pose."""
    from avatar.priors.motion_descriptions import sentence_encoder

    g = grammar()
    query = sentence_encoder().encode([text])[0]
    subject = g.subjects[_nearest(query, subject_embeddings())[0]]
    noun = next(n for n in g.nouns if subject.endswith(" " + n))
    offset = g.nouns.index(noun) * len(g.poses)
    pose = g.poses[_nearest(query, noun_pose_embeddings()[offset : offset + len(g.poses)])[0]]
    if pose:
        captions = [f"{s} {pose}" for s in g.subjects]
        subject = g.subjects[_nearest(query, sentence_encoder().encode(captions))[0]]
    return subject, pose


def _shape_words_read(words: list[str]) -> str:
    """``words`` joined, each adjective the lexicon knows replaced by its grammar shape word, with
    "a"/"an" fixed before it ("an elderly woman" -> "an old woman", "an obese man" -> "a heavy man")."""
    out: list[str] = []
    for word in words:
        shape = look_up("shape", word)  # never a grammar word: the lexicon has none
        if shape is not None and out and out[-1] in ("a", "an"):
            out[-1] = with_article(shape).split()[0]
        out.append(shape or word)
    return " ".join(out).strip()


def with_article(phrase: str) -> str:
    from avatar.guidance.synthetic.captions import with_article as article

    return article(phrase)
