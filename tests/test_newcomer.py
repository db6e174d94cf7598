"""A newcomer's first hour (issue 22): what a job prints, what it leaves on disk, how it shares a machine."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from sgtr_em.compute import cpu_cores, cpu_threads, thread_env
from sgtr_em.job import drop_checkpoints


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
    assert thread_env(2) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                             "OMP_WAIT_POLICY": "PASSIVE"}


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
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"
    assert worker_env(10, {"launcher": "torchrun", "cpu_threads": 4})["OMP_NUM_THREADS"] == "4"
