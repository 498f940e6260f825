"""``guidance.text_reading=snapped`` (avatar/guidance/snapping.py, issue #28): a prompt is rewritten
into the mini model's training grammar by nearest neighbours in the frozen MiniLM space before
the text tower reads it. Grammar prompts pass unchanged (no encoder loaded), colour words are
kept as said, and sentences phrased as people write them land on the grammar's concept.

The sentences here are this file's own, written for it: none is from the held-out paraphrase set
(avatar/evaluation/paraphrases.yaml), which is only ever measured (avatar-eval paraphrase)."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.errors import ConfigCompositionException

from avatar.evaluation.paraphrase import SHAPE_PROMPTS, load_paraphrases
from avatar.evaluation.pose_search import PROMPTS as POSE_PROMPTS
from avatar.guidance import build_guidance
from avatar.guidance.lexicon import lexicon, look_up
from avatar.guidance.mini import MiniGuidanceConfig
from avatar.guidance.snapping import TextReading, grammar, is_grammar_text, snap_prompt, split_template
from avatar.guidance.synthetic.captions import named_pose_words
from avatar.metrics.appearance import prompt_colors

from helpers import compose_cfg

GRAMMAR_PROMPTS = (
    *POSE_PROMPTS, *SHAPE_PROMPTS, "a person", "a person in a red shirt and blue trousers",
    "a tall heavy man", "a 3D rendering of a person raising both arms in unreal engine",
    "a 3d rendering of a person in unreal engine", "the face of an old woman with blond hair",
    "a render of a short slim girl wearing a hunter green t-shirt and cherry-red jeans, walking",
    "a person kicking with arms raised", "a photo of a muscular boy in navy plaid shorts",
)  # fmt: skip

# Own sentences (not from paraphrases.yaml) -> the pose word their snap must name.
POSE_SENTENCES = {
    "somebody with hands held over the head": "arms raised",
    "a kid putting one arm up": "one arm raised",
    "a woman doing squats": "squatting",
    "someone resting on a bench": "sitting",
    "a footballer kicking the ball": "kicking",
    "a woman jogging through the park": "walking",
    "a man bent over at the hips": "bending forward",
}
# Own sentences -> the grammar noun their subject must end with.
NOUN_SENTENCES = {"a toddler": "child", "an aged man": "old man", "a grandmother": "old woman", "a gentleman": "man"}


def test_grammar_prompts_pass_unchanged_without_an_encoder(monkeypatch):
    def no_encoder():
        raise AssertionError("the sentence encoder was loaded for a prompt of grammar words")

    monkeypatch.setattr("avatar.priors.motion_descriptions.sentence_encoder", no_encoder)
    for prompt in GRAMMAR_PROMPTS:
        assert is_grammar_text(prompt), prompt
        snap = snap_prompt(prompt)
        assert snap.snapped == prompt and not snap.changed
    # Words outside the grammar make a prompt snap, function words included: "someone" and
    # "whose" are English, but the grammar never says them.
    assert not is_grammar_text("someone with arms raised")
    assert not is_grammar_text("a man whose shirt is red")
    assert not is_grammar_text("a hunter in a green shirt")  # "hunter" only as part of "hunter green"


def test_the_template_around_a_prompt_is_kept():
    assert split_template("a 3d rendering of a guy sitting in unreal engine") == (
        "a 3d rendering of ", "a guy sitting", " in unreal engine")  # fmt: skip
    assert split_template("a guy sitting") == ("", "a guy sitting", "")
    snap = snap_prompt("a 3D rendering of a guy resting on a bench in unreal engine")
    assert snap.snapped.startswith("a 3D rendering of a") and snap.snapped.endswith(" in unreal engine")
    assert named_pose_words(snap.snapped) == {"sitting"} and " man" in snap.subject


@pytest.mark.parametrize("sentence,word", list(POSE_SENTENCES.items()))
def test_pose_sentences_land_on_their_pose_word(sentence, word):
    snap = snap_prompt(sentence)
    assert snap.changed and is_grammar_text(snap.snapped), snap.snapped
    assert word in named_pose_words(snap.snapped), snap.snapped


def test_people_land_on_the_grammar_nouns():
    for sentence, noun in NOUN_SENTENCES.items():
        snap = snap_prompt(sentence)
        assert snap.subject.split(" ", 1)[1].endswith(noun) and not snap.pose, snap.snapped
        assert snap.subject.split()[-len(noun.split()) - 1] in ("a", "an") or snap.subject.endswith(noun)


def test_colour_words_are_kept_as_said_and_tied_to_grammar_garments():
    sentences = {
        "a lady in a green coat and white slacks": ["a green sweater", "white trousers"],
        "somebody whose jacket is black and whose jeans are grey": ["a black sweater", "grey jeans"],
        "a blue hoodie with orange shorts": ["a blue sweater", "orange shorts"],
        "a chap wearing a hunter green raincoat, kicking a ball": None,
        "a teen in a cherry-red tee and gray joggers": None,
    }
    for sentence, garments in sentences.items():
        snap = snap_prompt(sentence)
        assert snap.changed and is_grammar_text(snap.snapped), snap.snapped
        assert list(prompt_colors(snap.snapped)) == list(prompt_colors(sentence)), snap.snapped
        if garments is not None:
            assert snap.garments == garments
    kick = snap_prompt("a chap wearing a hunter green raincoat, kicking a ball")
    assert "hunter green" in kick.snapped and named_pose_words(kick.snapped) == {"kicking"}
    # "a red and white striped ..." keeps both colours of the pattern and the grammar's garment.
    snap = snap_prompt("a 3D rendering of a guy with a red and white striped tank top in unreal engine")
    assert "a red and white striped tank top" in snap.snapped


PERSON_WORDS = ("a buff bloke", "a tan dude raising both arms", "a tan fellow in a navy cardigan")


def test_a_colour_name_before_a_person_is_not_a_garment():
    """ "buff" and "tan" are colour names too; before a word for a person they are a build or a
    tan, not a garment ("a buff bloke" was "a person wearing a buff top"); before an unfamiliar
    garment ("kimono") the colour still goes to a garment."""
    assert snap_prompt("a buff bloke").garments == [] and "buff" not in snap_prompt("a buff bloke").snapped
    assert snap_prompt("a tan dude raising both arms").garments == []
    assert snap_prompt("a tan fellow in a navy cardigan").garments == ["a navy sweater"]
    kimono = snap_prompt("a woman in a teal kimono")
    assert len(kimono.garments) == 1 and kimono.garments[0].startswith("a teal ")


def test_snapped_guidance_reads_grammar_prompts_exactly_as_written(caplog):
    written = build_guidance(MiniGuidanceConfig())
    snapped = build_guidance(MiniGuidanceConfig(text_reading=TextReading.snapped))
    assert snapped.loaded_weights["text_reading"] == "snapped"
    prompts = list(GRAMMAR_PROMPTS[:10])
    assert torch.equal(snapped.encode_text(prompts), written.encode_text(prompts))
    sentence = "somebody with hands held over the head"
    with caplog.at_level(logging.INFO, logger="avatar.guidance.snapping"):
        emb = snapped.encode_text([sentence, sentence])
        snapped.encode_text(sentence)
    reads = snap_prompt(sentence).snapped
    assert torch.allclose(emb[0], written.encode_text(reads)[0], atol=1e-6)
    assert not torch.allclose(emb[0], written.encode_text(sentence)[0], atol=1e-3)
    logged = [r.getMessage() for r in caplog.records if r.name == "avatar.guidance.snapping"]
    assert len(logged) == 1 and repr(sentence) in logged[0] and repr(reads) in logged[0]


def test_text_reading_is_a_checked_config_choice(tmp_path):
    """The stages' mini guidance reads prompts snapped by default (conf/guidance/mini.yaml); the
    scorer, built from the schema's defaults, reads them as written."""
    from avatar.guidance.base import build_scorer

    cfg = compose_cfg(tmp_path, "stage=pose")
    assert cfg.guidance.text_reading == TextReading.snapped
    assert build_guidance(cfg.guidance).text_reading == TextReading.snapped
    assert build_scorer(cfg).text_reading == TextReading.as_written
    cfg = compose_cfg(tmp_path, "stage=pose", "guidance.text_reading=as_written")
    assert build_guidance(cfg.guidance).text_reading == TextReading.as_written
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(tmp_path, "stage=pose", "guidance.text_reading=nearest")
    assert "text_reading" in str(err.value) + str(err.value.__cause__)


