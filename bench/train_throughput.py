"""LoRA SFT throughput: plain TRL padded (the baseline) against the framework's trainer, in one process.

    python bench/train_throughput.py --shape qwen2.5-32b --steps 30 --out bench/results/32b_h200.json

Both runs: the same random-initialised weights of the real architecture, the same synthetic EM-like data
(prompt + completion lengths uniform in 150-700 tokens, loss on completions), LoRA r32 on all linear layers,
micro-batch `--batch`, bf16. The baseline is TRL's SFTTrainer as a user would call it (padded batches, SDPA,
gradient checkpointing). The framework's run goes through sgtr_em.training.sft (build_trainer,
load_training_model) with the compute settings given by --framework (JSON). Reports non-pad tokens/s, MFU
(4*N_matmul + attention FLOPs, against the bf16 matmul peak measured here), peak memory, and the losses.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import (  # noqa: E402
    PAPER_LORA as LORA,  # noqa: E402
    baseline_sft_config,
    bf16_peak_tflops,
    command,
)
from bench.shapes import attention_flops_per_token, matmul_params, shape_config  # noqa: E402
from sgtr_em.contracts import StageRuntime, StageSpec  # noqa: E402
from sgtr_em.training.sft import build_trainer, lora_config  # noqa: E402


def synthetic_rows(n: int, vocab: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(150, 701, (1,), generator=g))
        prompt = int(torch.randint(30, min(150, length - 20), (1,), generator=g))
        ids = torch.randint(100, vocab, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "completion_mask": [0] * prompt + [1] * (length - prompt)})
    return rows


def tokenizer(path: str | None):
    if path:
        return PreTrainedTokenizerFast.from_pretrained(path)
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")))
    tok.pad_token, tok.eos_token = "<pad>", "<pad>"
    return tok


class StepClock(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.time())


def make_model(config, device: str, attn: str | None, seed: int):
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
    return model


def run(name: str, trainer, clock: StepClock, warmup: int, device: str) -> dict:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.add_callback(clock)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    tokens = [h["num_tokens"] for h in logs]  # cumulative non-pad input tokens (TRL)
    seconds = clock.times[-1] - clock.times[warmup - 1]
    return {
        "name": name,
        "steps": len(logs),
        "tokens_per_s": (tokens[-1] - tokens[warmup - 1]) / seconds,
        "seconds_per_step": seconds / (len(logs) - warmup),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
        "losses": [h["loss"] for h in logs],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen2.5-7b")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    p.add_argument("--batch", type=int, default=8, help="sequences per optimizer step, both runs")
    p.add_argument(
        "--framework",
        default='{"micro_batch_size": 8, "padding_free": true, "liger": true, "gradient_checkpointing": true}',
    )
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = shape_config(a.shape)
    rows = synthetic_rows(a.steps * a.batch, config.vocab_size)
    tok = tokenizer(a.tokenizer)
    n_matmul = matmul_params(config)
    mean_len = sum(len(r["input_ids"]) for r in rows) / len(rows)
    flops_per_token = 4 * n_matmul + attention_flops_per_token(config, mean_len / 2)
    peak = bf16_peak_tflops(warmup=3, iters=20) if device == "cuda" else float("nan")
    training = {
        "learning_rate": 1e-5,
        "num_train_epochs": 1,
        "max_steps": a.steps,
        "batch_size": a.batch,
        "warmup_steps": 5,
        "weight_decay": 0.01,
        "lr_scheduler_type": "linear",
        "optim": "adamw_torch",
        "max_length": 2048,
    }
    extra = {"logging_steps": 1, "save_steps": 10**9, "save_total_limit": 1}
    results = {
        "shape": a.shape,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "n_matmul": n_matmul,
        "flops_per_token": flops_per_token,
        "bf16_peak_tflops": peak,
        "mean_tokens_per_sample": mean_len,
        "runs": [],
    }

    def finish(res):
        res["mfu"] = res["tokens_per_s"] * flops_per_token / (peak * 1e12) if peak == peak else None
        if device == "cuda" and "peak_memory_gib" not in res:
            res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        results["runs"].append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "losses"}), flush=True)

    if not a.skip_baseline:
        from trl import SFTTrainer

        model = make_model(config, device, "sdpa", seed=0)
        args = baseline_sft_config(
            Path(tempfile.gettempdir()) / "bench-baseline",
            micro_batch_size=a.batch,
            accumulation=1,
            steps=a.steps,
            warmup_steps=5,
            device=device,
            dataloader_drop_last=True,
        )
        from datasets import Dataset

        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tok,
            peft_config=lora_config(LORA),
        )
        finish(run("trl_padded_baseline", trainer, StepClock(), a.warmup, device))
        del trainer, model
        gc.collect()
        torch.cuda.empty_cache() if device == "cuda" else None

    from sgtr_em.training.attention import VARLEN

    configs = json.loads(a.framework)
    for i, overrides in enumerate(configs if isinstance(configs, list) else [configs]):
        compute = {
            "device": device,
            "micro_batch_size": a.batch,
            "gradient_checkpointing": True,
            "checkpoint_fraction": 1.0,
            "padding_free": True,
            "liger": False,
            "token_budget": None,  # fixed micro-batches (fast_default.py measures the token budget)
            **overrides,
        }
        compute["liger"] = compute["liger"] and device == "cuda"
        spec = StageSpec(  # what build_trainer reads: training, LoRA, seed (the rest names a stage's data)
            kind="em",
            input={},
            data={},
            system_prompt={},
            chat_template_kwargs={},
            training=training,
            lora=LORA,
            seed=0,
        )
        rt = StageRuntime(  # the model is built here, in memory: input_model is only a label
            backend="hf",
            input_model=f"random-init {a.shape}",
            compute=compute,
            dtype="bfloat16",
            chat_template_kwargs={},
            training_extra=extra,
        )
        try:
            model = make_model(config, device, VARLEN if compute["padding_free"] else "sdpa", seed=0)
            trainer = build_trainer(model, tok, rows, spec, rt, Path(tempfile.gettempdir()) / f"bench-framework-{i}")
            res = run(f"framework_{i}", trainer, StepClock(), a.warmup, device)
        except torch.OutOfMemoryError as e:
            res = {"name": f"framework_{i}", "oom": str(e)[:300], "tokens_per_s": 0.0}
        res["compute"] = compute
        finish(res)
        trainer = model = None
        gc.collect()
        torch.cuda.empty_cache() if device == "cuda" else None

    base = next((r for r in results["runs"] if r["name"] == "trl_padded_baseline"), None)
    for fw in results["runs"]:
        if base is not None and fw is not base and fw.get("losses"):
            fw["speedup"] = fw["tokens_per_s"] / base["tokens_per_s"]
            rel = [abs(x - y) / abs(y) for x, y in zip(fw["losses"], base["losses"])]
            fw["loss_max_rel_diff"], fw["loss_mean_rel_diff"] = max(rel), sum(rel) / len(rel)
            print(json.dumps({k: fw[k] for k in ("name", "speedup", "loss_max_rel_diff", "loss_mean_rel_diff")}))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(
        json.dumps(
            {**results, "command": command(), "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES",)}},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
