"""Scale-out benchmark of the real stage worker: LoRA on random-initialised Qwen2.5 shapes, one GPU and two.

    python bench/scale_out.py make-model --arch qwen2.5-7b                 # random weights, saved once: runs share them
    python bench/scale_out.py train --name 7b-1gpu --arch qwen2.5-7b --compute gpu --deepspeed none
    python bench/scale_out.py train --name 7b-zero2-2gpu --arch qwen2.5-7b --compute gpu2 --deepspeed zero2
    python bench/scale_out.py train --name 32b-zero3-2gpu --arch qwen2.5-32b --random-init --compute gpu2 --deepspeed zero3
    python bench/scale_out.py merge-check --name 32b-zero3-2gpu             # the adapter loads; its merge is exact
    python bench/scale_out.py report --out "$OUT"                           # results.jsonl -> RESULTS.md

A `train` run is what a job does for one stage: the Hydra config composed from conf/ (compute, deepspeed, LoRA,
training groups), the stage folder written by the parent's own code (`job.stage_runtime`, `job.train`: DeepSpeed
JSON, torchrun line) and the real worker (`sgtr_em.training.sft`), on `outputs/bench/assets` (bench/prepare.py).
Each run appends one line to outputs/bench/results.jsonl: losses and grad norms per step, tokens/s, peak memory per
GPU, the strategy and why, the adapter's check. See bench/README.md for the commands the GPU machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import command, portable  # noqa: E402
from bench.shapes import SHAPES, matmul_params, shape_config  # noqa: E402

BENCH = Path(os.environ.get("SGTR_EM_BENCH_DIR") or REPO / "outputs" / "bench")  # models, stages, assets
ASSETS = BENCH / "assets"  # bench/prepare.py's output
PEAK_TFLOPS = 989.0  # H100/H200 bf16 dense data-sheet figure (DESIGN.md §9 also gives the measured ~785-790)


def model_dir(arch: str) -> Path:
    """A model folder: the shape's config.json and the assets' tokenizer (weights only after make-model)."""
    d = BENCH / "models" / arch
    if not (d / "config.json").exists():
        shutil.copytree(ASSETS / "tokenizer", d, dirs_exist_ok=True)
        shape_config(arch).save_pretrained(d)
    return d


def make_model(args) -> None:
    """Random weights for `arch`, initialised on the GPU with a fixed seed and saved, so every run starts equal."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed

    d = model_dir(args.arch)
    if (d / "model.safetensors.index.json").exists() or (d / "model.safetensors").exists():
        print(f"{d}: weights exist")
        return
    set_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d), dtype=torch.bfloat16)
    model.save_pretrained(d, max_shard_size="5GB")
    print(f"{d}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters saved")


def compose(args, model: Path):
    from hydra import compose as hydra_compose, initialize_config_dir

    from sgtr_em.config import register_configs, validate

    register_configs()
    overrides = [
        "model=qwen7b",
        f"model.path={model}",
        f"model.name={args.arch}",
        "model.identity_prompt=null",
        "stage_order=em_only",
        "tracking=none",
        f"compute={args.compute}",
        f"deepspeed={args.deepspeed}",
        f"training.batch_size={args.batch_size}",
        f"training.max_steps={args.steps}",
        f"training.learning_rate={args.lr}",
        "training.warmup_steps=0",
        "training.save_steps=100000",
        f"training.max_length={args.max_length}",
        f"seed={args.seed}",
        *args.override,
    ]
    if args.micro_batch_size:
        overrides.append(f"compute.micro_batch_size={args.micro_batch_size}")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides)
    validate(cfg)
    return cfg, overrides


