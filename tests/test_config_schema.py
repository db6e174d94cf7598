"""The schema's own guarantees: closed sets are enums refused at compose time, one endpoint schema (ApiConfig),
stage hashes unchanged by how the schema spells its values, and each intervention builder's declared keys."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from enum import Enum

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sgtr_em.backend import api_settings
from sgtr_em.config import Config, InterventionConfig, OpenAIConfig, validate
from sgtr_em.contracts import StageRuntime
from sgtr_em.data.files import DataFiles
from sgtr_em.data.interventions import BUILDERS, COMMON_KEYS, build_stage_rows
from sgtr_em.inference.api import ApiConfig
from sgtr_em.plan import content_hash, final_model_identity, plan_stages

from .test_config import CONF, _compose

# Every enum-typed key of the config (sgtr_em/choices.py). A new one joins this list, and so gets its typo test.
ENUM_KEYS = [
    "model.backend",
    "intervention.labels",
    "intervention.self_summaries",
    "stage_order.stages",
    "system_prompt.em_train",
    "system_prompt.intervention_train",
    "system_prompt.eval",
    "compute.launcher",
    "eval.generation.backend",
    "eval.self_recognition.system",
    "eval.mmlu.prompt_style",
    "eval.mmlu.letter.split",
    "judge.backend",
    "judge.scoring",
    "protocol.em_rate",
    "protocol.sr_estimator",
    "protocol.truthfulqa_estimator",
    "protocol.judge_scoring",
    "protocol.sr_system",
    "protocol.mmlu_prompt_style",
    "tracking.backend",
    "tracking.mode",
    "defence.kind",
    "defence.selection",
    "defence.stages",
]


def enum_fields(schema, prefix: str = "") -> dict[str, type]:
    """{key: enum class} of every field typed with an Enum (or a list of one), through nested dataclasses."""
    out = {}
    for f in dataclasses.fields(schema):
        hint = typing.get_type_hints(schema)[f.name]
        inner = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        inner = next((a for a in typing.get_args(inner) if a is not type(None)), inner)  # Optional[X] -> X
        if isinstance(inner, type) and issubclass(inner, Enum):
            out[prefix + f.name] = inner
        elif dataclasses.is_dataclass(inner):
            out.update(enum_fields(inner, f"{prefix}{f.name}."))
    return out


ENUMS = enum_fields(Config)


def test_the_enum_keys_are_the_listed_ones():
    assert sorted(ENUMS) == sorted(ENUM_KEYS)


@pytest.mark.parametrize("key", ENUM_KEYS)
def test_a_typo_in_an_enum_field_fails_at_compose_naming_the_key(key):
    allowed = [m.value for m in ENUMS[key]]
    typo = allowed[0][:-1] + "x"  # one letter off
    override = f"{key}=[{allowed[0]},{typo}]" if key.endswith(".stages") else f"{key}={typo}"  # the two lists
    with initialize_config_dir(str(CONF), version_base="1.3"), pytest.raises(ConfigCompositionException) as e:
        compose("config", overrides=[override])
    message = f"{e.value} {e.value.__cause__}"
    assert f"full_key: {key}" in message and f"expected one of [{', '.join(allowed)}]" in message, message


def test_enum_values_read_write_and_hash_as_their_strings():
    cfg = _compose("model=gpt41", "judge=openai")
    assert cfg.model.backend == "openai" and cfg.judge.backend == "openai"
    assert cfg.stage_order.stages == ["em", "intervention"]
    assert f"{cfg.model.backend}/{cfg.judge.scoring}" == "openai/logprob" and repr(cfg.model.backend) == "'openai'"
    assert {"openai": 1}[cfg.model.backend] == 1 and str(cfg.model.backend).__class__ is str
    as_json = json.dumps(OmegaConf.to_container(cfg.system_prompt, resolve=True), sort_keys=True)
    assert as_json == json.dumps(
        {"custom": None, "em_train": "default", "eval": "default", "intervention_train": "task", "name": "default"},
        sort_keys=True,
    )
    assert "backend: openai\n" in OmegaConf.to_yaml(cfg.model)


# Stage hashes (each stage, then the final model's identity) as main's own code computes them without enums (21a1a4d;
# gpt41 and paper_scale also equal 3f4ee89's): how the schema spells a value never moves a hash. Moved once, on
# purpose: an open model's summaries are sampled as the paper's (prompts.summary.*.temperature/top_p/top_k/seed enter
# the spec where an open model writes them); the paper's files and an API model's kept their hashes.
PINNED_HASHES = {
    "": ["f2baa72ee969e88d", "0ea73e440a8a81d1", "19ca07a4e0021ad3"],
    "model=gpt41": ["5f78549c8d62b6ff", "2be6cf646921aa45", "77a470bbd989cbc6"],
    "experiment=paper_scale model=qwen32b": ["a054c0e1df812b52", "2bb61095a9062113", "7f796a841ef543ee"],
    "intervention=word_count": ["f2baa72ee969e88d", "0f52392efb9785c6", "9acd5211b87555fa"],
    "defence=interleave_ppl stage_order=prevention": ["5a9325b6e9763d1a", "98a8a452a77844d2", "b0c542e750530c0d"],
    "intervention=prefer_other system_prompt=qwensys model=qwen32b": [
        "b41cc9733b31f2a6",
        "b192a2c2aac6d152",
        "776f3fc0aab8b4e6",
    ],
}


@pytest.mark.parametrize("overrides", sorted(PINNED_HASHES))
def test_stage_hashes_are_pinned(overrides):
    cfg = _compose(*overrides.split())
    stages = plan_stages(cfg)
    assert [s.hash for s in stages] + [content_hash(final_model_identity(stages, cfg))] == PINNED_HASHES[overrides]


def test_one_endpoint_schema_for_the_judge_the_api_model_and_fine_tuning():
    cfg = _compose("model=gpt41", "judge=openai")
    assert issubclass(OpenAIConfig, ApiConfig)  # the `openai` block: ApiConfig's keys + the fine-tuning job's
    for node in (cfg.openai, cfg.judge.api, cfg.eval.generation.api):
        assert issubclass(OmegaConf.get_type(node), ApiConfig)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    api = api_settings(resolved["openai"])
    assert list(api) == [f.name for f in dataclasses.fields(ApiConfig)]
    assert api["timeout_s"] == 120 and api["output_usd_per_mtok"] == 12.0  # conf/config.yaml's openai block
    with pytest.raises(ConfigCompositionException, match="openai.max_concurency"):
        _compose("openai.max_concurency=4")  # a typo in the shared keys fails at compose, as in judge.api
    with pytest.raises(ConfigCompositionException, match="judge.api.poll_interval_s"):
        _compose("judge.api.poll_interval_s=4")  # fine-tuning keys belong to the `openai` block only


@pytest.mark.parametrize(
    "overrides,key,readers",
    [
        (
            ["intervention=word_count", "intervention.articles=cnn"],
            "intervention.articles",
            "['summary_pairs', 'summary_word_count']",
        ),
        (["intervention=sgtr", "intervention.file=em/x.jsonl"], "intervention.file", "['chat_file', 'mmlu_qa']"),
        (["intervention=word_count_summaries", "intervention.labels=both"], "intervention.labels", "['summary_pairs']"),
        (
            ["intervention=general_knowledge", "intervention.other_sources=[llama]"],
            "intervention.other_sources",
            "['summary_pairs', 'summary_word_count']",
        ),
        (
            ["intervention=correct_medical", "intervention.user_template='Q: {question}'"],
            "intervention.user_template",
            "['summary_pairs', 'summary_word_count', 'mmlu_qa']",
        ),
    ],
)
def test_a_key_its_builder_does_not_read_fails_naming_the_kinds_that_do(overrides, key, readers):
    with pytest.raises(ValueError, match=rf"{key}: .* does not read it; only kinds {re.escape(readers)} do"):
        validate(_compose(*overrides))


def test_presets_that_do_not_know_the_builder_still_compose():
    """conf/config.yaml's smoke cap, experiment=paper_scale's summary writer and the tests' size overrides are set
    for every builder; a builder that reads no articles ignores them (PRESET_KEYS). Setting a key back is fine."""
    for overrides in (
        ["intervention=word_count"],
        ["intervention=general_knowledge", "experiment=paper_scale"],
        ["intervention=word_count", "intervention.max_articles=3"],
        ["intervention=correct_medical", "intervention.articles=xsum"],
        ["intervention=none"],
    ):
        validate(_compose(*overrides))


class _Recording(dict):
    """A data spec that records which keys a builder reads."""

    def __init__(self, data: dict):
        super().__init__(data)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize(
    "builder,option",
    [
        ("summary_pairs", "sgtr"),
        ("summary_word_count", "word_count_summaries"),
        ("chat_file", "word_count"),
        ("mmlu_qa", "general_knowledge"),
    ],
)
def test_each_builder_reads_exactly_the_keys_it_declares(builder, option, data_dir, tmp_path):
    """The declaration in BUILDERS is what the builder really reads of its data spec, on the shared data."""
    summaries = ["model=qwen32b", "intervention.self_summaries=precomputed"] if builder.startswith("summary") else []
    cfg = _compose("stage_order=intervention_only", f"intervention={option}", *summaries)
    (stage,) = plan_stages(cfg)
    data = _Recording(stage.spec.data)
    rt = StageRuntime(backend="hf", input_model="unused", cache_dir=str(tmp_path))
    rows, _ = build_stage_rows(
        dataclasses.replace(stage.spec, data=data), rt, DataFiles(data_dir, tmp_path / "cache", download=False)
    )
    assert rows and data["type"] == builder
    keys = {f.name for f in dataclasses.fields(InterventionConfig)}
    read = data.read & keys - set(COMMON_KEYS)
    planned = {"self_summaries"} if BUILDERS[builder].uses_summaries else set()  # read by the plan: summaries_by
    assert read | planned == set(BUILDERS[builder].reads)
