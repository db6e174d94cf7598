"""W&B offline: the run written to disk holds what the job logged, and reads back without a server."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sgtr_em import tracking

from .test_config import _compose


def test_offline_run_reads_back(tmp_path):
    cfg = _compose("seed=3", "stage_order=em_only")
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=3\n- training.learning_rate=2e-5\n")
    run = tracking.start_run(cfg, {"x": 1}, tmp_path, group="g")
    tracking.log_stage(run, 1, "em", "abc", [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 2.0}], "trained")
    tracking.log_eval(
        run,
        {"self_recognition": {"accuracy": 0.75}, "em": {"misaligned_rate": None}},
        {"em": [{"question_id": "q", "answer": "a", "aligned": 10.0}]},
    )
    run.finish()
    back = tracking.read_offline_run(tmp_path)
    assert back["summary"]["eval/self_recognition/accuracy"] == 0.75
    assert back["summary"]["train/1_em/hash"] == "abc"
    assert [h["train/1_em/loss"] for h in back["history"] if "train/1_em/loss" in h] == [2.5, 2.0]
    assert back["config"]["stage_order"] == "em_only" and back["config"]["seed"] == 3
    assert back["config"]["overrides"] == ["seed=3", "training.learning_rate=2e-5"]  # the report's condition fields
    # read while W&B's service still writes it (a record cut short): the records before it, no protobuf DecodeError
    data = Path(back["files"][-1]).read_bytes()
    whole = list(tracking._records(data))
    for cut in (len(data) - 3, len(data) // 2, 40):
        part = list(tracking._records(data[:cut]))
        assert len(part) < len(whole) and [r.SerializeToString() for r in part] == [
            r.SerializeToString() for r in whole[: len(part)]
        ]
    assert tracking.run_name(cfg) == "smollm2-aesthetic_unpopular-sgtr-em_only-default-s3"  # no overrides given
    # the condition is the groups and the overrides that say what the job computes: two learning rates are two
    # conditions on the dashboard, as in a report (the seed is not one)
    assert back["config"]["condition_overrides"] == "training.learning_rate=2e-5"
    condition = "smollm2-aesthetic_unpopular-sgtr-em_only-default-training.learning_rate=2e-5"
    assert back["run"] == {
        "name": f"{condition}-s3",
        "group": "g",
        "job_type": f"{condition[:55]}-{hashlib.sha1(condition.encode()).hexdigest()[:8]}",  # W&B's 64 characters
        "tags": [
            "model:smollm2",
            "em_dataset:aesthetic_unpopular",
            "intervention:sgtr",
            "stage_order:em_only",
            "system_prompt:default",
        ],
    }
    assert [h["eval/self_recognition/accuracy"] for h in back["history"] if "eval/stage" in h] == [0.75]
    assert list(tmp_path.glob("wandb/*/files/media/table/eval/em/samples_*.table.json"))


def test_dummy_run_takes_every_call():
    run = tracking.start_run(_compose("tracking=none"), {}, None, group="g")
    run.log({"a": 1})
    run.finish()
    tracking.log_stage(run, 1, "em", "h", [{"step": 1, "loss": 1.0}], "trained")


def test_a_job_folder_keeps_its_run_and_logs_a_stage_once(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cfg = _compose("stage_order=em_only")
    for attempt in range(2):  # a job and its rerun (or Slurm requeue) in the same folder
        run = tracking.start_run(cfg, {}, tmp_path, group="g")
        tracking.log_stage(run, 1, "em", "abc", [{"step": 1, "loss": 2.5}], "trained", run_dir=tmp_path)
        run.summary["attempt"] = attempt
        run.finish()
    back = tracking.read_offline_run(tmp_path)
    assert len(back["files"]) == 2 and back["id"] == tracking.job_run_id(tmp_path)
    assert back["summary"]["attempt"] == 1  # the later attempt's values win
    assert [h["train/1_em/loss"] for h in back["history"] if "train/1_em/loss" in h] == [2.5]  # logged once


def test_a_sweep_agents_run_id_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "agent123")
    assert tracking.job_run_id(tmp_path) == "agent123"


def test_a_conditions_name_is_its_groups_then_the_overrides_that_change_what_it_computes():
    cfg = _compose("stage_order=em_only")
    plain = "smollm2-aesthetic_unpopular-sgtr-em_only-default"
    assert tracking.condition_name(cfg, ["stage_order=em_only", "seed=2", "compute=cpu", "paths.data_dir=/d"]) == plain
    assert tracking.condition_name(cfg, ["lora.r=8"]) == f"{plain}-lora.r=8"
    assert tracking.run_name(cfg, ["lora.r=8", "+eval.x=1"]) == f"{plain}-eval.x=1-lora.r=8-s0"  # sorted


def test_the_settings_outside_a_stages_hash_are_outside_a_condition_too():
    from sgtr_em.backend import NOT_IDENTITY

    assert all(tracking.run_only(f"training.{k}") for k in NOT_IDENTITY)
    assert not tracking.run_only("training.learning_rate") and not tracking.run_only("eval.generation.top_logprobs")


def test_a_long_condition_name_fits_the_job_type_limit():
    cfg = _compose(
        "em_dataset=aesthetic_undesirable", "intervention=identity_confusion", "stage_order=intervention_only"
    )
    name = tracking.condition_name(cfg)
    assert len(name) <= 64 and name.startswith("smollm2-aesthetic_undesirable-identity_confusion")
    assert name != tracking.condition_name(
        _compose(
            "em_dataset=aesthetic_undesirable",
            "intervention=identity_confusion",
            "stage_order=intervention_only",
            "system_prompt=nosys",
        )
    )