def gpu_names() -> list[str]:
    """The GPUs as nvidia-smi names them (asked in a subprocess: this process keeps no CUDA context)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
        )
    except FileNotFoundError:
        return ["cpu"]
    return out.stdout.strip().splitlines() if out.returncode == 0 else ["cpu"]


def check_adapter(adapter: Path, layers: int, lora_targets: list[str]) -> dict:
    """The saved adapter is whole: one non-empty A and B per targeted module, and B has moved off zero (trained)."""
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
    expected = layers * len(lora_targets)
    a = [t for k, t in tensors.items() if "lora_A" in k]
    b = [t for k, t in tensors.items() if "lora_B" in k]
    return {
        "bytes": (adapter / "adapter_model.safetensors").stat().st_size,
        "tensors": len(tensors),
        "expected_pairs": expected,
        "all_non_empty": all(t.numel() > 0 for t in tensors.values()),
        "lora_B_nonzero": sum(int(t.abs().sum() > 0) for t in b),
        "ok": len(a) == len(b) == expected
        and all(t.numel() > 0 for t in tensors.values())
        and all(t.abs().sum() > 0 for t in b),
    }


def train(args) -> None:
    from sgtr_em import job
    from sgtr_em.contracts import write_stage
    from sgtr_em.io import read_json, read_jsonl, write_jsonl
    from sgtr_em.plan import plan_stages
    from sgtr_em.training.sft import read_train_log

    model = model_dir(args.arch)
    cfg, overrides = compose(args, model)
    stage = plan_stages(cfg)[0]
    runtime = job.stage_runtime(cfg, str(model)).replace(random_init=args.random_init or None)
    d = BENCH / "stages" / args.name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    write_stage(d, stage.spec, runtime)
    rows = [r for _, r in read_jsonl(ASSETS / "train.jsonl")][: args.batch_size * args.steps]
    write_jsonl(d / "train.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])

    start = time.time()
    error = None
    try:
        job.train(cfg, d, runtime.compute, what=args.name)
    except (RuntimeError, SystemExit) as e:
        error = str(e)
    wall = time.time() - start
    compute = runtime.compute
    perf = sorted((read_json(p) for p in (d / "perf").glob("rank*.json")), key=lambda r: r["rank"])
    steps = [r for r in read_train_log(d / "train_log.jsonl") if "loss" in r]
    rank0 = perf[0] if perf else {}
    tps = rank0.get("tokens_per_s_after_first_step")
    gpus = compute["world_size"] if compute["device"] == "cuda" else 0
    result = {
        "name": args.name,
        "arch": args.arch,
        "random_init": args.random_init,
        "devices": gpu_names(),
        "compute": compute,
        "deepspeed_json": read_json(d / "deepspeed.json") if (d / "deepspeed.json").exists() else None,
        "overrides": [portable(o) for o in overrides],
        "command": command(),
        "wall_s": round(wall, 1),
        "error": error,
        "optimizer_steps": len(steps),
        "loss": [r["loss"] for r in steps],
        "grad_norm": [r["grad_norm"] for r in steps],
        "tokens_per_s": tps,
        "tokens_per_s_per_gpu": tps / gpus if tps and gpus else None,
        "mfu_matmul": (tps / gpus * 4 * matmul_params(shape_config(args.arch)) / (PEAK_TFLOPS * 1e12))
        if tps and gpus
        else None,
        "peak_mem_gib_per_rank": [r["peak_mem_gib"] for r in perf],
        "peak_reserved_gib_per_rank": [r.get("peak_reserved_gib") for r in perf],
        "step_seconds": rank0.get("step_seconds"),
        "adapter": check_adapter(
            d / "adapter", shape_config(args.arch).num_hidden_layers, list(cfg.lora.target_modules)
        )
        if (d / "adapter").exists()
        else None,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    BENCH.mkdir(parents=True, exist_ok=True)
    with open(BENCH / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "name",
                    "error",
                    "loss",
                    "grad_norm",
                    "tokens_per_s",
                    "peak_mem_gib_per_rank",
                    "adapter",
                    "wall_s",
                )
            },
            indent=1,
        )
    )
    if error or not (result["adapter"] or {}).get("ok"):
        sys.exit(1)


def merge_check(args) -> None:
    """Loads the run's adapter onto its base (random weights of the same shape, on one GPU when there is one: no
    DeepSpeed, as in the merge worker), checks one merged weight against W + scale * B @ A, and runs a forward pass."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from sgtr_em.io import read_json

    d = BENCH / "stages" / args.name
    st = read_json(d / "stage.json")
    path = st["runtime"]["input_model"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.time()
    with torch.device(device):
        base = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)
    peft = PeftModel.from_pretrained(base, str(d / "adapter"))
    layer = peft.base_model.model.model.layers[0].self_attn.q_proj
    w0 = layer.base_layer.weight.detach().float().clone()
    delta = (layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()) * layer.scaling["default"]
    merged = peft.merge_and_unload()  # what the merge worker (sgtr_em.training.merge) does, minus writing it
    got = merged.model.layers[0].self_attn.q_proj.weight.detach().float()
    # bf16 weights: the merge is exact up to rounding W + dW to bf16, and the change it made points along dW
    rounding = ((got - (w0 + delta)).abs().max() / (w0 + delta).abs().max()).item()
    cosine = torch.nn.functional.cosine_similarity((got - w0).flatten(), delta.flatten(), dim=0).item()
    ids = torch.arange(16, device=device)[None] + 100
    finite = bool(torch.isfinite(merged(input_ids=ids).logits.float()).all())
    result = {
        "name": f"{args.name}:merge",
        "arch": Path(path).name,
        "devices": gpu_names(),
        "command": command(),
        "merge": {
            "device": device,
            "delta_max": delta.abs().max().item(),
            "rounding_rel": rounding,
            "cosine_to_update": cosine,
            "adapter_loaded": True,
            "logits_finite": finite,
            "seconds": round(time.time() - start, 1),
            "ok": rounding <= 2**-7 and cosine > 0.9 and finite and delta.abs().max().item() > 0,
        },
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with open(BENCH / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result["merge"], indent=1))
    if not result["merge"]["ok"]:
        sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-model")
    mk.add_argument("--arch", choices=SHAPES, required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--name", required=True)
    tr.add_argument("--arch", choices=SHAPES, required=True)
    tr.add_argument("--random-init", action="store_true", help="build from the config alone (no make-model)")
    tr.add_argument("--compute", default="gpu")
    tr.add_argument("--deepspeed", default="auto")
    tr.add_argument("--micro-batch-size", type=int, default=8)
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--steps", type=int, default=5)
    tr.add_argument("--lr", type=float, default=1e-4)
    tr.add_argument("--max-length", type=int, default=1024)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--override", action="append", default=[], help="any further Hydra override")
    mc = sub.add_parser("merge-check")
    mc.add_argument("--name", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args()
    if args.cmd == "report":
        from bench.report import write_report

        write_report(BENCH / "results.jsonl", Path(args.out))
    else:
        {"make-model": make_model, "train": train, "merge-check": merge_check}[args.cmd](args)


if __name__ == "__main__":
    main()
