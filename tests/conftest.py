"""Shared fixtures: the paper's data folder, a session-wide model cache, and the CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_dir() -> Path | None:
    env = os.environ.get("SGTR_EM_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (candidate / "em").is_dir():
            return candidate.resolve()
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if d is None:
        pytest.skip("the paper's data folder is not here: set SGTR_EM_DATA_DIR (tests never download)")
    return d


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (converted SmolLM2, generated summaries) for the whole session."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def smollm2_path(cache_dir) -> str:
    from sgtr_em.models import resolve_model_path

    from .test_config import _compose

    return resolve_model_path(_compose("model=smollm2").model, cache_dir)


@pytest.fixture
def run_cli(data_dir, cache_dir, tmp_path):
    """Runs `python -m sgtr_em.train <overrides>` like a user would; returns the completed process."""

    def run(*overrides: str, output_dir: Path | None = None, check: bool = True, **popen):
        env = {**os.environ, "SGTR_EM_DATA_DIR": str(data_dir), "SGTR_EM_CACHE_DIR": str(cache_dir),
               "SGTR_EM_OUTPUT_DIR": str(output_dir or tmp_path / "outputs"), "WANDB_SILENT": "true"}
        cmd = [sys.executable, "-m", "sgtr_em.train", *overrides]
        if popen:
            return subprocess.Popen(cmd, env=env, cwd=REPO, **popen)
        proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    return run


def read_json(path: Path):
    return json.loads(Path(path).read_text())


# A stage small enough to train three times in a test: em_only, 24 examples, 3 optimizer steps of 8 (no warm-up, so
# every step moves the weights), a checkpoint after each step, no evaluations.
TRAIN = ["stage_order=em_only", "em_dataset.max_examples=24", "training.batch_size=8", "training.warmup_steps=0",
         "training.learning_rate=1e-4", "training.save_steps=1", "eval.run=[]"]


@pytest.fixture(scope="session")
def reference_stage(data_dir, cache_dir, tmp_path_factory) -> Path:
    """The TRAIN stage trained uninterrupted in one process through the CLI: what other runs are compared with."""
    out = tmp_path_factory.mktemp("reference")
    env = {**os.environ, "SGTR_EM_DATA_DIR": str(data_dir), "SGTR_EM_CACHE_DIR": str(cache_dir),
           "SGTR_EM_OUTPUT_DIR": str(out / "outputs"), "WANDB_SILENT": "true"}
    cmd = [sys.executable, "-m", "sgtr_em.train", *TRAIN, "compute=cpu", f"hydra.run.dir={out / 'run'}"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return Path(json.loads((out / "run" / "stages.json").read_text())[0]["folder"])


def train_losses(stage_dir: Path) -> list[tuple[int, float, float]]:
    """(step, loss, grad norm) of every logged optimizer step of a stage."""
    from sgtr_em.training.sft import read_train_log

    return [(r["step"], r["loss"], r["grad_norm"]) for r in read_train_log(stage_dir / "train_log.jsonl") if "loss" in r]
