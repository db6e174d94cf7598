"""Issue 18: the product path (`compute=auto`, the real stage worker) against plain TRL + PEFT padded, same GPU.

    python bench/fast_default.py --shape qwen2.5-7b --mix em --steps 16 --out $OUT/fast_7b_em.json

Both runs: the Qwen2.5 shape random-initialised from its config on the GPU (seed 0), the same conversations
(`--mix em`: EM training rows of 150-700 tokens; `--mix sgtr`: the paper's SGTR detection prompts, CNN article + two
summaries, 460-2,030 tokens; both from bench/prepare.py), LoRA r32 (alpha 64, rsLoRA) on all linear layers, 16
sequences a step (the paper's), bf16, lr 1e-5. The baseline is TRL's SFTTrainer as a user writes it (padded batches
of `--baseline-micro` sequences, gradient accumulation to 16, SDPA, gradient checkpointing), run in a subprocess of
this one; it gets the rows tokenized with the product's loss masks (answer + end-of-turn token), so both train the
same tokens (TRL's own prompt/completion masks also train the template's newline after `<|im_end|>`: one token in
three of an SGTR answer, which moved the losses apart by ~1 %; measured 2026-12-06). The product run is what `python -m sgtr_em.train` does for a stage: the Hydra config composed from conf/
with compute=auto and deepspeed=auto (`job.stage_runtime` resolves them for this machine), the stage folder, and
`job.train` starting the worker `sgtr_em.training.sft`, which picks the token budget and checkpointing
(`compute_choice.json`) and writes `speed.json`. Tokens/s: non-pad tokens over the steps after `--warmup`, both runs
timed by the same callback (sgtr_em/training/callbacks.py ThroughputCallback). MFU: 4 N_matmul + attention FLOPs
per token against the bf16 matmul peak measured in the baseline's process and against the data sheet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import (  # noqa: E402
    PAPER_LORA as LORA,  # noqa: E402
    baseline_sft_config,
    bf16_peak_tflops,
    command,
    portable,
)
from bench.scale_out import ASSETS, BENCH  # noqa: E402

MIX_FILES = {"em": "train.jsonl", "sgtr": "sgtr.jsonl"}


def rows(mix: str, n: int) -> list[dict]:
    from sgtr_em.io import read_jsonl

    out = [{"prompt": r["prompt"], "completion": r["completion"]} for _, r in read_jsonl(ASSETS / MIX_FILES[mix])]
    return (out * (n // len(out) + 1))[:n]


def rate(perf: dict, warmup: int) -> float | None:
    secs, toks = perf["step_seconds"][warmup:], perf["step_tokens"][warmup:]
    return sum(toks) / sum(secs) if secs and sum(secs) > 0 else None


def baseline(a) -> None:
    """Plain TRL + PEFT, padded (what a user writes), in this process; writes a JSON line to a.result."""
    import torch
    from datasets import Dataset
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed
    from trl import SFTTrainer

    from bench.scale_out import model_dir
    from sgtr_em.models import load_tokenizer
    from sgtr_em.training.callbacks import JsonlLogCallback, ThroughputCallback
    from sgtr_em.training.masks import tokenize_rows
    from sgtr_em.training.sft import lora_config, read_train_log

    peak = bf16_peak_tflops(warmup=5, iters=40) if torch.cuda.is_available() else None
    d = model_dir(a.shape)
    out = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    micro = a.baseline_micro
    tok = load_tokenizer(str(d), padding_side="right")
    while True:
        set_seed(0)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(d), dtype=torch.bfloat16, attn_implementation="sdpa"
            )
        args = baseline_sft_config(
            out,
            micro_batch_size=micro,
            accumulation=16 // micro,
            steps=a.steps,
            warmup_steps=0,
            device=device,
            include_num_input_tokens_seen="non_padding",
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            # the rows tokenized with the product's loss masks (the answer and its end-of-turn token, PAPER_NOTES),
            # so both runs train the same tokens; TRL's own prompt/completion masks also train the newline after it
            train_dataset=Dataset.from_list(tokenize_rows(tok, rows(a.mix, 16 * a.steps))),
            processing_class=tok,
            peft_config=lora_config(LORA),
            callbacks=[ThroughputCallback(out / "perf"), JsonlLogCallback(out / "train_log.jsonl")],
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        try:
            start = time.time()
            trainer.train()
            break
        except torch.OutOfMemoryError:
            del trainer, model
            torch.cuda.empty_cache()
            if micro == 1:
                raise
            micro //= 2
            print(f"baseline: out of memory, micro-batch {micro}", flush=True)
    perf = json.loads((out / "perf" / "rank0.json").read_text())
    log = [r for r in read_train_log(out / "train_log.jsonl") if "loss" in r]
    res = {
        "name": "trl_padded_baseline",
        "micro_batch_size": micro,
        "seconds": round(time.time() - start, 1),
        "tokens_per_s": rate(perf, a.warmup),
        "peak_mem_gib": perf["peak_mem_gib"],
        "losses": [r["loss"] for r in log],
        "grad_norms": [r.get("grad_norm") for r in log],
        "step_tokens": perf["step_tokens"],  # the steps hold the same sequences as the product's when these agree
        "measured_bf16_peak_tflops": peak,
        "device": torch.cuda.get_device_name() if peak else "cpu",
    }
    Path(a.result).write_text(json.dumps(res))
    shutil.rmtree(out, ignore_errors=True)


def product(a) -> dict:
    """The stage a job trains with compute=auto: the parent's code and the real worker."""
    from bench.scale_out import compose, model_dir
    from sgtr_em import job
    from sgtr_em.contracts import write_stage
    from sgtr_em.io import read_json, write_jsonl
    from sgtr_em.plan import plan_stages
    from sgtr_em.training.sft import read_train_log

    d_model = model_dir(a.shape)
    ns = argparse.Namespace(
        arch=a.shape,
        compute=a.compute,
        deepspeed="auto",
        batch_size=16,
        steps=a.steps,
        lr=1e-5,
        max_length=2048,
        seed=0,
        micro_batch_size=None,
        override=a.override,
    )
    cfg, overrides = compose(ns, d_model)
    stage = plan_stages(cfg)[0]
    runtime = job.stage_runtime(cfg, str(d_model)).replace(random_init=True)
    d = BENCH / "stages" / f"fast-{a.shape}-{a.mix}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    write_stage(d, stage.spec, runtime)
    write_jsonl(d / "train.jsonl", rows(a.mix, 16 * a.steps))
    start, error = time.time(), None
    try:
        job.train(cfg, d, runtime.compute, what=f"fast-{a.shape}-{a.mix}")
    except (RuntimeError, SystemExit) as e:
        error = str(e)
    perf = read_json(d / "perf" / "rank0.json") if (d / "perf" / "rank0.json").exists() else None
    speed = read_json(d / "speed.json") if (d / "speed.json").exists() else {}
    log = [r for r in read_train_log(d / "train_log.jsonl") if "loss" in r] if (d / "train_log.jsonl").exists() else []
    return {
        "name": f"product_compute_{a.compute}",
        "error": error,
        "seconds": round(time.time() - start, 1),
        "tokens_per_s": rate(perf, a.warmup) if perf else None,
        "peak_mem_gib": speed.get("peak_mem_gib"),
        "losses": [r["loss"] for r in log],
        "grad_norms": [r.get("grad_norm") for r in log],
        "step_tokens": perf["step_tokens"] if perf else None,
        "compute": runtime.compute,
        "overrides": [portable(o) for o in overrides],
        "speed_json": speed,
        "compute_choice": read_json(d / "compute_choice.json") if (d / "compute_choice.json").exists() else None,
        "oom": read_json(d / "oom.json") if (d / "oom.json").exists() else None,
        "worker_log_tail": ((d / "worker.log").read_text()[-1500:] if error and (d / "worker.log").exists() else None),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="qwen2.5-7b")
    p.add_argument("--mix", choices=sorted(MIX_FILES), default="em")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    p.add_argument("--baseline-micro", type=int, default=8)
    p.add_argument("--compute", default="auto", help="the product run's compute preset")
    p.add_argument("--override", action="append", default=[], help="more Hydra overrides for the product run")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--baseline-only", dest="result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.result:
        return baseline(a)
    from sgtr_em.compute import datasheet_bf16_tflops

    results = {
        "shape": a.shape,
        "mix": a.mix,
        "steps": a.steps,
        "warmup": a.warmup,
        "command": command(),
        "devices": subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
        if shutil.which("nvidia-smi")
        else "cpu",
        "runs": [],
    }
    import torch
    import transformers
    import trl

    results["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}
    base = None
    if not a.skip_baseline:
        tmp = Path(tempfile.mkdtemp()) / "baseline.json"
        cmd = [
            sys.executable,
            __file__,
            "--shape",
            a.shape,
            "--mix",
            a.mix,
            "--steps",
            str(a.steps),
            "--warmup",
            str(a.warmup),
            "--baseline-micro",
            str(a.baseline_micro),
            "--baseline-only",
            str(tmp),
        ]
        proc = subprocess.run(cmd)
        base = (
            json.loads(tmp.read_text())
            if proc.returncode == 0 and tmp.exists()
            else {"name": "trl_padded_baseline", "error": f"exit {proc.returncode}"}
        )
        results["runs"].append(base)
        print(json.dumps({k: v for k, v in base.items() if k != "losses"}), flush=True)
    prod = product(a)
    results["runs"].append(prod)
    choice = prod["speed_json"]
    fpt = choice.get("flops_per_token")
    measured = (base or {}).get("measured_bf16_peak_tflops")
    sheet = datasheet_bf16_tflops(results["devices"])
    for r in results["runs"]:
        tps = r.get("tokens_per_s")
        if tps and fpt:
            r["mfu_vs_measured_peak"] = tps * fpt / (measured * 1e12) if measured else None
            r["mfu_vs_datasheet"] = tps * fpt / (sheet * 1e12) if sheet else None
    if base and base.get("tokens_per_s") and prod.get("tokens_per_s"):
        prod["speedup"] = prod["tokens_per_s"] / base["tokens_per_s"]
        rel = [abs(x - y) / abs(y) for x, y in zip(prod["losses"], base["losses"])]
        prod["loss_max_rel_diff"] = max(rel) if rel else None
    print(
        json.dumps({k: v for k, v in prod.items() if k not in ("losses", "overrides", "compute")}, default=str),
        flush=True,
    )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
