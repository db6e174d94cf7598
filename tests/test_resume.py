"""Preemption: a stage killed after its first checkpoint resumes from it, and the job finishes with an
uninterrupted run's optimizer steps, in the same W&B run (marked slow: real training of the real SmolLM2)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from sgtr_em.tracking import read_offline_run

from .conftest import TRAIN, read_json, train_losses

pytestmark = pytest.mark.slow


def test_a_stage_killed_after_its_first_checkpoint_resumes_to_the_same_steps(run_cli, reference_stage, tmp_path):
    out, run_dir = tmp_path / "outputs", tmp_path / "run"
    stage = out / "stages" / reference_stage.name  # the same stage as the reference: the same hash
    first = run_cli(
        *TRAIN,
        "compute=cpu",
        f"hydra.run.dir={run_dir}",
        output_dir=out,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = stage / "checkpoints" / "checkpoint-1" / "trainer_state.json"  # written last: the checkpoint is whole
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None and not checkpoint.exists():
        time.sleep(0.1)
    assert checkpoint.exists(), "the run never saved its first checkpoint"
    os.killpg(first.pid, signal.SIGKILL)  # the whole job at once: parent and training worker
    first.wait()
    assert not (stage / "adapter").exists()
    run_id = read_json(run_dir / "wandb_run.json")["id"]

    run_cli(*TRAIN, "compute=cpu", f"hydra.run.dir={run_dir}", output_dir=out)  # the rerun (or Slurm's requeue)

    assert "Resuming from" in (stage / "worker.log").read_text()
    assert read_json(stage / "adapter" / "train_result.json")["global_step"] == 3
    assert read_json(reference_stage / "adapter" / "train_result.json")["global_step"] == 3
    got, want = train_losses(stage), train_losses(reference_stage)
    assert [s for s, *_ in got] == [1, 2, 3]
    # The resumed steps are the uninterrupted run's: weights, optimizer, RNG and data order all restored (measured: equal).
    assert [v for row in got for v in row] == pytest.approx([v for row in want for v in row], rel=1e-6)
    assert_same_adapter(stage, reference_stage)  # and so is the stage's output
    wandb_run = read_offline_run(run_dir)
    assert wandb_run["id"] == run_id and len(wandb_run["files"]) == 2  # one W&B run, two attempts
    assert wandb_run["summary"]["train/1_em/status"] == "trained"


@pytest.mark.extended
def test_a_signalled_worker_checkpoints_where_it_is_and_the_job_reads_it_as_interrupted(reference_stage, tmp_path):
    """SIGTERM (Slurm's preemption and requeue signal) mid-training: the worker finishes its optimizer step, saves a
    checkpoint there (none was due: save_steps is 100), exits 75 with interrupted.json; the parent raises Interrupted.
    The rerun resumes from that checkpoint to the uninterrupted run's steps."""
    import json
    import shutil
    import threading

    import psutil

    from sgtr_em.workers import Interrupted, run_worker

    stage = tmp_path / "stage"
    stage.mkdir()
    for name in ("train.jsonl", "data_stats.json"):
        shutil.copy(reference_stage / name, stage / name)
    st = read_json(reference_stage / "stage.json")
    st["runtime"]["training_extra"]["save_steps"] = 100  # how often to save is not part of a stage's identity
    (stage / "stage.json").write_text(json.dumps(st))

    raised = []
    parent = threading.Thread(
        target=lambda: raised.append(_catch(lambda: run_worker("sgtr_em.training.sft", stage, what="training")))
    )
    parent.start()
    deadline = time.time() + 600
    while time.time() < deadline and not (stage / "train_log.jsonl").exists():
        time.sleep(0.1)
    # the worker, by its command line: an earlier test in this process may have left another child (wandb-core)
    (worker,) = [c for c in psutil.Process().children() if "sgtr_em.training.sft" in c.cmdline()]
    worker.send_signal(signal.SIGTERM)  # during step 2: step 1 has been logged
    parent.join(600)

    assert raised and isinstance(raised[0], Interrupted), raised
    assert read_json(stage / "interrupted.json")["global_step"] == 2
    assert (stage / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (stage / "adapter").exists()

    run_worker("sgtr_em.training.sft", stage, what="training")  # the rerun
    assert "Resuming from" in (stage / "worker.log").read_text()
    got, want = train_losses(stage), train_losses(reference_stage)
    assert [v for row in got for v in row] == pytest.approx([v for row in want for v in row], rel=1e-6)
    assert_same_adapter(stage, reference_stage)


def assert_same_adapter(stage, reference_stage):
    """The final adapters of two runs of one stage hold the same weights, and they are trained (B moved from 0)."""
    import torch
    from safetensors.torch import load_file

    got, want = (load_file(s / "adapter" / "adapter_model.safetensors") for s in (stage, reference_stage))
    assert got.keys() == want.keys() and any(".lora_B." in k for k in want)
    for key, w in want.items():
        torch.testing.assert_close(got[key], w, rtol=1e-5, atol=1e-8, msg=lambda m, key=key: f"{key}: {m}")
    assert all(w.abs().max() > 0 for k, w in want.items() if ".lora_B." in k)


def _catch(fn):
    try:
        fn()
    except BaseException as e:  # Interrupted is a SystemExit
        return e
    return None


@pytest.mark.extended  # about 30 s on CI; the killed-and-resumed test above stays in CI
def test_a_stage_checkpointed_at_its_last_step_finishes_on_rerun(reference_stage, tmp_path):
    """Every way to leave the last step checkpointed and no adapter: SIGTERM during the last step (a checkpoint there and
    interrupted.json), a kill between the last checkpoint and the save, a full disk while saving the adapter (a partial
    adapter.tmp/). The rerun runs no step (it used to die in ThroughputCallback on every rerun), cleans the partial
    save, and writes the uninterrupted run's adapter."""
    import shutil

    from safetensors.torch import load_file

    from sgtr_em import job
    from sgtr_em.plan import plan_stages

    from .test_config import _compose

    cfg = _compose(*TRAIN, "compute=cpu", f"paths.stages_dir={tmp_path / 'stages'}")
    stage = plan_stages(cfg)[0]
    assert stage.hash == reference_stage.name
    d = tmp_path / "stages" / stage.hash
    d.mkdir(parents=True)
    for name in ("train.jsonl", "data_stats.json", "stage.json"):
        shutil.copy(reference_stage / name, d / name)
    shutil.copytree(reference_stage / "checkpoints" / "checkpoint-3", d / "checkpoints" / "checkpoint-3")
    (d / "interrupted.json").write_text('{"signal": 15, "global_step": 3}')
    (d / "adapter.tmp").mkdir()
    (d / "adapter.tmp" / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # cut short by a full disk

    input_model = read_json(reference_stage / "stage.json")["runtime"]["input_model"]
    assert job.run_stage(cfg, stage, input_model) == (d, "trained")

    assert (d / "done").exists() and (d / "merged").is_dir() and not (d / "adapter.tmp").exists()
    assert read_json(d / "adapter" / "train_result.json")["global_step"] == 3
    assert read_json(d / "perf" / "rank0.json")["optimizer_steps"] == 0  # nothing trained twice
    got, want = (load_file(f / "adapter" / "adapter_model.safetensors") for f in (d, reference_stage))
    assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)
