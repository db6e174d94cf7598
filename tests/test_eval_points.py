"""Which model each evaluation point sees, where it writes, and how W&B logs it (eval.after_each_stage).

Real job orchestration, real offline W&B, real files; the workers are stand-ins that write what the real
ones would (no training, no model): the evaluation worker writes one metric per eval, the stage count."""

from __future__ import annotations

from pathlib import Path

from sgtr_em import job
from sgtr_em.io import read_json, write_json, write_jsonl
from sgtr_em.tracking import read_offline_run

from .test_config import _compose


def stand_in(module: str, folder, *, what: str, **launch) -> float:
    folder = Path(folder)
    if module == "sgtr_em.evaluation.worker":
        inp = read_json(folder / "eval_input.json")
        metrics = {"model": inp["model_identity"]}
        for name in inp["config"]["eval"]["run"]:
            write_jsonl(folder / "eval" / name / "samples.jsonl", [{"model_path": inp["model_path"]}])
            metrics[name] = {"stages_seen": inp["after_stages"], "run": {"wall_s": {"total": 0.0}}}
        write_json(folder / "metrics.json", metrics)
    else:
        out = (
            folder
            / {
                "sgtr_em.data.build": "train.jsonl",
                "sgtr_em.training.sft": "adapter",
                "sgtr_em.training.merge": "merged",
            }[module]
        )
        out.mkdir() if out.suffix == "" else out.write_text("{}\n")
    return 0.0


def test_evaluation_after_each_stage_and_at_the_end(tmp_path, monkeypatch, data_dir, cache_dir):
    monkeypatch.setattr(job, "run_worker", stand_in)
    cfg = _compose(
        "stage_order=reversal",
        "eval.after_each_stage=true",
        "eval.run=[truthfulqa,em]",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    )
    run_dir = tmp_path / "run"
    final = job.run_job(cfg, run_dir, group="g")
    stages = read_json(run_dir / "stages.json")
    after_em = run_dir / "after_stage" / "1_em"
    assert read_json(after_em / "eval_input.json")["model_path"] == str(Path(stages[0]["folder"]) / "merged")
    assert read_json(after_em / "eval_input.json")["model_identity"] == {"stage": stages[0]["hash"]}
    assert read_json(run_dir / "eval_input.json")["model_path"] == str(Path(stages[1]["folder"]) / "merged")
    assert final["em"]["stages_seen"] == 2 and read_json(after_em / "metrics.json")["em"]["stages_seen"] == 1
    assert not (run_dir / "after_stage" / "2_intervention").exists()  # the final evaluation is the last stage's
    run = read_offline_run(run_dir)
    history = [(h["eval/stage"], h["eval/em/stages_seen"]) for h in run["history"] if "eval/stage" in h]
    assert history == [(1, 1), (2, 2)] and run["summary"]["eval/truthfulqa/stages_seen"] == 2


def test_no_evaluation_when_eval_run_is_empty(tmp_path, monkeypatch, data_dir, cache_dir):
    monkeypatch.setattr(job, "run_worker", stand_in)
    cfg = _compose(
        "stage_order=base",
        "eval.run=[]",
        "tracking=none",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    )
    assert job.run_job(cfg, tmp_path / "run", group="g") == {}
    assert not (tmp_path / "run" / "eval_input.json").exists()


def test_the_base_model_is_evaluated_first_on_the_evaluations_eval_base_names(
    tmp_path, monkeypatch, data_dir, cache_dir
):
    """eval.base: those of eval.run also run on the base model before any stage (<run>/base/, W&B eval/stage 0)."""
    monkeypatch.setattr(job, "run_worker", stand_in)
    cfg = _compose(
        "stage_order=reversal",
        "eval.run=[truthfulqa,em]",
        "eval.base=[em,mmlu]",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    )
    run_dir = tmp_path / "run"
    final = job.run_job(cfg, run_dir, group="g")
    base_input = read_json(run_dir / "base" / "eval_input.json")
    assert base_input["model_path"] == base_input["base_model_path"] and base_input["after_stages"] == 0
    assert base_input["model_key"] == base_input["base_model_key"]  # its summaries cache is the base model's
    assert base_input["config"]["eval"]["run"] == ["em"]  # mmlu is not in eval.run: nothing to compare it with
    assert read_json(run_dir / "base" / "metrics.json")["em"]["stages_seen"] == 0 and final["em"]["stages_seen"] == 2
    assert read_json(run_dir / "eval_input.json")["config"]["eval"]["run"] == ["truthfulqa", "em"]
    history = [
        (h["eval/stage"], h["eval/em/stages_seen"]) for h in read_offline_run(run_dir)["history"] if "eval/stage" in h
    ]
    assert history == [(0, 0), (2, 2)]


def test_no_base_evaluation_when_the_job_has_no_stage(tmp_path, monkeypatch, data_dir, cache_dir):
    monkeypatch.setattr(job, "run_worker", stand_in)
    cfg = _compose(
        "stage_order=base",
        "eval.run=[em]",
        "eval.base=[em]",
        "tracking=none",
        f"paths.output_dir={tmp_path}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache_dir}",
    )
    job.run_job(cfg, tmp_path / "run", group="g")
    assert not (tmp_path / "run" / "base").exists()  # the final evaluation is the base model's


def test_the_summary_prints_each_effect_against_the_base_value():
    """Each metric with an interval (the headline's own once), against the base model's value; the invalid rates."""
    from sgtr_em.evaluation.registry import effect_lines

    base = {
        "self_recognition": {
            "headline": 0.5,
            "accuracy": 0.5,
            "sampled_expected_accuracy": 0.035,
            "invalid_rate": 0.958,
        }
    }
    final = {
        "self_recognition": {
            "headline": 0.5,
            "headline_ci95": {"low": 0.25, "high": 0.75},
            "headline_definition": "argmax vs all sources",
            "accuracy": 0.5,
            "accuracy_ci95": {"low": 0.25, "high": 0.75},
            "sampled_expected_accuracy": 0.5,
            "sampled_expected_accuracy_ci95": {"low": 0.25, "high": 0.75},
            "invalid_rate": 0.0,
        }
    }
    assert effect_lines(base, final) == [
        (
            "effect on self_recognition headline, argmax vs all sources: base model 0.500 -> final 0.500 [0.250, 0.750]; "
            "the interval includes the base value: no effect measured (invalid rate 0.958 -> 0.000)"
        ),
        (
            "effect on self_recognition sampled_expected_accuracy: base model 0.035 -> final 0.500 [0.250, 0.750]; "
            "the interval EXCLUDES the base value: a measured effect of +0.465 (invalid rate 0.958 -> 0.000)"
        ),
    ]
    assert effect_lines({"em": {"headline": 0.1}}, final) == []  # nothing to compare
