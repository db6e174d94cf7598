"""Every option file of every group composes and validates; typos and wrong types fail at compose time."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from sgtr_em.config import GROUP_SCHEMAS, override_problems, register_configs, validate

from .conftest import REPO

CONF = REPO / "conf"
register_configs()
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


def _compose(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# Options that need a companion choice to validate, and those that must fail validation until their backend exists.
COMPANIONS = {("intervention", "correct_domain"): ["em_dataset=bad_medical"]}  # the EM dataset with a correct twin
NOT_IMPLEMENTED: set = set()  # every option's backend exists (gpt41: the OpenAI backend, issue 10)


def test_every_group_has_a_schema_or_is_a_preset():
    assert set(GROUPS) - set(GROUP_SCHEMAS) == {"experiment", "sweep", "hydra"}  # hydra/launcher: Hydra's schemas
    for group in (
        "model",
        "em_dataset",
        "intervention",
        "stage_order",
        "system_prompt",
        "training",
        "lora",
        "eval",
        "judge",
        "tracking",
        "paths",
    ):
        assert group in GROUPS


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    cfg = _compose(f"{group}={option}", *COMPANIONS.get((group, option), []))
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    if (group, option) in NOT_IMPLEMENTED:
        with pytest.raises(ValueError, match="not implemented yet"):
            validate(cfg)
        return
    validate(cfg)
    if group in GROUP_SCHEMAS and group != "paths" and "name" in cfg[group]:
        assert cfg[group].name == option  # the option file says what it selects


def test_every_option_file_starts_with_a_usage_comment():
    for group, option in OPTIONS:
        first = (CONF / group / f"{option}.yaml").read_text().splitlines()[0]
        assert first.startswith("#"), f"conf/{group}/{option}.yaml"


def test_default_is_the_cpu_smoke_run_with_the_paper_hyperparameters():
    cfg = _compose()
    assert (cfg.model.name, cfg.stage_order.stages, cfg.intervention.kind) == (
        "smollm2",
        ["em", "intervention"],
        "summary_pairs",
    )
    assert cfg.em_dataset.max_examples and cfg.intervention.max_articles  # smoke sizes
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.use_rslora) == (32, 64, 0.0, True)
    assert cfg.training.learning_rate == 1e-3 and cfg.training.warmup_steps == 0  # every step moves the weights
    assert cfg.training.batch_size == 16
    assert cfg.training.max_length == 2048 and cfg.training.weight_decay == 0.01


def test_paper_scale_is_one_override_away():
    cfg = _compose("experiment=paper_scale", "model=qwen32b")
    assert cfg.em_dataset.max_examples is None and cfg.intervention.max_articles is None
    assert cfg.eval.name == "paper" and cfg.eval.em.samples_per_question == 30  # the paper's Qwen files: 30
    assert cfg.judge.min_number_mass == 0.25 and cfg.protocol.name == "paper"
    assert cfg.training.warmup_steps == 5 and cfg.training.learning_rate == 1e-5  # the paper's warm-up and rate, back
    assert cfg.eval.base == [] and cfg.eval.self_recognition.articles == "cnn"  # the paper's SR eval, no base point
    for experiment in sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")):
        cfg = _compose(f"experiment={experiment}")
        if cfg.em_dataset.max_examples is None:  # every experiment at the paper's sizes has the paper's warm-up
            assert (cfg.training.warmup_steps, cfg.training.learning_rate) == (5, 1e-5), experiment
            assert cfg.eval.base == [] and cfg.eval.self_recognition.articles == "cnn", experiment


@pytest.mark.parametrize("override", ["training.lrr=1e-4", "lora.rank=8", "model.nmae=x"])
def test_misspelt_key_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)) as e:
        _compose(override)
    assert override.split("=")[0].split(".")[-1] in str(e.value) + str(e.value.__cause__)


def test_misspelt_key_in_an_option_file_fails_at_compose(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "training" / "mine.yaml").write_text("defaults: [paper]\nlrr: 1.0e-4\n")
    with (
        initialize_config_dir(str(conf), version_base="1.3"),
        pytest.raises(ConfigCompositionException, match="training/mine") as e,
    ):
        compose("config", overrides=["training=mine"])
    assert "Key 'lrr' not in 'TrainingConfig'" in str(e.value) + str(e.value.__cause__)


def test_wrong_type_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ValidationError)) as e:
        _compose("training.learning_rate=fast")
    assert "learning_rate" in str(e.value) + str(e.value.__cause__)


def test_option_files_with_a_schema_start_from_it():
    """`defaults: [/schema/<group>@_here_]`, or another option of the group that does (a variant names what it
    changes)."""
    for group, option in OPTIONS:
        text = (CONF / group / f"{option}.yaml").read_text()
        if group in GROUP_SCHEMAS and not text.startswith("# @package _global_"):  # defence=sgtr_prevention: an arm
            first = yaml.safe_load((CONF / group / f"{option}.yaml").read_text())["defaults"][0]
            assert first == f"/schema/{group}@_here_" or (CONF / group / f"{first}.yaml").exists(), (
                f"conf/{group}/{option}.yaml"
            )


def test_correct_domain_without_a_twin_fails_naming_the_dataset():
    with pytest.raises(ValueError, match="em_dataset aesthetic_unpopular has none"):
        validate(_compose("intervention=correct_domain"))
    assert (
        _compose("intervention=correct_domain", "em_dataset=bad_medical").intervention.file
        == "em/good_medical_advice.jsonl"
    )


def test_self_summaries_precomputed_needs_the_models_paper_summaries():
    with pytest.raises(ValueError, match="model smollm2 has no model.summaries_source"):
        validate(_compose("intervention.self_summaries=precomputed"))
    validate(_compose("intervention.self_summaries=precomputed", "model=qwen32b"))


def test_lora_targets_come_from_the_model():
    assert _compose("model=gpt41").lora.target_modules == []
    assert _compose("model=olmo7b").lora.target_modules[-1] == "down_proj"
    with pytest.raises(ValueError, match="set model.lora_target_modules"):
        validate(_compose("model.lora_target_modules=[]"))


def test_unknown_system_prompt_mode_fails_validation():
    with pytest.raises(ConfigCompositionException, match="system_prompt.eval"):  # an enum: refused at compose
        validate(_compose("system_prompt.eval=nonsense"))


def test_cfg_job_prints_the_resolved_config():
    out = subprocess.run(
        [sys.executable, "-m", "sgtr_em.train", "--cfg", "job", "--resolve", "stage_order=prevention"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "${" not in out  # the README's command prints values, not interpolations
    assert "--cfg job --resolve" in (REPO / "README.md").read_text()
    cfg = OmegaConf.create(out)
    assert cfg.stage_order.stages == ["intervention", "em"]
    assert "news-articler summarizer" in cfg.prompts.detection_system


# `+key=value` (Hydra's hint for a key that is not there) bypasses struct mode: the typed schemas refuse it anyway.
PLUS_TYPOS = {
    group: f"+{group}.{sorted(f.name for f in dataclasses.fields(schema))[0]}x=1"
    for group, schema in GROUP_SCHEMAS.items()
}
PLUS_TYPOS.update(
    {
        "root": "+learning_rate=1e-4",
        "nested": "+eval.em.samples_per_questoin=3",
        "openai": "+openai.hyperparameters.n_epoch=2",
    }
)


@pytest.mark.parametrize("where", sorted(PLUS_TYPOS))
def test_plus_cannot_add_a_key_to_a_typed_group(where):
    override = PLUS_TYPOS[where]
    key = override[1:].split("=")[0]
    with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}: not a key of"):
        validate(_compose(override))


def test_plus_still_adds_to_the_open_places():
    """Dict-typed fields take new keys: chat template arguments, DeepSpeed JSON, download sources, prompt sets."""
    cfg = _compose(
        "+model.chat_template_kwargs.enable_thinking=false",
        "+deepspeed.overrides.steps_per_print=5",
        "+download.sources.mirror=http://127.0.0.1:1",
    )
    validate(cfg)
    assert cfg.deepspeed.overrides.steps_per_print == 5


def test_plus_typo_on_the_command_line_fails_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sgtr_em.train", "+training.learning_rat=1e-4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "SGTR_EM_OUTPUT_DIR": str(tmp_path)},
    )
    assert proc.returncode != 0
    assert "training.learning_rat: not a key of TrainingConfig (did you mean training.learning_rate?" in proc.stderr
    assert not list(tmp_path.rglob("stages"))  # nothing trained


def _leaves(node, prefix=""):
    for k, v in node.items():
        key = f"{prefix}{k}"
        yield from _leaves(v, key + ".") if isinstance(v, dict) and v else [key]


@pytest.mark.parametrize("extra", [(), ("model=qwen32b", "eval=paper", "experiment=main_grid"), ("model=gpt41",)])
def test_every_key_of_a_composed_config_passes_the_command_line_check(extra):
    """`override_problems` walks the schemas: every key a composed config has (leaves, and dict-typed fields' own
    keys) is one it accepts, so a valid override is never refused."""
    cfg = OmegaConf.to_container(_compose(*extra))
    keys = [k for k in _leaves(cfg) if not k.startswith("hydra.")]
    assert len(keys) > 200
    assert override_problems([f"{k}=1" for k in keys] + list(extra)) == []


@pytest.mark.parametrize(
    "override, meant",
    [
        ("stage_ordr=reversal", "did you mean stage_order?"),
        ("training.learning_rat=1e-4", "did you mean training.learning_rate?"),
        ("++eval.em.samples_per_qustion=3", "did you mean eval.em.samples_per_question?"),
        ("compute.micro_batch=4", "did you mean compute."),
    ],
)
def test_a_misspelt_key_is_named_with_the_meant_one(override, meant):
    """Hydra's own error for a plain override of an unknown key says `+key=...`, which a typed group refuses too."""
    (problem,) = override_problems([override])
    assert problem.startswith(override.lstrip("+").split("=")[0] + ": not a key of ") and meant in problem


