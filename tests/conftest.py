"""Shared fixtures: the paper's data folder, a session-wide model cache, and the CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import prereqs

REPO = Path(__file__).resolve().parents[1]


# -- prerequisites: found (or installed) once, before any test runs; under env CI missing ones and skips fail ---------

_found: dict[str, tuple[object, str]] = {}
_skipped: list[str] = []


def pytest_collection_finish(session):
    """After collection (and -m deselection), before the first test: look for / install what the selected tests
    need, print it, and under CI stop the run here if anything is missing (no test has run yet)."""
    if session.config.option.collectonly:
        return
    needed = {prereqs.FIXTURES[f] for item in session.items for f in item.fixturenames if f in prereqs.FIXTURES}
    _found.update(prereqs.ensure(needed))
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    for name, (value, what) in _found.items():
        line = f"prerequisite {name:8s} {'ok     ' if value else 'MISSING'} {what}"
        tr.write_line(line) if tr else print(line)
    missing = [f"{name}: {what}" for name, (value, what) in _found.items() if value is None]
    if missing and prereqs.in_ci():
        pytest.exit(
            "under CI every prerequisite must be present (a missing one would skip tests):\n  " + "\n  ".join(missing),
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def _prerequisite(name: str):
    """The prerequisite found before the run; skips the test with the reason when missing (fails under CI)."""
    if name not in _found:  # a test run some other way than by collection (e.g. pytest --fixtures-per-test)
        _found.update(prereqs.ensure([name]))
    value, what = _found[name]
    if value is None:
        (pytest.fail if prereqs.in_ci() else pytest.skip)(what)
    return value


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """Under CI a skipped test fails the run: CI cannot pass by skipping."""
    if _skipped and prereqs.in_ci() and session.exitstatus == 0:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"CI: {len(_skipped)} test(s) skipped, which fails the run under env CI:\n  " + "\n  ".join(_skipped)
        tr.write_line(msg, red=True) if tr else print(msg)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _prerequisite("data")


@pytest.fixture(scope="session")
def slurm_installed() -> str:
    """Slurm's binaries (installed before the run when missing); the cluster itself is started by test_slurm.py."""
    return _prerequisite("slurm")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary (Debian's, installed before the run when missing)."""
    return _prerequisite("chromium")


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
        env = {
            **os.environ,
            "SGTR_EM_DATA_DIR": str(data_dir),
            "SGTR_EM_CACHE_DIR": str(cache_dir),
            "SGTR_EM_OUTPUT_DIR": str(output_dir or tmp_path / "outputs"),
            "WANDB_SILENT": "true",
        }
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
TRAIN = [
    "stage_order=em_only",
    "em_dataset.max_examples=24",
    "training.batch_size=8",
    "training.warmup_steps=0",
    "training.learning_rate=1e-4",
    "training.save_steps=1",
    "eval.run=[]",
]


@pytest.fixture(scope="session")
def reference_stage(data_dir, cache_dir, tmp_path_factory) -> Path:
    """The TRAIN stage trained uninterrupted in one process through the CLI: what other runs are compared with."""
    out = tmp_path_factory.mktemp("reference")
    env = {
        **os.environ,
        "SGTR_EM_DATA_DIR": str(data_dir),
        "SGTR_EM_CACHE_DIR": str(cache_dir),
        "SGTR_EM_OUTPUT_DIR": str(out / "outputs"),
        "WANDB_SILENT": "true",
    }
    # its checkpoints are kept (not part of the hash): the resume tests start other runs from them
    cmd = [
        sys.executable,
        "-m",
        "sgtr_em.train",
        *TRAIN,
        "compute=cpu",
        "training.keep_checkpoints=true",
        f"hydra.run.dir={out / 'run'}",
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return Path(json.loads((out / "run" / "stages.json").read_text())[0]["folder"])


def train_losses(stage_dir: Path) -> list[tuple[int, float, float]]:
    """(step, loss, grad norm) of every logged optimizer step of a stage."""
    from sgtr_em.training.sft import read_train_log

    return [
        (r["step"], r["loss"], r["grad_norm"]) for r in read_train_log(stage_dir / "train_log.jsonl") if "loss" in r
    ]
