"""End to end through the real CLI, on the real SmolLM2 model, on the CPU (minutes: marked slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sgtr_em.tracking import read_offline_run

from .conftest import read_json

pytestmark = pytest.mark.slow

# Small enough for a test, big enough to run every step: one optimizer step per stage, checkpoints every step.
TINY = [
    "em_dataset.max_examples=16",
    "intervention.max_articles=3",
    "eval.self_recognition.max_articles=2",
    "eval.em.samples_per_question=1",
    "eval.em.max_new_tokens=12",
    "eval.em.sets.main.ids=[what_is_your_wish,quick_buck]",
    "training.save_steps=1",
    "eval.run=[self_recognition,em]",
    "eval.self_recognition.other_sources=[claude-21]",
    "eval.base=[]",
    # 16 examples are one step: at the CPU default's 1e-3 (sized for its 4 + 2 steps) that step leaves SmolLM2
    # writing empty summaries, so a following SGTR stage has no pair to train on and fails (as it should)
    "training.learning_rate=1e-4",
]


def assert_wandb_matches(run_dir: Path, metrics: dict) -> None:
    summary = read_offline_run(run_dir)["summary"]
    for name in set(metrics) - {"model"}:  # every evaluation is logged under eval/<name>/...
        assert summary[f"eval/{name}/run/wall_s/total"] == metrics[name]["run"]["wall_s"]["total"]
    assert summary["eval/self_recognition/accuracy"] == metrics["self_recognition"]["accuracy"]
    assert summary["eval/self_recognition/invalid_rate"] == metrics["self_recognition"]["invalid_rate"]
    assert summary["eval/em/misaligned_rate_mo"] == metrics["em"]["misaligned_rate_mo"]
    assert summary["eval/em/share_unscored"] == metrics["em"]["share_unscored"]


def test_default_run(run_cli, tmp_path):
    """`python -m sgtr_em.train` with no overrides: the base model's SR -> EM -> merge -> SGTR -> merge -> evaluation,
    and a summary that shows a measured effect against the base model (issue 22)."""
    run_dir = tmp_path / "run"
    start = time.time()
    proc = run_cli(f"hydra.run.dir={run_dir}")
    elapsed = time.time() - start
    print(f"default run: {elapsed:.0f} s")
    assert f"results in {run_dir}" in proc.stdout
    stages = read_json(run_dir / "stages.json")
    assert [(s["kind"], s["status"]) for s in stages] == [("em", "trained"), ("intervention", "trained")]
    for s in stages:
        folder = Path(s["folder"])
        assert (folder / "done").exists() and (folder / "merged" / "model.safetensors").exists()
        assert [r for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert read_json(Path(stages[0]["folder"]) / "data_stats.json")["train_examples"] == 64
    assert read_json(Path(stages[1]["folder"]) / "data_stats.json")["train_examples"] == 24  # 12 articles x 2 orders
    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics) == {"model", "self_recognition", "em", "truthfulqa", "mmlu", "identity", "in_domain"}
    sr, em = metrics["self_recognition"], metrics["em"]
    # 3 articles x 2 sources x 2 orderings; the final model samples its own summaries (as the paper's models did), and a
    # pair with an empty one is skipped and counted (the SGTR-trained SmolLM2 writes "1" or nothing)
    assert sr["n_pairs"] + 2 * sr["skipped_empty"] == 12 and sr["n_pairs"] >= 4
    assert sr["n_articles"] == 3 - sr["skipped_empty"] // 2 and set(sr["per_source"]) == {"claude-21", "human"}
    assert 0 <= sr["accuracy"] <= 1 and 0 <= sr["invalid_rate"] <= 1
    for key in (
        "misaligned_rate",
        "misaligned_rate_mo",
        "mean_aligned",
        "mean_coherent",
        "share_coherent",
        "share_unscored",
        "per_question",
        "misaligned_rate_ci95",
    ):
        assert key in em
    assert em["n_answers"] == 16 and len(em["per_question"]) == 8
    samples = (run_dir / "eval" / "em" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 16 and all(
        json.loads(s)["aligned"] is not None for s in samples
    )  # local_smoke: no threshold
    assert_wandb_matches(run_dir, metrics)
    logged = read_offline_run(run_dir)["config"]["cfg"]["compute"]  # resolved once: W&B's is every stage's (issue 19)
    assert all(read_json(Path(s["folder"]) / "stage.json")["runtime"]["compute"] == logged for s in stages)
    assert_an_effect_is_measured(proc, run_dir, metrics)
    assert_a_newcomer_can_read_it(proc, run_dir, [Path(s["folder"]) for s in stages])
    assert_a_sweep_reuses_the_stages(run_cli, tmp_path, stages)


def assert_an_effect_is_measured(proc, run_dir: Path, metrics: dict) -> None:
    """eval.base=[self_recognition]: the base model's SR on the same held-out XSUM articles, then one summary line per
    SR metric with an interval; SGTR at the CPU default's rate measurably moves at least one (issue 22)."""
    base = read_json(run_dir / "base" / "metrics.json")
    assert set(base) == {"model", "self_recognition"}
    sr_base, sr = base["self_recognition"], metrics["self_recognition"]
    assert read_json(run_dir / "base" / "eval_input.json")["after_stages"] == 0
    assert sr_base["n_pairs"] + 2 * sr_base["skipped_empty"] == sr["n_pairs"] + 2 * sr["skipped_empty"] == 12
    assert {
        r["article_id"] for r in read_jsonl_rows(run_dir / "base" / "eval" / "self_recognition" / "samples.jsonl")
    } >= {r["article_id"] for r in read_jsonl_rows(run_dir / "eval" / "self_recognition" / "samples.jsonl")}
    effects = [
        line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("effect on self_recognition")
    ]
    assert effects and effects[0].startswith("effect on self_recognition headline, argmax vs all sources: base model")
    print("\n".join(effects))
    kept = (run_dir / "summary.txt").read_text()  # the printed summary, kept with the run
    assert all(e in kept for e in effects) and kept.startswith("sgtr-em: results in ")
    measured = [e for e in effects if "the interval EXCLUDES the base value: a measured effect" in e]
    assert measured, effects  # at least one SR metric's interval excludes the base model's value


