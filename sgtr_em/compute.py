"""How a stage's training runs (device, processes, nodes, ZeRO stage), resolved for the machine at hand.

The parent resolves the `compute` and `deepspeed` groups here, writes the result (and the DeepSpeed JSON)
into the stage folder, and the worker only reads it. None of this changes what a stage learns, so none of
it enters a stage's hash. The ZeRO rule (conf/deepspeed/auto.yaml, DESIGN.md §9): for LoRA, ZeRO-3 only
pays where the weights fit no single GPU; otherwise ZeRO-2 scales.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys

from .models import resolve_device

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()  # NVML-based: no CUDA context in the parent


def slurm_nnodes() -> int:
    return int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)


def cpu_cores() -> int:
    """The CPU cores this job is given: Slurm's allocation (SLURM_CPUS_PER_TASK, or SLURM_CPUS_ON_NODE), else the
    process's affinity mask (`nproc`: a cgroup or `taskset` limit), else every core of the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK") or os.environ.get("SLURM_CPUS_ON_NODE")
    return max(1, min(cores, int(slurm)) if slurm and slurm.isdigit() else cores)


def cpu_threads(configured: int | None = None, nproc: int = 1) -> int:
    """Threads per worker process (torch, OpenMP, MKL): compute.cpu_threads, else $OMP_NUM_THREADS when set, else
    the cores given split among the node's `nproc` training processes."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, configured or (int(env) if env.isdigit() else cpu_cores() // max(1, nproc)))


def thread_env(threads: int) -> dict:
    """A worker's thread settings. OMP_WAIT_POLICY=PASSIVE: an idle OpenMP thread sleeps instead of spinning, so on a
    shared machine a thread does not burn a core waiting for its partner that the scheduler has taken off one."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}


def node_rank() -> int:
    """This node's rank in a multi-node job (Slurm's SLURM_NODEID; 0 outside Slurm)."""
    return int(os.environ.get("SLURM_NODEID", 0))