# Own sentences -> the grammar words their snap must say, read through the WordNet lexicon
# (the frozen space alone, 2026-12-06: "plump" and "obese" -> slim, "scrawny" -> heavy,
# "moccasins" -> shorts, "breeches" -> a skirt).
LEXICON_SENTENCES = {
    "a plump woman": "a heavy woman",
    "an obese man": "a heavy man",
    "a scrawny boy": "a slim boy",
    "a burly man": "a muscular man",
    "an aged woman": "an old woman",
    "someone in a maroon pullover and brown moccasins": "wearing a maroon sweater and brown shoes",
    "a girl in a yellow blouse and red breeches": "wearing a yellow top and red trousers",
}


def test_the_wordnet_lexicon_reads_shape_adjectives_and_garment_nouns():
    for sentence, said in LEXICON_SENTENCES.items():
        assert said in snap_prompt(sentence).snapped, snap_prompt(sentence).snapped
    assert look_up("garment", "moccasins") == "shoes" and look_up("garment", "breeches") == "trousers"
    assert look_up("shape", "happy") is None and look_up("garment", "table") is None


def test_the_lexicon_maps_onto_grammar_words_only():
    """Every entry maps a word the grammar does not use onto one it does (a shape word of the
    captions, a garment name): the snap stays inside what the model was trained on."""
    from avatar.guidance.synthetic.captions import shape_words

    g = grammar()
    extreme = [{"gender": 0.5, "age": 0.9, "muscle": v, "weight": v, "height": v} for v in (0.0, 1.0)]
    shapes = {w for p in extreme for w in shape_words(p)} | {"old"}
    table = lexicon()
    assert set(table["shape"].values()) <= shapes and set(table["garment"].values()) <= set(g.garments)
    assert not (set(table["shape"]) | set(table["garment"])) & g.words
    assert len(table["shape"]) > 100 and len(table["garment"]) > 100


def test_no_test_sentence_is_from_the_held_out_set():
    held_out = {e["prompt"].lower() for kind in load_paraphrases().values() for e in kind}
    assert not held_out & {
        s.lower()
        for s in (*POSE_SENTENCES, *NOUN_SENTENCES, *PERSON_WORDS, *LEXICON_SENTENCES, "a woman in a teal kimono")
    }