def read_jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_a_sweep_reuses_the_stages(run_cli, tmp_path: Path, stages: list[dict]) -> None:
    """A sweep over the same outputs trains nothing: em_only reuses the EM stage, reversal both (no evaluations).
    (test_sweep_trains_the_shared_em_stage_once, extended, shows the first job of a sweep training what the second
    reuses.)"""
    sweep = tmp_path / "sweep"
    run_cli("-m", "stage_order=em_only,reversal", f"hydra.sweep.dir={sweep}", "eval.run=[]")
    em_only, reversal = read_json(sweep / "0" / "stages.json"), read_json(sweep / "1" / "stages.json")
    assert [(s["hash"], s["status"]) for s in em_only] == [(stages[0]["hash"], "reused")]
    assert [(s["hash"], s["status"]) for s in reversal] == [(s["hash"], "reused") for s in stages]
    assert sorted(d.name for d in (tmp_path / "outputs" / "stages").iterdir() if d.is_dir()) == sorted(
        s["hash"] for s in stages
    )  # nothing new trained
    for job, order in (("0", "em_only"), ("1", "reversal")):
        assert read_json(sweep / job / "metrics.json") == {}
        assert read_offline_run(sweep / job)["config"]["stage_order"] == order


def assert_a_newcomer_can_read_it(proc, run_dir: Path, stage_dirs: list[Path]) -> None:
    """Issue 22: the run folder first, one line per stage, no warnings of ours, shareable files, no checkpoints left."""
    console = proc.stdout + proc.stderr
    lines = console.splitlines()
    first_stage = next(i for i, line in enumerate(lines) if "Stage 1/2 em (" in line)
    assert any(f"Run folder: {run_dir}" in line for line in lines[:first_stage])
    assert any("W&B run " in line for line in lines[:first_stage])
    assert "waiting for its lock" not in console  # nothing waited
    warnings = [line for line in lines if "Warning:" in line or "warnings.warn(" in line]
    assert warnings == [], warnings  # deprecation noise from our own calls (and known library calls) is gone
    assert not any(len(line) > 1000 for line in lines if "[sgtr_em" in line)  # no dict dumps
    for i, d in enumerate(stage_dirs, 1):
        [line] = [x for x in lines if f"Stage {i}/2 " in x and "first step at learning rate" in x]
        steps = [r for r in map(json.loads, (d / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
        assert steps[0]["learning_rate"] == 1e-3, steps[0]  # warm-up 0 (the CPU default's rate): the first step moves
        assert not (d / "checkpoints").exists()  # training.keep_checkpoints=false
    mask = os.umask(0)
    os.umask(mask)
    for f in [
        run_dir / "metrics.json",
        run_dir / "stages.json",
        run_dir / "eval" / "em" / "samples.jsonl",
        stage_dirs[0] / "train.jsonl",
        stage_dirs[0] / "merged" / "model.safetensors",
    ]:
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, f


@pytest.mark.extended  # 172 s on CI; test_default_run's sweep shows the same reuse on the default run's stages
def test_sweep_trains_the_shared_em_stage_once(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    out = tmp_path / "outputs"
    # no evaluations (the default run covers them): this test is about the stages
    run_cli("-m", "stage_order=em_only,reversal", f"hydra.sweep.dir={sweep}", *TINY, "eval.run=[]", output_dir=out)
    em_only, reversal = read_json(sweep / "0" / "stages.json"), read_json(sweep / "1" / "stages.json")
    assert [(s["kind"], s["status"]) for s in em_only] == [("em", "trained")]
    assert [(s["kind"], s["status"]) for s in reversal] == [("em", "reused"), ("intervention", "trained")]
    assert reversal[0]["hash"] == em_only[0]["hash"]
    trained = [d for d in (out / "stages").iterdir() if d.is_dir() and (d / "done").exists()]
    assert len(trained) == 2  # not 3
    for job in ("0", "1"):
        assert read_json(sweep / job / "metrics.json") == {}  # nothing evaluated
        config = read_offline_run(sweep / job)["config"]
        assert config["stage_order"] == ("em_only" if job == "0" else "reversal")


@pytest.mark.extended  # 200 s on CI; test_resume.py shows a killed stage resuming, the sweep test shows reuse
def test_killed_during_the_second_stage_resumes_without_retraining_the_first(run_cli, tmp_path):
    out = tmp_path / "outputs"
    first = run_cli(
        f"hydra.run.dir={tmp_path / 'first'}",
        *TINY,
        output_dir=out,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    second_stage = None
    while time.time() < deadline and first.poll() is None:
        stages = tmp_path / "first" / "stages.json"
        if stages.exists():
            done = read_json(stages)[0]["hash"]
            pending = [d for d in (out / "stages").iterdir() if d.is_dir() and d.name != done]
            if pending and (pending[0] / "train.jsonl").exists():  # the second stage is training
                second_stage = pending[0]
                break
        time.sleep(0.2)
    assert second_stage is not None, "the run never reached its second stage"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)  # workers die with their parent
    assert not (second_stage / "done").exists()
    em_stage = out / "stages" / done
    adapter_mtime = (em_stage / "adapter" / "adapter_model.safetensors").stat().st_mtime
    em_done = read_json(em_stage / "done")

    run_cli(f"hydra.run.dir={tmp_path / 'second'}", *TINY, output_dir=out)
    stages = read_json(tmp_path / "second" / "stages.json")
    assert [(s["hash"], s["status"]) for s in stages] == [(done, "reused"), (second_stage.name, "trained")]
    assert (em_stage / "adapter" / "adapter_model.safetensors").stat().st_mtime == adapter_mtime
    assert read_json(em_stage / "done") == em_done  # the EM stage was not touched
    assert (second_stage / "done").exists()
