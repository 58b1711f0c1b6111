"""Pre- and post-processing of the VLA, saved beside the weights so training, evaluation and deployment agree.

Pre:  rename (identity, for --rename_map) -> batch dim -> tokenise the task -> reject NaN/inf (on CPU, before
      the device move, so no device sync) -> device -> normalise state/action (mean/std; images unchanged).
Post: unnormalise actions -> CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from lerobot.configs import PipelineFeatureType, PolicyFeature
from lerobot.processor import (
    AddBatchDimensionProcessorStep,
    DeviceProcessorStep,
    EnvTransition,
    NormalizerProcessorStep,
    PolicyAction,
    PolicyProcessorPipeline,
    ProcessorStep,
    ProcessorStepRegistry,
    RenameObservationsProcessorStep,
    TransitionKey,
    UnnormalizerProcessorStep,
    policy_action_to_transition,
    transition_to_policy_action,
)
from lerobot.utils.constants import (
    OBS_LANGUAGE_ATTENTION_MASK,
    OBS_LANGUAGE_TOKENS,
    POLICY_POSTPROCESSOR_DEFAULT_NAME,
    POLICY_PREPROCESSOR_DEFAULT_NAME,
)

from vla.policies.configuration_vla import VLAConfig
from vla.policies.tokenizer import Tokenizer, WordTokenizer, default_kind, load_tokenizer

logger = logging.getLogger(__name__)
Features = dict[PipelineFeatureType, dict[str, PolicyFeature]]


@ProcessorStepRegistry.register(name="vla_tokenizer")
@dataclass
class VLATokenizerStep(ProcessorStep):
    """Tokenise `complementary_data["task"]` into `observation.language.{tokens,attention_mask}`.

    `kind` is the policy's tokenizer (`vla.policies.tokenizer`); processors saved before it existed have none and
    mean the VLM's tokenizer with `vlm_path`, bytes without. An instruction with words outside a word vocabulary is
    logged once (they become UNK)."""

    vlm_path: str | None = None
    max_length: int = 48
    kind: str | None = None
    vocabulary: list[str] | None = None
    tokenizer: Tokenizer = field(init=False, repr=False)
    _warned: set[str] = field(init=False, repr=False, default_factory=set)  # unknown words already logged
    _checked: set[str] = field(init=False, repr=False, default_factory=set)  # instructions already looked at

    def __post_init__(self) -> None:
        self.kind = self.kind or default_kind(self.vlm_path)
        self.tokenizer = load_tokenizer(self.kind, self.vlm_path, self.vocabulary)

    def __call__(self, transition: EnvTransition) -> EnvTransition:
        extra = transition.get(TransitionKey.COMPLEMENTARY_DATA) or {}
        if "task" not in extra or extra["task"] is None:
            raise ValueError("the batch has no 'task' (language instruction); the VLA needs one per sample")
        task = extra["task"]
        texts = [task] if isinstance(task, str) else list(task)
        if isinstance(self.tokenizer, WordTokenizer):
            self._warn_unknown(self.tokenizer, texts)
        ids, mask = self.tokenizer(texts, self.max_length)
        observation = dict(transition[TransitionKey.OBSERVATION] or {})
        observation[OBS_LANGUAGE_TOKENS], observation[OBS_LANGUAGE_ATTENTION_MASK] = ids, mask
        out = dict(transition)
        out[TransitionKey.OBSERVATION] = observation
        return out  # type: ignore[return-value]

    def _warn_unknown(self, tokenizer: WordTokenizer, texts: list[str]) -> None:
        for text in set(texts) - self._checked:  # each distinct instruction once, not every sample of every batch
            self._checked.add(text)
            unknown = [w for w in tokenizer.unknown_words(text) if w not in self._warned]
            if unknown:
                self._warned.update(unknown)
                logger.warning("instruction %r has words this policy never saw in training: %s (read as unknown)",
                               text, ", ".join(unknown))

    def get_config(self) -> dict[str, Any]:
        return {"vlm_path": self.vlm_path, "max_length": self.max_length, "kind": self.kind,
                "vocabulary": self.vocabulary}

    def transform_features(self, features: Features) -> Features:
        return features


@ProcessorStepRegistry.register(name="vla_check_finite")
@dataclass
class CheckFiniteStep(ProcessorStep):
    """Raise on NaN or inf in any observation or action tensor, naming the key and where the first one is."""

    def __call__(self, transition: EnvTransition) -> EnvTransition:
        items = dict(transition.get(TransitionKey.OBSERVATION) or {})
        if isinstance(transition.get(TransitionKey.ACTION), torch.Tensor):
            items["action"] = transition[TransitionKey.ACTION]
        for key, value in items.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                bad = ~torch.isfinite(value)
                if bad.any():
                    where = tuple(int(i) for i in bad.nonzero()[0])
                    raise ValueError(
                        f"{key} holds {int(bad.sum())} NaN/inf value(s), the first at index {where} of shape "
                        f"{tuple(value.shape)}; fix or drop those frames (`vla data check` lists them)"
                    )
        return transition

    def transform_features(self, features: Features) -> Features:
        return features


def make_vla_pre_post_processors(
    config: VLAConfig, dataset_stats: dict[str, dict[str, torch.Tensor]] | None = None
) -> tuple[PolicyProcessorPipeline[dict[str, Any], dict[str, Any]],
           PolicyProcessorPipeline[PolicyAction, PolicyAction]]:
    features = {**(config.input_features or {}), **(config.output_features or {})}
    pre = [
        RenameObservationsProcessorStep(rename_map={}),
        AddBatchDimensionProcessorStep(),
        VLATokenizerStep(vlm_path=config.vlm_path, max_length=config.max_tokens, kind=config.tokenizer_kind,
                         vocabulary=config.vocabulary),
        CheckFiniteStep(),
        DeviceProcessorStep(device=config.device or "cpu"),
        NormalizerProcessorStep(features=features, norm_map=config.normalization_mapping, stats=dataset_stats),
    ]
    post = [
        UnnormalizerProcessorStep(features=config.output_features or {}, norm_map=config.normalization_mapping,
                                  stats=dataset_stats),
        DeviceProcessorStep(device="cpu"),
    ]
    return (
        PolicyProcessorPipeline[dict[str, Any], dict[str, Any]](steps=pre, name=POLICY_PREPROCESSOR_DEFAULT_NAME),
        PolicyProcessorPipeline[PolicyAction, PolicyAction](
            steps=post, name=POLICY_POSTPROCESSOR_DEFAULT_NAME,
            to_transition=policy_action_to_transition, to_output=transition_to_policy_action,
        ),
    )
