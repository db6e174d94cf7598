"""A real single-node Slurm (started here; installed from Debian before the session if missing) runs a two-job grid of the CPU default
through hydra-submitit-launcher (the base model, and an EM stage). The training job is preempted mid-training the
way Slurm warns a job (SIGUSR2): submitit's checkpoint hook requeues it, and the rerun resumes from the stage's
checkpoint in the same run folder and W&B run (marked slow: minutes)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sgtr_em.tracking import read_offline_run

from .conftest import REPO, read_json
from .slurm_cluster import LocalSlurm
from .test_e2e import TINY

pytestmark = pytest.mark.slow

# TINY, with a three-step EM stage (a checkpoint after each step) to requeue in the middle of.
GRID = [*TINY, "em_dataset.max_examples=24", "training.batch_size=8", "training.warmup_steps=0"]


@pytest.fixture(scope="module")
def slurm(slurm_installed, tmp_path_factory):
    start = time.time()
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    print(f"\nlocal Slurm: started in {time.time() - start:.0f} s")
    yield cluster
    cluster.stop()


def _wait_for(what: str, find, proc: subprocess.Popen, timeout: float = 900):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = find()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} never happened (multirun exit code {proc.poll()}):\n{proc.stdout.read()[-4000:]}")


def test_a_two_job_grid_runs_through_slurm_and_a_requeued_job_resumes(
    slurm, data_dir, cache_dir, smollm2_path, tmp_path, request
):
    out = tmp_path / "outputs"
    env = {
        **slurm.env,
        "SGTR_EM_DATA_DIR": str(data_dir),
        "SGTR_EM_CACHE_DIR": str(cache_dir),
        "SGTR_EM_OUTPUT_DIR": str(out),
        "WANDB_SILENT": "true",
    }
    cmd = [
        sys.executable,
        "-m",
        "sgtr_em.train",
        "-m",
        "hydra/launcher=slurm_cpu_debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "stage_order=base,em_only",
        *GRID,
    ]
    start = time.time()
    grid = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    request.addfinalizer(lambda: grid.poll() is None and grid.kill())  # a failed test leaves no multirun behind

    # Preempt the job that trains the EM stage once its first checkpoint is whole, as Slurm warns a job before a
    # preemption or its time limit: SIGUSR2. submitit's handler calls the launcher's checkpoint hook and requeues
    # the job; the training worker, signalled too, checkpoints if it can; the rerun resumes from the last checkpoint.
    ckpt = _wait_for(
        "a first checkpoint", lambda: next(out.glob("stages/*/checkpoints/checkpoint-1/trainer_state.json"), None), grid
    )
    em_stage = ckpt.parents[2]
    sweep = next(out.glob("multiruns/*/*"))
    trainer_job = _wait_for(
        "the training job's log",
        lambda: (
            next(
                (
                    d.name
                    for d in sweep.iterdir()
                    if d.name.isdigit()
                    and f"stage {em_stage.name} training" in (d / "train.log").read_text(errors="ignore")
                ),
                None,
            )
            if sweep.exists()
            else None
        ),
        grid,
    )
    array_id = subprocess.run(["squeue", "-h", "-o", "%F"], env=env, capture_output=True, text=True).stdout.split()[0]
    preempt = subprocess.run(
        ["scancel", "--signal=USR2", f"{array_id}_{trainer_job}"], env=env, capture_output=True, text=True
    )
    assert preempt.returncode == 0, preempt.stderr
    preempted_at = time.time()

    log = grid.communicate(timeout=1200)[0]
    assert grid.returncode == 0, log[-6000:]
    print(
        f"\nSlurm grid: {time.time() - start:.0f} s, of which {time.time() - preempted_at:.0f} s after the preemption"
    )

    assert [p.name for p in out.glob("multiruns/*/*")] == [sweep.name]  # the requeued job kept its sweep folder
    assert trainer_job == "1"
    for job, stage_order in (("0", "base"), ("1", "em_only")):
        metrics = read_json(sweep / job / "metrics.json")  # both jobs' results landed
        assert 0 <= metrics["self_recognition"]["accuracy"] <= 1 and metrics["em"]["n_answers"] == 2
        wandb_run = read_offline_run(sweep / job)  # one W&B run per job, whatever the number of attempts
        assert wandb_run["config"]["stage_order"] == stage_order
        assert wandb_run["id"] == read_json(sweep / job / "wandb_run.json")["id"]
    assert len(read_offline_run(sweep / "1")["files"]) == 2  # the requeued job: two attempts, one W&B run
    assert [s["status"] for s in read_json(sweep / "1" / "stages.json")] == ["trained"]
    assert "Resuming from" in (em_stage / "worker.log").read_text()
    assert read_json(em_stage / "adapter" / "train_result.json")["global_step"] == 3
    for _ in range(60):  # Slurm's accounting records the end of the last attempt a little after it ends
        states = subprocess.run(
            [
                "sacct",
                "-n",
                "-X",
                "--duplicates",
                "-o",
                "JobID%12,State%12,Start,End",
                "-j",
                f"{array_id}_{trainer_job}",
            ],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        if "COMPLETED" in states:
            break
        time.sleep(1)
    assert "REQUEUED" in states and "COMPLETED" in states, states
    print(states)
    submitit_log = "".join(
        p.read_text(errors="ignore") for p in sweep.glob(f".submitit/{array_id}_{trainer_job}/*.err")
    )
    # submitit's preemption handler requeued it (its INFO line "Calling checkpoint method" is not always logged)
    assert "Caught signal SIGUSR2" in submitit_log and "this job is preempted" in submitit_log
