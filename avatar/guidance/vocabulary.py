"""What the offline ``mini`` guidance model can read, and a warning for prompts it cannot.

The ``mini`` model was trained on captions from one grammar (avatar/guidance/synthetic/
captions.py): body shapes ("tall", "slim"), people ("man", "old woman", "child"), poses ("raising
both arms", "crouching"), garments ("t-shirt", "jeans", "boots"), patterns, hair and ~750 colour
names. A prompt far from that vocabulary ("a firefighter", "Harry Potter", "una mujer caminando")
still runs, but is guided by the few words the model knows; the stages say so (``warn_if_unfamiliar``,
called by the runner at the start of the shape, appearance and pose stages with ``guidance=mini``)
and point to ``guidance=clip`` / ``guidance=open_clip``.

How a prompt is read (:func:`read_prompt`), on the frozen all-MiniLM-L6-v2 sentence space (the
start of the mini model's text tower; avatar/priors/motion_descriptions.py ``sentence_encoder``):

1. Words the grammar uses, colour names (multi-word ones as a whole: "hunter green", not
   "hunter") and English function words are *known*; no encoder is loaded when every word is
   (the tuned prompts, the defaults).
2. A word the WordNet lexicon reads as a grammar word (avatar/guidance/lexicon.py: "portly" ->
   heavy, "breeches" -> trousers; garments only where clothing is the word's main sense) is
   known too. Every other word is compared with the grammar's concepts (shape words, nouns, garments,
   patterns, pose words and phrasings, everyday colours); one whose nearest concept is below
   ``WORD_THRESHOLD`` cosine is *far* ("hoodie" is near "sweater", "firefighter" near nothing).
3. The prompt's meaning left without its far words: the cosine between the prompt's sentence
   embedding and that of the prompt with the far words deleted. Below ``MEANING_THRESHOLD`` the
   prompt is far from the vocabulary and the stage warns ("someone walking down the street"
   keeps 0.77 without "street"; "a firefighter" keeps 0.27 without "firefighter").

The thresholds were calibrated on the held-out paraphrases (avatar/evaluation/paraphrases.yaml:
none may warn) and on a list of prompts the model cannot know (named characters, professions and
costumes, animals and objects, other languages: as many as possible should warn):
``python experiments/guidance/vocabulary_threshold.py`` prints the grid and the chosen point
(docs/experiments/guidance-model.md, 2026-12-05). It is a heuristic on word similarity: it misses
unknown prompts whose words MiniLM places near a known one ("Iron Man", "a soldier", "a horse").
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

# Calibrated on 2026-12-05 (module docstring): a word is far below WORD_THRESHOLD cosine to its
# nearest concept; a prompt warns when the meaning kept without its far words is below
# MEANING_THRESHOLD.
WORD_THRESHOLD = 0.47
MEANING_THRESHOLD = 0.6
# The stages that read a prompt, and which one (``prompt.<key>``).
STAGE_PROMPTS = {"shape": "shape", "appearance": "appearance", "pose": "motion"}
# English function words (articles, pronouns, prepositions, conjunctions, auxiliaries,
# quantifiers, intensifiers): known to any reader, they carry no concept of their own.
FUNCTION_WORDS = frozenset(
    """a an the this that these those some any each every all both either neither no not none
    i me my mine you your yours he him his she her hers it its we us our ours they them their theirs
    someone somebody anyone anybody everyone everybody one ones who whom whose which what whoever
    myself yourself himself herself itself ourselves themselves
    of in on at to from into onto by with without within for about above below under over up down
    out off near behind between beside besides among around across along through toward towards
    upon against beyond during before after while since until as like than then so if or and but nor
    is am are was were be been being has have had having do does did doing done will would shall
    should can could may might must
    very really quite rather too also just only even still much many more most less least few
    such own same other another here there where when how why again once ever never always""".split()
)
WORD = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*")  # words, hyphenated and with apostrophes


@dataclass(frozen=True)
class Vocabulary:
    concepts: tuple[str, ...]  # what a far word is compared with, and named in the warning
    words: frozenset[str]  # known as they are written (lower case)
    phrases: tuple[str, ...]  # multi-word names known as a whole, longest first
    # The words the grammar itself uses (no colour names, no other function words).
    grammar_words: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=1)
def grammar_people() -> tuple[tuple[tuple[str, ...], ...], tuple[str, ...]]:
    """Who the grammar's captions describe, over the corners and middle of its phenotype grid:
    the shape-word combinations (("tall", "heavy"), ...; () for none) and the nouns ("old man",
    ...), sorted. What the vocabulary knows and what the snapper (snapping.py) writes."""
    from avatar.guidance.synthetic.captions import shape_words, subject_noun

    levels = (0.0, 0.5, 1.0)
    shapes = {
        tuple(shape_words({"height": h, "weight": w, "muscle": m})) for h in levels for w in levels for m in levels
    }
    nouns = {subject_noun({"gender": g, "age": a}) for g in levels for a in (0.3, 0.6, 1.0)}
    return tuple(sorted(shapes)), tuple(sorted(nouns))


@functools.lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """The training grammar's vocabulary (avatar/guidance/synthetic/captions.py and appearance.py)."""
    from avatar.guidance.synthetic.appearance import BASIC_COLORS, COLORS, HAIR_COLORS
    from avatar.guidance.synthetic.captions import (
        BACK_TEMPLATE,
        BOTTOM_NAMES,
        FACE_TEMPLATE,
        HELD_OUT_TEMPLATES,
        PATTERN_WORDS,
        POSE_PHRASES,
        SHOE_NAMES,
        TOP_NAMES,
        TRAIN_TEMPLATES,
    )  # fmt: skip
    from avatar.guidance.synthetic.poses import ARM_WORDS, BODY_WORDS

    shape_combinations, nouns = grammar_people()
    shapes = {w for combination in shape_combinations for w in combination}
    garments = {name for table in (TOP_NAMES, BOTTOM_NAMES, SHOE_NAMES, PATTERN_WORDS) for names in table.values()
                for name in names}  # fmt: skip
    poses = {*ARM_WORDS, *BODY_WORDS, *(p for phrases in POSE_PHRASES.values() for p in phrases)}
    grammar = {*shapes, *nouns, *garments, *poses, "hair", *(f"{c} hair" for c in HAIR_COLORS)}
    templates = [t.replace("{}", " ") for t in (*TRAIN_TEMPLATES, *HELD_OUT_TEMPLATES, FACE_TEMPLATE, BACK_TEMPLATE)]
    grammar_words = {w for text in (*grammar, *templates, "wearing in with and") for w in WORD.findall(text.lower())}
    concepts = sorted(c for c in ({*grammar, *BASIC_COLORS} | grammar_words) - FUNCTION_WORDS if len(c) > 1)
    words = frozenset(grammar_words | {c for c in COLORS if " " not in c} | FUNCTION_WORDS)
    phrases = tuple(sorted({p for p in (*COLORS, *grammar) if " " in p}, key=lambda p: (-len(p), p)))
    return Vocabulary(tuple(concepts), words, phrases, frozenset(grammar_words))