@functools.cache
def gpu_memory_gib() -> float:
    """The smallest visible GPU's memory, asked in a short subprocess so the parent holds no CUDA context."""
    code = (
        "import torch; print(min(torch.cuda.get_device_properties(i).total_memory "
        "for i in range(torch.cuda.device_count())))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 2**30


@functools.cache
def count_parameters(model_path: str, trust_remote_code: bool = False) -> int:
    """Parameters of the model at `model_path`, from its config alone (built on the meta device: no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return sum(p.numel() for p in model.parameters())


def choose_zero(weights_gib: float, gpu_gib: float, world: int, headroom_gib: float) -> tuple[int, bool, str]:
    """(ZeRO stage, offload, why): the rule of conf/deepspeed/auto.yaml."""
    need = f"{weights_gib:.1f} GiB of weights + {headroom_gib:g} GiB headroom"
    if weights_gib + headroom_gib <= gpu_gib:
        if world == 1:
            return 0, False, f"one process; {need} fit a {gpu_gib:.0f} GiB GPU"
        return 2, False, f"{need} fit one {gpu_gib:.0f} GiB GPU: ZeRO-2 (ZeRO-3 would re-gather them every pass)"
    if world > 1 and weights_gib / world + headroom_gib <= gpu_gib:
        return 3, False, f"{need} fit no {gpu_gib:.0f} GiB GPU, but 1/{world} of the weights does: ZeRO-3"
    return 3, True, f"{need} fit no {gpu_gib:.0f} GiB GPU even split {world} ways: ZeRO-3 with CPU offload"


def resolve_deepspeed(
    ds, *, device: str, world: int, model_path: str | None, dtype: str, trust_remote_code: bool = False
) -> dict:
    if ds.stage is not None:
        return {"stage": ds.stage, "offload": ds.offload, "why": f"deepspeed={ds.name}"}
    if device != "cuda" or model_path is None:
        return {"stage": 0, "offload": False, "why": "no GPU: no DeepSpeed"}
    n = count_parameters(model_path, trust_remote_code)
    weights_gib = n * DTYPE_BYTES.get(dtype, 2) / 2**30
    stage, offload, why = choose_zero(weights_gib, gpu_memory_gib(), world, ds.headroom_gib)
    return {"stage": stage, "offload": offload, "why": f"{n / 1e9:.2f} B parameters; {why}"}


def resolve_compute(
    compute, deepspeed=None, *, model_path: str | None = None, dtype: str = "bfloat16", trust_remote_code: bool = False
) -> dict:
    """The compute (and deepspeed) groups with every `auto`/null choice made for this machine and allocation."""
    device = resolve_device(compute.device)
    on_gpu = device == "cuda"
    nproc = compute.nproc_per_node or (visible_gpus() if on_gpu else 1)
    if on_gpu and nproc > visible_gpus():
        raise ValueError(
            f"compute.nproc_per_node={nproc} but this node shows {visible_gpus()} GPUs: "
            f"pick a smaller compute preset, or ask the scheduler for {nproc} GPUs per node"
        )
    nnodes = compute.nnodes or slurm_nnodes()
    world = nproc * nnodes
    ds = {"stage": 0, "offload": False, "why": "not asked"}
    if deepspeed is not None:
        ds = resolve_deepspeed(
            deepspeed,
            device=device,
            world=world,
            model_path=model_path,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
    if ds["stage"] and not on_gpu:
        raise ValueError(
            f"deepspeed={deepspeed.name} needs GPUs (Accelerate runs a CPU DeepSpeed launch as one process): "
            "use deepspeed=none (or auto) with compute on the CPU"
        )
    launcher = compute.launcher
    if launcher == "auto":
        launcher = "python" if world == 1 and not ds["stage"] else "torchrun"
    if launcher == "accelerate" and world > 1 and not on_gpu:
        raise ValueError(
            "compute.launcher=accelerate starts one CPU process whatever the count (it needs MPI for more): "
            "use compute.launcher=torchrun on CPUs"
        )
    if launcher == "python" and world > 1:
        raise ValueError(
            f"compute.launcher=python starts one process, but {world} are asked for "
            f"(compute.nproc_per_node x compute.nnodes): use torchrun or accelerate"
        )
    fast = fast_path(compute, on_gpu, ds["stage"])
    return {
        "device": device,
        # Padded tokens cost full compute on a CPU: one sequence per pass; the paper's 2 on a GPU.
        "micro_batch_size": compute.micro_batch_size or (2 if on_gpu else 1),
        "gradient_checkpointing": on_gpu if compute.gradient_checkpointing is None else compute.gradient_checkpointing,
        **fast,
        "launcher": launcher,
        "nproc_per_node": nproc,
        "nnodes": nnodes,
        "world_size": world,
        "preempt_grace_s": compute.preempt_grace_s,
        "cpu_threads": cpu_threads(compute.get("cpu_threads"), nproc),
        "deepspeed": ds,
    }


def fast_path(compute, on_gpu: bool, zero_stage: int) -> dict:
    """padding_free / liger / token_budget / checkpoint_fraction with their nulls decided: on a GPU the fast path
    (padding-free varlen micro-batches cut to a token budget, Liger where installed, the fewest recomputed layers that
    fit; the worker picks the numbers from the stage's data, `compute_choice.json`); on a CPU what it always was."""
    padding_free = on_gpu if compute.get("padding_free") is None else compute.padding_free
    liger = (on_gpu and liger_available()) if compute.get("liger") is None else compute.liger
    budget = compute.get("token_budget")
    # Token budgets cut each step inside one training_step: not under DeepSpeed (its engine counts the backward passes)
    budgeted = (
        padding_free
        and not zero_stage
        and budget != 0
        and (budget is not None or (on_gpu and compute.micro_batch_size is None))
    )
    fraction = compute.get("checkpoint_fraction", 1.0)
    why = []
    if compute.get("liger") is None and on_gpu and not liger:
        why.append("liger-kernel is not installed (pip install liger-kernel): no fused RMSNorm/SwiGLU kernels")
    if padding_free and zero_stage and budget is None and compute.micro_batch_size is None:
        why.append(f"ZeRO-{zero_stage}: fixed micro-batches (token budgets cut steps outside DeepSpeed's count)")
    return {
        "checkpoint_fraction": ("auto" if budgeted else 1.0) if fraction is None else fraction,
        "padding_free": padding_free,
        "liger": liger,
        "token_budget": ("auto" if budget is None else int(budget)) if budgeted else None,
        "fast_why": "; ".join(why) or None,
    }


def deepspeed_json(stage: int, offload: bool, overrides: dict | None = None) -> dict:
    """A DeepSpeed config for the HF Trainer ("auto" values are filled from the training arguments)."""
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        # A PEFT model's adapter is gathered alone at save time (the Trainer's exclude_frozen_parameters path).
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=False,
        )
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,  # keep training.optim (torch AdamW) under offload too
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    return _merge(config, overrides or {})


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# --- compute=auto on a GPU: the fast path (issue 18) ---------------------------------------------------------------
# A padding-free micro-batch of T tokens holds, per decoder layer it does not recompute, the activations its backward
# pass needs; a recomputed (checkpointed) layer holds only its input. The per-layer bytes per token are the saved
# tensors of a Qwen2/Llama block under LoRA (norm inputs, q/k/v/o, attention output, gate/up/SwiGLU), times a factor
# measured on the lent GPUs (bench/results/fast_default_*.json): the allocator's blocks and the backward pass's
# transients. Calibration (one H200, bench/README.md rows of issue 8, max micro-batch ~4,300 tokens): 7B, no
# checkpointing, 39.2 GiB; 32B, 30 % / 50 % of layers checkpointed, 121.3 / 106.1 GiB: 1.6-1.7x the saved tensors.
# Checked on one H100 (bench/results/issue18-h100, exact largest micro-batches): predicted / measured allocated peak
# 7B no checkpointing 51.5 / 46.6 GiB (5,824 tokens), 72.8 / 66.6 (9,568); 32B all recomputed 72.7 / 69.6 (5,126),
# 72.8 / 70.8 (5,313). The ~10 % over the allocated peak is used: the allocator reserved 78.1 of 79.2 GiB at 9,568.
# Without Liger (NO_LIGER_ACTIVATIONS below), same H100: 7B 59.2 / 54.4 (5,746 tokens); 32B all recomputed 72.3 / 70.1;
# 7B at the budget the model picks, another H100: 72.7 / 66.7 (7,657 tokens).
ACTIVATION_FACTOR = 1.6
# Without liger-kernel a token's activations are 1.25x those with it (7B shape, SGTR mix, one H100, transformers 5.23,
# no recomputation: 6.43 against 5.16 MiB a token above the weights; bench/results/issue18-h100/
# fast_7b_sgtr_noliger_tf5.23.0.json, fast_7b_sgtr_tf5.23_masks.json). Counting the saved tensors instead (fp32 norm
# inputs, SiLU's output) predicted 1.66x: 72.6 GiB at the 5,746 tokens that measured 54.4.
NO_LIGER_ACTIVATIONS = 1.25
FIXED_OVERHEAD_GIB = 3.0  # CUDA context, cuBLAS workspaces, the optimizer's temporaries, fragmentation
MEMORY_USE = 0.92  # plan for this share of the card (the rest: headroom for the longest step's fragmentation)
SATURATING_TOKENS = 4096  # a micro-batch this large keeps the matmuls near peak: below it checkpoint no more layers
BF16_PEAK_TFLOPS = {
    "H100": 989.4,
    "H200": 989.4,
    "H800": 989.4,
    "GH200": 989.4,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "A6000": 154.8,
    "L4": 121.0,
}  # data-sheet dense bf16 (SXM parts)


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def datasheet_bf16_tflops(device_name: str) -> float | None:
    """The GPU's data-sheet dense bf16 peak (H100 PCIe 756), None when the name is not in the table."""
    if "H100" in device_name and "PCIe" in device_name:
        return 756.0
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return tflops
    return None


def model_shape(config) -> dict:
    """What the memory and FLOP models need from a transformers config (Qwen2/Llama-style decoder)."""
    text = getattr(config, "text_config", None) or config
    d, heads = text.hidden_size, text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or d // heads
    return {
        "hidden": d,
        "intermediate": text.intermediate_size,
        "layers": text.num_hidden_layers,
        "heads": heads,
        "kv": (getattr(text, "num_key_value_heads", None) or heads) * head_dim,
        "q": heads * head_dim,
        "vocab": text.vocab_size,
    }


def matmul_params(shape: dict) -> int:
    """N_matmul (DESIGN.md §9): the blocks' matmul weights plus lm_head, not the embedding lookup."""
    d, ff, kv, q = shape["hidden"], shape["intermediate"], shape["kv"], shape["q"]
    return shape["layers"] * (d * q + 2 * d * kv + q * d + 3 * d * ff) + d * shape["vocab"]


def flops_per_token(shape: dict, mean_context: float) -> float:
    """LoRA training FLOPs per token: 4 N_matmul (forward + input gradients; frozen weights get none) plus causal
    attention for forward and backward (3 x 4 s d per layer at mean context s). Recomputation is not counted."""
    return 4 * matmul_params(shape) + 3 * 4 * shape["layers"] * shape["q"] * mean_context


def layer_bytes_per_token(shape: dict, liger: bool) -> float:
    """Bytes a non-recomputed decoder layer keeps per token for its backward pass (bf16, LoRA on every linear)."""
    d, ff, kv = shape["hidden"], shape["intermediate"], shape["kv"]
    attention = 2 * (6 * d + 3 * kv)  # normed input, q, q after RoPE, k, k after RoPE, v, attention out, o input
    # Liger's RMSNorm keeps bf16 input + rstd; its SwiGLU keeps gate and up, recomputes SiLU
    liger_bytes = ACTIVATION_FACTOR * (attention + 2 * 2 * d + 2 * 2 * ff)
    return liger_bytes if liger else NO_LIGER_ACTIVATIONS * liger_bytes  # fp32 norm inputs, SiLU's output kept


def training_memory_gib(
    shape: dict, *, n_params: int, lora_params: int, tokens: int, fraction: float, liger: bool, dtype_bytes: int = 2
) -> float:
    """Predicted peak GPU memory of a LoRA step whose largest micro-batch is `tokens` (padding-free), with `fraction`
    of the decoder layers recomputed."""
    layers = shape["layers"]
    recomputed = round(fraction * layers)
    per_layer = layer_bytes_per_token(shape, liger)
    per_token = (layers - recomputed) * per_layer + recomputed * dtype_bytes * shape["hidden"]
    per_token += per_layer if recomputed else 0  # the recomputed layer's activations during its backward
    # No logits: TRL's SFTTrainer scores the labels through its fused LM head (4,096 x 32,768 tiles of the head, in the
    # fixed overhead), with or without Liger (tests/test_token_budget.py test_training_never_materialises_the_logits)
    fixed = n_params * dtype_bytes + lora_params * (4 + 4 + 8)  # weights; LoRA weights, grads, Adam states (fp32)
    return (fixed + tokens * per_token) / 2**30 + FIXED_OVERHEAD_GIB


def choose_budget(
    shape: dict,
    *,
    n_params: int,
    lora_params: int,
    lengths: list[int],
    batch_size: int,
    gpu_gib: float,
    liger: bool,
    token_budget=None,
    checkpoint_fraction=None,
) -> dict:
    """The token budget of a padding-free micro-batch and the share of recomputed layers, for this stage's data on
    this GPU: checkpoint the fewest layers with which a micro-batch of `SATURATING_TOKENS` (or the longest sequence,
    if longer) fits; then the largest budget that fits, capped at what one optimizer step can hold.
    `token_budget` / `checkpoint_fraction`: fixed by the user (numbers), or None to choose."""
    longest = max(lengths)
    step_max = sum(sorted(lengths)[-batch_size:])  # the most tokens one optimizer step can hold
    usable = gpu_gib * MEMORY_USE
    layers = shape["layers"]
    fractions = [checkpoint_fraction] if checkpoint_fraction is not None else [i / layers for i in range(layers + 1)]

    def fits(tokens, f):
        return (
            training_memory_gib(
                shape, n_params=n_params, lora_params=lora_params, tokens=tokens, fraction=f, liger=liger
            )
            <= usable
        )

    def largest(f):
        lo, hi = 0, step_max
        while lo < hi:  # the largest budget (<= step_max) that fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid, f) else (lo, mid - 1)
        return lo

    want = max(longest, min(SATURATING_TOKENS, step_max))
    chosen = next((f for f in fractions if fits(token_budget or want, f)), None)
    if chosen is None:
        f = fractions[-1]
        budget = token_budget or largest(f)
        why = (
            f"even with {f:.0%} of layers recomputed a micro-batch of {token_budget or want} tokens is predicted "
            f"over {usable:.0f} GiB of a {gpu_gib:.0f} GiB GPU: budget {budget} tokens"
        )
        if budget < longest:
            budget = longest
            why += f", raised to the longest sequence ({longest}); an out-of-memory error lowers it no further"
        chosen = f
    else:
        budget = token_budget or largest(chosen)
        why = (
            f"the fewest recomputed layers ({chosen:.0%}) with which a micro-batch of {want} tokens (>= the longest "
            f"sequence, {longest}) fits {usable:.0f} GiB of a {gpu_gib:.0f} GiB GPU; then the largest budget that "
            f"fits, at most one step's {step_max} tokens"
        )
    peak = training_memory_gib(
        shape, n_params=n_params, lora_params=lora_params, tokens=budget, fraction=chosen, liger=liger
    )
    return {
        "token_budget": int(budget),
        "checkpoint_fraction": chosen,
        "predicted_peak_gib": round(peak, 1),
        "gpu_gib": round(gpu_gib, 1),
        "longest_sequence": longest,
        "step_max_tokens": step_max,
        "why": why,
    }
