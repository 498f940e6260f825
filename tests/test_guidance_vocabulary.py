"""The offline guidance model says what it does not know (avatar/guidance/vocabulary.py, issue
#28): a prompt far from the mini model's training vocabulary makes the stage log a warning that
names the nearest concepts it knows and points to guidance=clip; the held-out paraphrases and
the tuned prompts do not warn, and need no encoder when every word is known."""

from __future__ import annotations

import logging

from avatar.evaluation.paraphrase import SHAPE_PROMPTS, load_paraphrases
from avatar.evaluation.pose_search import PROMPTS as POSE_PROMPTS
from avatar.guidance import vocabulary
from avatar.guidance.vocabulary import read_prompt, unfamiliar_words, warn_if_unfamiliar

from helpers import LOW_POLY, compose_cfg

DEFAULTS = ("a person", "a person in a red shirt and blue trousers", "a person raising both arms")


def test_tuned_prompts_are_read_without_loading_an_encoder(monkeypatch):
    def no_encoder():
        raise AssertionError("the sentence encoder was loaded for a prompt of known words")

    monkeypatch.setattr("avatar.priors.motion_descriptions.sentence_encoder", no_encoder)
    tuned = [*DEFAULTS, *POSE_PROMPTS, *SHAPE_PROMPTS, "a tall heavy man", "a short slim woman", "a_child",
             "a 3D rendering of an old woman with blond hair wearing a hunter green t-shirt and cherry-red jeans"]  # fmt: skip
    for prompt in tuned:
        assert unfamiliar_words(prompt) == [], prompt
        assert not read_prompt(prompt).far_from_vocabulary
    # Multi-word colour names count only as a whole: "hunter" alone is not a word the model knows.
    assert unfamiliar_words("a hunter in a hunter green shirt") == ["hunter"]


def test_an_unknown_prompt_warns_naming_what_the_model_knows(tmp_path, caplog):
    cfg = compose_cfg(tmp_path, "stage=pose", "prompt.motion=a firefighter")
    with caplog.at_level(logging.WARNING, logger=vocabulary.__name__):
        reading = warn_if_unfamiliar(cfg)
    assert reading.far == ["firefighter"] and reading.far_from_vocabulary
    (record,) = [r for r in caplog.records if r.name == vocabulary.__name__]
    text = record.getMessage()
    assert "prompt.motion='a firefighter'" in text and "'firefighter'" in text
    assert "nearest it knows: " + ", ".join(reading.nearest["firefighter"]) in text
    assert len(reading.nearest["firefighter"]) == 3 and all(
        c in vocabulary.vocabulary().concepts for c in reading.nearest["firefighter"]
    )
    assert "guidance=clip" in text and "guidance=open_clip" in text
    # Other languages and named characters too; other guidance backends are not checked.
    assert read_prompt("una mujer caminando").far_from_vocabulary
    assert read_prompt("Harry Potter").far_from_vocabulary
    assert (
        warn_if_unfamiliar(compose_cfg(tmp_path, "stage=pose", "guidance=clip", "prompt.motion=a firefighter")) is None
    )


def test_no_held_out_paraphrase_warns():
    data = load_paraphrases()
    readings = [read_prompt(entry["prompt"]) for kind in data.values() for entry in kind]
    warned = [(r.prompt, r.far, r.meaning_kept) for r in readings if r.far_from_vocabulary]
    assert warned == []
    assert any(r.unfamiliar for r in readings)  # they do use words the grammar does not


def test_the_stage_warns_at_its_start_and_still_runs(tmp_path, caplog):
    from avatar.engine.runner import run

    cfg = compose_cfg(
        tmp_path / "run", "stage=shape", f"body.topology={LOW_POLY}", "render.height=32", "render.width=32",
        "stage.codebook_size=8", "stage.refine_steps=0", "stage.preview_size=32", "prompt.shape=Harry Potter",
        f"stage.cache_dir={tmp_path / 'cache'}", "logger=none",
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger=vocabulary.__name__):
        result = run(cfg)
    assert result["prompt"] == "Harry Potter" and (tmp_path / "run" / "shape.npz").is_file()
    assert any("prompt.shape='Harry Potter'" in r.getMessage() and "guidance=clip" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_words_the_wordnet_lexicon_reads_are_known(monkeypatch):
    """Words of the lexicon (avatar/guidance/lexicon.py) are read as their grammar words, not
    compared in the frozen space: "brogues" and "breeches" were far from every concept there, and
    the prompt warned (meaning kept 0.41, 2026-12-06). No encoder is loaded for them."""
    from avatar.priors import motion_descriptions

    def no_encoder():
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr(motion_descriptions, "sentence_encoder", no_encoder)
    reading = read_prompt("someone in brogues and breeches")
    assert reading.lexicon == {"breeches": "trousers", "brogues": "shoes"}
    assert reading.far == [] and not reading.far_from_vocabulary
    assert read_prompt("a portly man").lexicon == {"portly": "heavy"}
