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


def baseline_sft_config(
    output_dir, *, micro_batch_size: int, accumulation: int, steps: int, warmup_steps: int, device: str, **extra
):
    """TRL's SFTConfig for the training benchmarks' baseline, plain TRL padded as a user writes it: lr 1e-5 (linear,
    `warmup_steps`), weight decay 0.01, gradient checkpointing, loss on completions, 2,048 tokens, seed 0, a log
    line a step, no checkpoints; bf16 on the GPU. `extra`: the benchmark's own further SFTConfig arguments."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro_batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=1e-5,
        warmup_steps=warmup_steps,
        lr_scheduler_type="linear",
        weight_decay=0.01,
        logging_steps=1,
        save_strategy="no",
        bf16=device == "cuda",
        use_cpu=device == "cpu",
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        completion_only_loss=True,
        max_length=2048,
        report_to=[],
        seed=0,
        **extra,
    )


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