def unfamiliar_words(prompt: str) -> list[str]:
    """The prompt's words (lower case, sorted, once each) that the grammar does not use; no encoder.
    Multi-word names count as a whole ("cherry red", "cherry-red"); one-letter words are skipped."""
    vocab = vocabulary()
    text = f" {prompt.lower()} "
    for phrase in vocab.phrases:
        if phrase.split()[0] in text:
            pattern = r"(?<![\w-])" + r"[\s-]+".join(map(re.escape, phrase.split())) + r"(?![\w-])"
            text = re.sub(pattern, " ", text)
    return sorted({w for w in WORD.findall(text) if len(w) > 1 and w not in vocab.words})


def concept_embeddings() -> torch.Tensor:
    """(C, 384) MiniLM sentence embeddings of ``vocabulary().concepts`` (cached in
    ``<project cache>/mini_vocabulary``)."""
    from avatar.priors.motion_descriptions import cached_sentence_embeddings

    return cached_sentence_embeddings(list(vocabulary().concepts), "mini_vocabulary", "Mini vocabulary")


@dataclass
class PromptReading:
    """How much of a prompt the mini model's vocabulary covers (module docstring)."""

    prompt: str
    unfamiliar: list[str] = field(default_factory=list)  # words the grammar does not use
    far: list[str] = field(default_factory=list)  # of those, the ones near no concept
    nearest: dict[str, list[str]] = field(default_factory=dict)  # unfamiliar word -> its 3 nearest concepts
    similarity: dict[str, float] = field(default_factory=dict)  # unfamiliar word -> cosine to the nearest
    # unfamiliar words the WordNet lexicon reads as a grammar word (avatar/guidance/lexicon.py):
    # known, not far ("portly" -> heavy, "breeches" -> trousers)
    lexicon: dict[str, str] = field(default_factory=dict)
    meaning_kept: float = 1.0  # cosine(prompt, prompt without its far words)
    meaning_threshold: float = MEANING_THRESHOLD

    @property
    def far_from_vocabulary(self) -> bool:
        return bool(self.far) and self.meaning_kept < self.meaning_threshold


