"""Tokenizers (`vla.policies.tokenizer`): the word vocabulary from a dataset's tasks, no silent truncation, and the
policy config choosing and saving its tokenizer."""

from __future__ import annotations

import pytest
from lerobot.configs import FeatureType, PolicyFeature

from vla.policies.configuration_vla import VLAConfig
from vla.policies.processor_vla import VLATokenizerStep
from vla.policies.tokenizer import ByteTokenizer, InstructionTooLong, WordTokenizer, build_vocabulary, split_words

TASKS = ["Pick up the red cube.", "lift the green block", "grab the blue one"]


def test_words_are_lower_cased_and_punctuation_is_split_off() -> None:
    assert split_words("Pick up the RED cube, now!") == ["pick", "up", "the", "red", "cube", ",", "now", "!"]
    assert build_vocabulary(TASKS) == sorted({"pick", "up", "the", "red", "cube", ".", "lift", "green", "block",
                                              "grab", "blue", "one"})  # fmt: skip


def test_word_tokenizer_gives_each_word_one_id_and_unknown_words_unk() -> None:
    tok = WordTokenizer(build_vocabulary(TASKS))
    ids, mask = tok(["lift the red cube", "grab the purple one"], max_length=8)
    assert ids.shape == (2, 6) and mask.sum(1).tolist() == [6, 6]
    assert tok.decode(ids[0].tolist()) == "lift the red cube"
    assert ids[1, 3].item() == tok.unk_id and tok.unknown_words("grab the purple one") == ["purple"]
    red, green = tok(["red"], 4)[0][0, 1], tok(["green"], 4)[0][0, 1]
    assert red != green and tok.vocab_size == len(tok.vocabulary) + 4


@pytest.mark.parametrize("tokenizer", [ByteTokenizer(), WordTokenizer(build_vocabulary(TASKS))])
def test_an_instruction_longer_than_the_limit_is_an_error_not_a_cut(tokenizer: object) -> None:
    text = "pick up the red cube " * 4
    with pytest.raises(InstructionTooLong, match="tokenizer_max_length=8"):
        tokenizer(["red", text], 8)  # type: ignore[operator]


def config(**kw: object) -> VLAConfig:
    cfg = VLAConfig(preset="tiny", **kw)  # type: ignore[arg-type]
    cfg.input_features = {"observation.images.front": PolicyFeature(FeatureType.VISUAL, (3, 32, 32)),
                          "observation.state": PolicyFeature(FeatureType.STATE, (4,))}
    cfg.output_features = {"action": PolicyFeature(FeatureType.ACTION, (4,))}
    return cfg


def test_a_policy_built_from_a_dataset_uses_a_word_vocabulary_of_its_tasks() -> None:
    from vla.policies.modeling_vla import VLAPolicy

    class Meta:
        import pandas as pd

        tasks = pd.DataFrame({"task_index": [0, 1, 2]}, index=pd.Index(TASKS, name="task"))

    cfg = config()
    policy = VLAPolicy(cfg, dataset_meta=Meta())
    assert cfg.tokenizer == "words" and cfg.vocabulary == build_vocabulary(TASKS)
    assert policy.model.backbone.embed_tokens.num_embeddings == len(cfg.vocabulary) + 4
    without = config()
    VLAPolicy(without)
    assert without.tokenizer == "bytes" and without.vocabulary is None
    chosen = config(tokenizer="bytes")
    VLAPolicy(chosen, dataset_meta=Meta())
    assert chosen.tokenizer == "bytes"


def test_words_without_a_vocabulary_is_refused() -> None:
    from vla.policies.modeling_vla import VLAPolicy

    with pytest.raises(ValueError, match="needs a vocabulary"):
        VLAPolicy(config(tokenizer="words"))


def test_the_tokenizer_step_saves_its_kind_and_vocabulary_and_reads_old_configs() -> None:
    step = VLATokenizerStep(max_length=8, kind="words", vocabulary=build_vocabulary(TASKS))
    again = VLATokenizerStep(**step.get_config())
    assert isinstance(again.tokenizer, WordTokenizer) and again.tokenizer.vocabulary == step.vocabulary
    old = VLATokenizerStep(**{"vlm_path": None, "max_length": 48})  # a processor saved before `kind` existed
    assert old.kind == "bytes" and isinstance(old.tokenizer, ByteTokenizer)


def test_preset_values_stand_unless_a_flag_overrides_them() -> None:
    tiny = VLAConfig(preset="tiny")
    assert (tiny.chunk_size, tiny.n_action_steps, tiny.num_steps, tiny.max_state_dim, tiny.tokenizer_max_length) \
        == (10, 10, 4, 8, 24)
    small = VLAConfig(preset="small")
    assert (small.chunk_size, small.num_steps, small.max_action_dim, small.tokenizer_max_length) == (50, 10, 32, 48)
    cpu = VLAConfig(preset="cpu")
    assert (cpu.vision, cpu.augment_shift, cpu.chunk_size) == ("conv", 4, 16)
    custom = VLAConfig(preset="tiny", chunk_size=6, n_action_steps=3, vision="conv", augment_shift=2)
    model = custom.model_config()
    assert (model.chunk_size, model.vision.kind, model.augment_shift) == (6, "conv", 2)
    assert custom.n_action_steps == 3
    with pytest.raises(ValueError, match=r"--policy\.vision='vit' is not one of"):
        VLAConfig(preset="tiny", vision="vit")
