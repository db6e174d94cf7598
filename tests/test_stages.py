"""Stage bookkeeping with real processes and a real file lock (the workers are stand-ins: no training)."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from sgtr_em import job
from sgtr_em.plan import plan_stages

from .test_config import _compose


def fake_worker(log: Path):
    """Does a step's job instantly-ish: writes what the real worker would, and records the call."""
    outputs = {
        "sgtr_em.data.build": "train.jsonl",
        "sgtr_em.training.sft": "adapter",
        "sgtr_em.training.merge": "merged",
    }

    def run(module, folder, *, what, **launch):
        with open(log, "a") as f:
            f.write(f"{module}\n")
        time.sleep(0.5)
        out = Path(folder) / outputs[module]
        out.mkdir() if out.suffix == "" else out.write_text("{}\n")
        return 0.5

    return run


def _run_stage(cfg, stage, log, results):
    job.run_worker = fake_worker(log)
    results.put(job.run_stage(cfg, stage, "base-model")[1])


def test_two_jobs_asking_for_one_stage_train_it_once(tmp_path):
    cfg = _compose("stage_order=em_only", f"paths.stages_dir={tmp_path / 'stages'}")
    stage = plan_stages(cfg)[0]
    log, ctx = tmp_path / "calls.log", mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_run_stage, args=(cfg, stage, log, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(results.get(timeout=5) for _ in procs) == ["reused", "trained"]
    assert log.read_text().splitlines() == ["sgtr_em.data.build", "sgtr_em.training.sft", "sgtr_em.training.merge"]
    assert (tmp_path / "stages" / stage.hash / "done").exists()


def test_an_unfinished_stage_resumes_at_its_first_missing_step(tmp_path, monkeypatch):
    cfg = _compose("stage_order=em_only", f"paths.stages_dir={tmp_path / 'stages'}")
    stage = plan_stages(cfg)[0]
    folder = tmp_path / "stages" / stage.hash
    (folder / "adapter").mkdir(parents=True)
    (folder / "train.jsonl").write_text("{}\n")
    log = tmp_path / "calls.log"
    monkeypatch.setattr(job, "run_worker", fake_worker(log))
    assert job.run_stage(cfg, stage, "base-model")[1] == "trained"
    assert log.read_text().splitlines() == ["sgtr_em.training.merge"]
    assert job.run_stage(cfg, stage, "base-model")[1] == "reused"
    assert log.read_text().splitlines() == ["sgtr_em.training.merge"]


def test_a_failing_worker_leaves_its_traceback_in_worker_log(tmp_path):
    """The parent's error says "see <stage>/worker.log": the exception that ended the worker must be there."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from sgtr_em.workers import worker_logging; "
        "worker_logging(Path(sys.argv[1]) / 'worker.log'); raise MemoryError('CUDA out of memory (test)')"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "CUDA out of memory (test)" in proc.stderr
    text = (tmp_path / "worker.log").read_text()
    assert "the worker failed:" in text and "Traceback" in text and "MemoryError: CUDA out of memory (test)" in text
