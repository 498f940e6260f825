"""The WordNet lexicon (avatar/guidance/wordnet_lexicon.json, docs/models/wordnet_lexicon.md):
English shape adjectives and garment nouns mapped onto the mini model's caption grammar
("plump" -> heavy, "pullover" -> sweater). Read by the snapper (avatar/guidance/snapping.py) and
by the appearance metrics' garment regions (avatar/metrics/appearance.py)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

LEXICON = Path(__file__).resolve().parent / "wordnet_lexicon.json"


@functools.lru_cache(maxsize=1)
def lexicon() -> dict:
    """{"shape": adjective -> grammar shape word, "garment": noun -> grammar garment,
    "garment_primary": the garment nouns whose most frequent sense is the clothing one}."""
    data = json.loads(LEXICON.read_text())
    return {"shape": data["shape"], "garment": data["garment"], "garment_primary": frozenset(data["garment_primary"])}


def look_up(kind: str, word: str, primary_only: bool = False) -> str | None:
    """The grammar word the lexicon gives for ``word`` (or the singular it may be the plural of);
    ``primary_only`` (garments): only a word whose most frequent sense is clothing ("pullover",
    not "walker", which the snapper reads as a shoe only next to a colour)."""
    table = lexicon()
    forms = [word, word[:-2] if word.endswith("es") else "", word[:-1] if word.endswith("s") else ""]
    for form in forms:
        if form and form in table[kind] and (not primary_only or form in table["garment_primary"]):
            return table[kind][form]
    return None
