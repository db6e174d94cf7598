"""How a stage's training runs (device, processes, nodes, ZeRO stage), resolved for the machine at hand.

The parent resolves the `compute` and `deepspeed` groups here, writes the result (and the DeepSpeed JSON)
into the stage folder, and the worker only reads it. None of this changes what a stage learns, so none of
it enters a stage's hash. The ZeRO rule (conf/deepspeed/auto.yaml, DESIGN.md §9): for LoRA, ZeRO-3 only
pays where the weights fit no single GPU; otherwise ZeRO-2 scales.
"""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
def gpu_memory_gib() -> float:
    """The smallest visible GPU's memory, asked in a short subprocess so the parent holds no CUDA context."""
    code = ("import torch; print(min(torch.cuda.get_device_properties(i).total_memory "
            "for i in range(torch.cuda.device_count())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 2**30


@functools.lru_cache(maxsize=None)
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


def resolve_deepspeed(ds, *, device: str, world: int, model_path: str | None, dtype: str,
                      trust_remote_code: bool = False) -> dict:
    if ds.stage is not None:
        return {"stage": ds.stage, "offload": ds.offload, "why": f"deepspeed={ds.name}"}
    if device != "cuda" or model_path is None:
        return {"stage": 0, "offload": False, "why": "no GPU: no DeepSpeed"}
    n = count_parameters(model_path, trust_remote_code)
    weights_gib = n * DTYPE_BYTES.get(dtype, 2) / 2**30
    stage, offload, why = choose_zero(weights_gib, gpu_memory_gib(), world, ds.headroom_gib)
    return {"stage": stage, "offload": offload, "why": f"{n / 1e9:.2f} B parameters; {why}"}


def resolve_compute(compute, deepspeed=None, *, model_path: str | None = None, dtype: str = "bfloat16",
                    trust_remote_code: bool = False) -> dict:
    """The compute (and deepspeed) groups with every `auto`/null choice made for this machine and allocation."""
    device = resolve_device(compute.device)
    on_gpu = device == "cuda"
    nproc = compute.nproc_per_node or (visible_gpus() if on_gpu else 1)
    if on_gpu and nproc > visible_gpus():
        raise ValueError(f"compute.nproc_per_node={nproc} but this node shows {visible_gpus()} GPUs: "
                         f"pick a smaller compute preset, or ask the scheduler for {nproc} GPUs per node")
    nnodes = compute.nnodes or slurm_nnodes()
    world = nproc * nnodes
    ds = {"stage": 0, "offload": False, "why": "not asked"}
    if deepspeed is not None:
        ds = resolve_deepspeed(deepspeed, device=device, world=world, model_path=model_path, dtype=dtype,
                               trust_remote_code=trust_remote_code)
    if ds["stage"] and not on_gpu:
        raise ValueError(f"deepspeed={deepspeed.name} needs GPUs (Accelerate runs a CPU DeepSpeed launch as one process): "
                         "use deepspeed=none (or auto) with compute on the CPU")
    launcher = compute.launcher
    if launcher == "auto":
        launcher = "python" if world == 1 and not ds["stage"] else "torchrun"
    if launcher == "accelerate" and world > 1 and not on_gpu:
        raise ValueError("compute.launcher=accelerate starts one CPU process whatever the count (it needs MPI for more): "
                         "use compute.launcher=torchrun on CPUs")
    if launcher == "python" and world > 1:
        raise ValueError(f"compute.launcher=python starts one process, but {world} are asked for "
                         f"(compute.nproc_per_node x compute.nnodes): use torchrun or accelerate")
    return {
        "device": device,
        # Padded tokens cost full compute on a CPU: one sequence per pass; the paper's 2 on a GPU.
        "micro_batch_size": compute.micro_batch_size or (2 if on_gpu else 1),
        "gradient_checkpointing": on_gpu if compute.gradient_checkpointing is None else compute.gradient_checkpointing,
        "checkpoint_fraction": compute.checkpoint_fraction,
        "padding_free": compute.padding_free,
        "liger": compute.liger,
        "launcher": launcher,
        "nproc_per_node": nproc,
        "nnodes": nnodes,
        "world_size": world,
        "preempt_grace_s": compute.preempt_grace_s,
        "cpu_threads": cpu_threads(compute.get("cpu_threads"), nproc),
        "deepspeed": ds,
    }


def deepspeed_json(stage: int, offload: bool, overrides: dict | None = None) -> dict:
    """A DeepSpeed config for the HF Trainer ("auto" values are filled from the training arguments)."""
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        # A PEFT model's adapter is gathered alone at save time (the Trainer's exclude_frozen_parameters path).
        zero.update(stage3_prefetch_bucket_size="auto", stage3_param_persistence_threshold="auto",
                    stage3_gather_16bit_weights_on_model_save=False)
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config = {
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
        "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,  # keep training.optim (torch AdamW) under offload too
        "steps_per_print": 10**9, "wall_clock_breakdown": False,
    }
    return _merge(config, overrides or {})


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
