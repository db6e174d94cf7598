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