def without_words(prompt: str, words: list[str]) -> str:
    """``prompt`` with every occurrence of ``words`` (whole words, any case) deleted."""
    for word in words:
        prompt = re.sub(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", " ", prompt, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", prompt).strip()


def read_prompt(
    prompt: str, word_threshold: float = WORD_THRESHOLD, meaning_threshold: float = MEANING_THRESHOLD
) -> PromptReading:
    """The reading of one prompt; loads the sentence encoder only if a word is unfamiliar."""
    from avatar.guidance.lexicon import look_up

    reading = PromptReading(prompt, unfamiliar_words(prompt), meaning_threshold=meaning_threshold)
    for word in reading.unfamiliar:
        # A garment word only where clothing is its main sense ("pullover", not "walker").
        known = look_up("shape", word) or look_up("garment", word, primary_only=True)
        if known is not None:
            reading.lexicon[word] = known
            reading.nearest[word] = [known]
    rest = [w for w in reading.unfamiliar if w not in reading.lexicon]
    if not rest:
        return reading
    from avatar.priors.motion_descriptions import sentence_encoder

    concepts = vocabulary().concepts
    encoder = sentence_encoder()
    sims = encoder.encode(rest) @ concept_embeddings().T
    top = sims.topk(min(3, len(concepts)), dim=1)
    for word, values, index in zip(rest, top.values.tolist(), top.indices.tolist()):
        reading.nearest[word] = [concepts[i] for i in index]
        reading.similarity[word] = round(values[0], 3)
        if values[0] < word_threshold:
            reading.far.append(word)
    if reading.far:
        both = encoder.encode([prompt, without_words(prompt, reading.far)])
        reading.meaning_kept = round(float(both[0] @ both[1]), 3)
    return reading


def warning_text(key: str, reading: PromptReading) -> str:
    words = "; ".join(f"{w!r} (nearest it knows: {', '.join(reading.nearest[w])})" for w in reading.far)
    return (
        f"prompt.{key}={reading.prompt!r} is far from what the offline `mini` guidance model knows: it does not "
        f"know {words}; without them the prompt keeps {reading.meaning_kept:.2f} of its meaning (sentence "
        f"cosine; warns below {reading.meaning_threshold}). The run goes on, guided by the words it knows (body shapes, "
        "poses, garments and their colours; docs/models/mini.md). For other concepts, named characters or other "
        "languages use guidance=clip or guidance=open_clip with their weights."
    )


def warn_if_unfamiliar(cfg) -> PromptReading | None:
    """At a stage's start (avatar/engine/runner.py): with ``guidance=mini``, log a warning when the
    stage's prompt is far from the mini model's vocabulary. Never stops a run: a failure of the
    check itself is logged and ignored."""
    key = STAGE_PROMPTS.get(str(cfg.stage.get("name", "")))
    if key is None or cfg.guidance.get("name") != "mini":
        return None
    prompt = str(cfg.prompt.get(key) or "").strip()
    if not prompt:
        return None
    try:
        reading = read_prompt(prompt)
    except Exception as err:  # an advisory check: never the reason a run fails
        log.info("The mini vocabulary check of prompt.%s was skipped: %s", key, err)
        return None
    if reading.far_from_vocabulary:
        log.warning(warning_text(key, reading))
    return reading
