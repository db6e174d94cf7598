"""A newcomer's first hour (issue 22): what a job prints, what it leaves on disk, how it shares a machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sgtr_em.compute import cpu_cores, cpu_threads, thread_env
from sgtr_em.job import drop_checkpoints

REPO = Path(__file__).resolve().parents[1]


def _stage(tmp_path):
    d = tmp_path / "stage"
    for folder, name in (("adapter", "adapter_model"), ("merged", "model")):
        (d / folder).mkdir(parents=True)
        save_file({"w": torch.ones(64, 64)}, str(d / folder / f"{name}.safetensors"))
    (d / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (d / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"x" * 1000)
    return d


def test_a_finished_stage_drops_its_checkpoints_once_its_weights_read_whole(tmp_path):
    d = _stage(tmp_path)
    drop_checkpoints(d)
    assert not (d / "checkpoints").exists() and (d / "merged" / "model.safetensors").exists()
    drop_checkpoints(d)  # nothing left to drop: no error (a rerun)


def test_a_truncated_merge_keeps_the_checkpoints_and_names_the_file(tmp_path):
    d = _stage(tmp_path)
    w = d / "merged" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])
    with pytest.raises(RuntimeError, match="merged/model.safetensors is unreadable .* checkpoints/ are kept"):
        drop_checkpoints(d)
    assert (d / "checkpoints" / "checkpoint-1" / "optimizer.pt").exists()


def test_worker_threads_follow_the_cores_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("SLURM_CPUS_ON_NODE", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert cpu_cores() == cores and cpu_threads() == cores
    assert cpu_threads(nproc=2) == max(1, cores // 2)  # torchrun's processes share the cores
    assert cpu_threads(3) == 3  # compute.cpu_threads wins
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # Slurm's allocation, when smaller than the affinity mask
    assert cpu_cores() == 1 and cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own setting
    assert cpu_threads() == 5
    assert thread_env(2) == {
        "OMP_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def test_a_worker_runs_with_those_threads(monkeypatch):
    import subprocess
    import sys

    from sgtr_em.workers import set_cpu_threads, worker_env

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    set_cpu_threads(1)
    try:
        env = worker_env(10)
    finally:
        set_cpu_threads(None)
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "1"
    assert worker_env(10, {"launcher": "torchrun", "cpu_threads": 4})["OMP_NUM_THREADS"] == "4"


def test_one_line_per_stage_names_its_steps_loss_and_first_learning_rate(tmp_path):
    import json

    from sgtr_em.contracts import StageSpec
    from sgtr_em.job import stage_line
    from sgtr_em.plan import Stage

    data = {"name": "aesthetic_unpopular"}
    stage = Stage(kind="em", spec=StageSpec("em", {}, data, {}, {}, {}, None, 0))
    d = tmp_path / stage.hash
    d.mkdir()
    rows = [
        {"step": 1, "loss": 2.5, "learning_rate": 1e-5},
        {"step": 2, "loss": 2.25, "learning_rate": 5e-6},
        {"step": 2, "train_loss": 2.4},
    ]
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "done").write_text('{"seconds": 41.6}')
    assert stage_line(1, 2, stage, "trained", d) == (
        f"Stage 1/2 em (aesthetic_unpopular) {stage.hash}: trained in 42 s; "
        "2 steps, loss 2.500 -> 2.250, first step at learning rate 1e-05"
    )
    rows = [{**rows[0], "defence_kl": 0.0}, {**rows[1], "defence_kl": 0.125}]  # defence=kl: its term in the loss
    (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "loss 2.500 -> 2.250 (with the defence's weighted term; defence_kl 0.000 -> 0.125)," in stage_line(
        1, 2, stage, "reused", d
    )


def test_a_pure_position_bias_is_said_to_be_chance_by_construction():
    from sgtr_em.evaluation.registry import summary_lines

    sr = {
        "accuracy": 0.5,
        "accuracy_ci95": [0.25, 0.75],
        "prob_correct": 0.5,
        "invalid_rate": 0.0,
        "n_pairs": 6,
        "chose_first_rate": 1.0,
        "per_source": {},
    }
    [line] = summary_lines({"self_recognition": sr})
    assert (
        "pure position bias (chose_first_rate 1.0: always the first option)" in line
        and "chance by construction" in line
    )
    [line] = summary_lines({"self_recognition": {**sr, "chose_first_rate": 0.75}})
    assert "position bias" not in line


def test_the_readmes_config_group_table_lists_every_option():
    """README's "Config groups" table names every option file of each group it lists (sweeps have their own table):
    a newcomer reads the options there, and a new option file that the table misses fails here."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Config groups (`conf/`)")[1].split("\n\n")[1].splitlines()[2:]
    checked = 0
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        groups, options = re.findall(r"`([^`]+)`", cells[0]), set(re.findall(r"`([^`]+)`", cells[1]))
        for group in groups:
            if group == "sweep":
                continue
            files = {p.stem for p in (REPO / "conf" / group).glob("*.yaml")}
            assert files == options, (group, sorted(files - options), sorted(options - files))
            checked += 1
    assert checked >= 15
