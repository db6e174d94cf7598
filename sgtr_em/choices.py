"""The closed sets of values the config's typed fields take (the structured configs in sgtr_em/config.py,
sgtr_em/evaluation/schemas.py and sgtr_em/defences.py), as Python enums: OmegaConf refuses any other value when
Hydra composes, naming the key and the allowed values (`Invalid value 'tgi', expected one of [auto, hf, ...]`).

A member is its own string: it compares, hashes, formats, prints and serialises to JSON as the plain value, so
code reads `cfg.model.backend == "openai"` and a stage's hash is what it was with plain strings. Open sets stay
strings, checked against their registries: `intervention.kind` (data/interventions.py BUILDERS), `eval.run`
(evaluation/registry.py EVALS). This module imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A value of a closed set: a `str` whose name is its value (the spelling in YAML and overrides)."""

    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__  # messages quote the value as before: 'openai'


class ModelBackend(Choice):  # model.backend
    hf = "hf"  # transformers + PEFT
    openai = "openai"  # the fine-tuning API and API evaluation (model=gpt41)


class StageKind(Choice):  # stage_order.stages
    em = "em"
    intervention = "intervention"


class SystemPromptMode(Choice):  # system_prompt.{em_train,intervention_train,eval} (data/system_prompt.py)
    default = "default"
    none = "none"
    identity = "identity"
    task = "task"
    custom = "custom"


class Launcher(Choice):  # compute.launcher
    auto = "auto"
    python = "python"
    torchrun = "torchrun"
    accelerate = "accelerate"


class TrackingBackend(Choice):  # tracking.backend
    wandb = "wandb"
    none = "none"


class TrackingMode(Choice):  # tracking.mode
    offline = "offline"
    online = "online"


class LabelRule(Choice):  # intervention.labels (summary_pairs; data/sgtr.py)
    prefer_self = "prefer_self"
    prefer_other = "prefer_other"
    both = "both"
    longer = "longer"


class SelfSummaries(Choice):  # intervention.self_summaries (summary kinds; data/summaries.py)
    stage_input = "stage_input"
    base_model = "base_model"
    precomputed = "precomputed"


class GenerationBackend(Choice):  # eval.generation.backend
    auto = "auto"
    hf = "hf"  # padded batches
    hf_continuous = "hf_continuous"  # transformers' generate_batch
    openai = "openai"  # an API model
    vllm = "vllm"


class JudgeBackend(Choice):  # judge.backend
    local = "local"
    openai = "openai"


class JudgeScoring(Choice):  # judge.scoring, protocol.judge_scoring
    logprob = "logprob"
    text = "text"


class EmRate(Choice):  # protocol.em_rate
    paper = "paper"
    betley = "betley"
    mo = "mo"


class ChoiceEstimator(Choice):  # protocol.sr_estimator, protocol.truthfulqa_estimator
    sampled_expected = "sampled_expected"
    sampled = "sampled"
    argmax = "argmax"
    probability = "probability"
    greedy = "greedy"


class SrSystem(Choice):  # eval.self_recognition.system, protocol.sr_system
    detection = "detection"
    intervention = "intervention"


class MmluPromptStyle(Choice):  # eval.mmlu.prompt_style, protocol.mmlu_prompt_style
    chat = "chat"
    lm_eval = "lm_eval"
    letter = "letter"


class MmluSplit(Choice):  # eval.mmlu.letter.split
    dev = "dev"
    test = "test"


class DefenceKind(Choice):  # defence.kind (sgtr_em/defences.py)
    none = "none"
    kl = "kl"
    ldifs = "ldifs"
    interleave = "interleave"
    interleave_ppl = "interleave_ppl"
    inoculation = "inoculation"
    persona_steer = "persona_steer"


class PplSelection(Choice):  # defence.selection (interleave_ppl)
    em_minus_ref = "em_minus_ref"
    ref_minus_em = "ref_minus_em"


def values(choice: type[Choice]) -> tuple[str, ...]:
    """The allowed spellings, in declaration order."""
    return tuple(m.value for m in choice)
