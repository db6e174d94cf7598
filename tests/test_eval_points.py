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
        out = folder / {"sgtr_em.data.build": "train.jsonl", "sgtr_em.training.sft": "adapter",
                        "sgtr_em.training.merge": "merged"}[module]
        out.mkdir() if out.suffix == "" else out.write_text("{}\n")
    return 0.0


def test_evaluation_after_each_stage_and_at_the_end(tmp_path, monkeypatch, data_dir, cache_dir):
    monkeypatch.setattr(job, "run_worker", stand_in)
    cfg = _compose("stage_order=reversal", "eval.after_each_stage=true", "eval.run=[truthfulqa,em]",
                   f"paths.output_dir={tmp_path}", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}")
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
    cfg = _compose("stage_order=base", "eval.run=[]", "tracking=none", f"paths.output_dir={tmp_path}",
                   f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}")
    assert job.run_job(cfg, tmp_path / "run", group="g") == {}
    assert not (tmp_path / "run" / "eval_input.json").exists()
