"""The suite's own guard (tests/conftest.py, tests/prereqs.py), run as pytest runs it: under env CI a missing
prerequisite stops the run before any test runs, and a skipped test fails the run; without CI both only skip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO

CONFTEST = "from tests.conftest import *  # the suite's hooks and prerequisite fixtures\n"
TESTS = """
import pathlib
import pytest

def test_reads_data(data_dir):
    pathlib.Path("ran").write_text(str(data_dir))

def test_skips():
    pytest.skip("a reason")

def test_passes():
    pass
"""


def run_pytest(folder, ci: bool, data_dir: str, *args: str) -> subprocess.CompletedProcess:
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "test_guarded.py").write_text(TESTS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(REPO), SGTR_EM_DATA_DIR=data_dir, **({"CI": "true"} if ci else {}))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("ci", [True, False], ids=["CI", "no CI"])
def test_a_missing_data_folder_fails_under_ci_before_any_test_runs(tmp_path, ci):
    proc = run_pytest(tmp_path, ci, str(tmp_path / "nonexistent"), "-k", "reads_data or passes")
    out = proc.stdout + proc.stderr
    assert "prerequisite data     MISSING" in out and "set SGTR_EM_DATA_DIR" in out
    if ci:
        assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
        assert "under CI every prerequisite must be present" in out and "1 passed" not in out  # nothing ran
    else:
        assert proc.returncode == 0 and "1 passed, 1 skipped" in out, out
    assert not (tmp_path / "ran").exists()


def test_a_present_data_folder_is_found_and_printed(tmp_path, data_dir):
    proc = run_pytest(tmp_path, True, str(data_dir), "-k", "reads_data")
    assert proc.returncode == 0, proc.stdout
    assert f"prerequisite data     ok      {data_dir}" in proc.stdout
    assert (tmp_path / "ran").read_text() == str(data_dir)


@pytest.mark.parametrize("ci", [True, False], ids=["CI", "no CI"])
def test_under_ci_a_skipped_test_fails_the_run(tmp_path, ci):
    proc = run_pytest(tmp_path, ci, str(tmp_path), "-k", "skips or passes")
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    if ci:
        assert proc.returncode == pytest.ExitCode.TESTS_FAILED, proc.stdout
        assert "1 test(s) skipped, which fails the run under env CI" in proc.stdout
        assert "test_guarded.py::test_skips" in proc.stdout
    else:
        assert proc.returncode == 0, proc.stdout