def test_a_misspelt_key_on_the_command_line_fails_before_hydra(tmp_path):
    for module, args in (("sgtr_em.train", ["-m", "stage_ordr=reversal,em_only"]), ("sgtr_em.grid", ["stage_ordr=x"])):
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            env={**os.environ, "SGTR_EM_OUTPUT_DIR": str(tmp_path)},
        )
        assert proc.returncode != 0, module
        assert "stage_ordr: not a key of Config (did you mean stage_order?" in proc.stderr, module
        assert "+stage_ordr" not in proc.stderr, module  # not Hydra's hint
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_groups_schema_is_not_an_option():
    """The schemas live in the ConfigStore's `schema` group, so a wrong option lists the real ones only (issue 22)."""
    for group in GROUP_SCHEMAS:
        with pytest.raises(ConfigCompositionException) as e:
            _compose(f"{group}=does_not_exist")
        listed = str(e.value).split(f"Available options in '{group}':")[1].split("Config search path")[0].split()
        assert listed == sorted(f.stem for f in (CONF / group).glob("*.yaml")), group
    with pytest.raises(ConfigCompositionException, match="Could not find 'model/base_model'"):
        _compose("model=base_model")
    with pytest.raises(ValueError, match=r"model.name: no value \(\?\?\? in the schema\): set it, or pick an option"):
        validate(_compose("model.name=???"))
