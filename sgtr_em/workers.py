"""Worker subprocesses: the Hydra parent starts one per step (data, train, merge, eval) and waits.

Each worker is `python -m <module> <folder>`, reads its inputs from that folder, and frees its memory
when it exits. A worker dies with its parent (Linux), so killing a job never leaves training behind.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_worker(module: str, folder: Path, *, what: str) -> float:
    """Runs `python -m module folder`; returns its wall time; raises with the log's path if it fails."""
    start = time.time()
    log.info("%s: python -m %s %s", what, module, folder)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", module, str(folder)], env=env,
                          preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit code {proc.returncode}); see {folder / 'worker.log'}")
    return time.time() - start


def worker_logging(log_file: Path) -> None:
    """Worker logs go to stderr and are appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in (logging.StreamHandler(sys.stderr), logging.FileHandler(log_file)):
        handler.setFormatter(fmt)
        root.addHandler(handler)
