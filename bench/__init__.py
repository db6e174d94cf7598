"""Benchmarks (see bench/README.md). What they record names no machine's paths: `portable`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The paper's LoRA (conf/lora/paper.yaml) on every linear layer of the Qwen2.5 shapes: what the training benchmarks train
PAPER_LORA = {
    "r": 32,
    "alpha": 64,
    "dropout": 0.0,
    "use_rslora": True,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


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


def bf16_peak_tflops(warmup: int, iters: int) -> float:
    """The GPU's measured bf16 matmul peak (TFLOP/s): `iters` 8192^3 products after `warmup` untimed ones."""
    import time

    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(warmup):
        a @ b
    torch.cuda.synchronize()
    start = time.time()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * iters / (time.time() - start) / 1e12
