"""Benchmarks (see bench/README.md). What they record names no machine's paths: `portable`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def portable(text: str) -> str:
    """`text` with this machine's paths written as anyone can rerun them: the repository root as a relative path,
    the device tool's output folder as $OUT, the interpreter as `python`."""
    out = os.environ.get("OUT")
    if out:
        text = text.replace(out.rstrip("/"), "$OUT")
    return text.replace(sys.executable, "python").replace(f"{REPO}/", "").replace(str(REPO), ".")


def command() -> str:
    """This process's command line, portable."""
    return portable(" ".join(["python", *sys.argv]))
