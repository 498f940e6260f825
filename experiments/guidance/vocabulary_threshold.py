"""Calibrate the mini model's vocabulary warning (avatar/guidance/vocabulary.py): over a grid of
the two thresholds, how many held-out paraphrases would warn (avatar/evaluation/paraphrases.yaml:
the model's vocabulary in other words; none may) and how many prompts it cannot know would
(UNKNOWN below: named characters, professions and costumes, animals and objects, other
languages; as many as possible should). Then the readings at the shipped thresholds.

    .venv/bin/python experiments/guidance/vocabulary_threshold.py

The shipped thresholds are the point of the grid with no paraphrase warning and the most unknown
prompts warning (docs/experiments/guidance-model.md, 2026-12-05). The unknown prompts are a
calibration list, written with the paraphrases and never used for training either.
"""

from __future__ import annotations

import numpy as np
import torch

from avatar.evaluation.paraphrase import load_paraphrases
from avatar.guidance import vocabulary as V
from avatar.priors.motion_descriptions import sentence_encoder

UNKNOWN = [
    # named characters and people
    "Iron Man", "Spider-Man", "Harry Potter", "Darth Vader", "Mickey Mouse", "Batman", "Super Mario",
    "Gandalf the wizard", "Sherlock Holmes", "Pikachu", "Wonder Woman", "Captain America", "the Hulk",
    "Elsa from Frozen", "Shrek", "Yoda", "Napoleon Bonaparte", "Albert Einstein", "Lara Croft",
    "Sonic the Hedgehog",
    # professions, costumes, creatures
    "a firefighter", "an astronaut", "a samurai", "a Viking warrior", "a knight in shining armour", "a zombie",
    "a robot", "a pirate", "a ninja", "a clown", "a doctor", "a chef", "a policeman", "a nurse in scrubs",
    "a soldier", "a cowboy", "a ballerina", "a wizard", "a superhero", "a vampire", "a mermaid", "an alien",
    "a scuba diver", "a snowman", "a skeleton",
    # mixed with known words
    "a firefighter in a red jacket", "Iron Man raising both arms", "a person dressed as Spider-Man",
    # other languages
    "un homme grand avec une chemise rouge", "ein großer Mann mit roter Jacke", "una mujer caminando",
    "una donna seduta", "hito ga te wo ageru", "een lange man", "un niño pequeño", "eine Frau mit Hut",
    "uomo che corre", "uma mulher alta", "en kvinna som går",
    # animals and objects
    "a cat", "a red sports car", "a dragon", "a horse", "a teddy bear",
]  # fmt: skip
WORD_GRID = np.round(np.arange(0.40, 0.5501, 0.01), 3)
MEANING_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75)


def main() -> None:
    torch.set_num_threads(1)
    data = load_paraphrases()
    paraphrases = [e["prompt"] for kind in ("pose", "shape", "color") for e in data[kind]]
    encoder, concepts = sentence_encoder(), V.concept_embeddings()
    prompts = paraphrases + UNKNOWN
    unfamiliar = {p: V.unfamiliar_words(p) for p in prompts}
    words = sorted({w for ws in unfamiliar.values() for w in ws})
    best = dict(zip(words, (encoder.encode(words) @ concepts.T).max(1).values.tolist()))
    kept_cache: dict[str, float] = {}

    def kept(prompt: str, word_threshold: float) -> float:
        far = [w for w in unfamiliar[prompt] if best[w] < word_threshold]
        if not far:
            return 1.0
        rest = V.without_words(prompt, far)
        if rest not in kept_cache:
            both = encoder.encode([prompt, rest])
            kept_cache[rest] = float(both[0] @ both[1])
        return kept_cache[rest]

    print(f"{len(paraphrases)} paraphrases, {len(UNKNOWN)} unknown prompts; cells: paraphrases warned / unknown warned")
    print("| word threshold | " + " | ".join(f"meaning < {m}" for m in MEANING_GRID) + " |")
    print("|---|" + "---|" * len(MEANING_GRID))
    for tw in WORD_GRID:
        kp, ku = [kept(p, tw) for p in paraphrases], [kept(p, tw) for p in UNKNOWN]
        cells = [f"{sum(k < m for k in kp)} / {sum(k < m for k in ku)}" for m in MEANING_GRID]
        print(f"| {tw:.2f} | " + " | ".join(cells) + " |")

    tw, tm = V.WORD_THRESHOLD, V.MEANING_THRESHOLD
    print(f"\nShipped: WORD_THRESHOLD {tw}, MEANING_THRESHOLD {tm}")
    near_miss = sorted((kept(p, tw), p) for p in paraphrases if kept(p, tw) < 1.0)
    print("paraphrases with far words (meaning kept):")
    for k, p in near_miss:
        print(f"  {k:.3f}  {p}  far: {[w for w in unfamiliar[p] if best[w] < tw]}")
    closest = sorted((best[w], w) for p in paraphrases for w in unfamiliar[p] if best[w] >= tw)[:5]
    print("paraphrase words nearest the word threshold (kept as near):", [(w, round(s, 3)) for s, w in closest])
    warned = [p for p in UNKNOWN if kept(p, tw) < tm]
    print(f"unknown prompts warned: {len(warned)}/{len(UNKNOWN)}")
    print("unknown prompts not warned (meaning kept):")
    for p in UNKNOWN:
        if kept(p, tw) >= tm:
            print(f"  {kept(p, tw):.3f}  {p}  nearest similarities: {[(w, round(best[w], 3)) for w in unfamiliar[p]]}")


if __name__ == "__main__":
    main()
