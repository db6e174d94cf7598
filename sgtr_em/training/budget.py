"""Token-budget micro-batches (compute=auto on a GPU, issue 18): a step is still `training.batch_size` sequences,
cut into padding-free micro-batches of at most `token_budget` tokens inside one `training_step`.

The Trainer gets the whole step as one padding-free batch (per-device batch = batch_size / processes, no gradient
accumulation), counts its loss tokens once (`num_items_in_batch`), and this trainer runs forward + backward per
micro-batch, each loss divided by that one count: the step's loss and gradient are the padded path's (the sum over
the step's completion tokens / their number), whatever the cut. Micro-batches are packed first-fit decreasing.

`configure` turns the `auto` budget and checkpoint share into numbers from the stage's token lengths and the GPU's
memory (`sgtr_em.compute.choose_budget`) and writes them, with the reason, to `<stage>/compute_choice.json`;
`after_oom` halves the budget after an out-of-memory error (then recomputes every layer) and records it in
`<stage>/oom.json`, which the restarted worker reads: the stage resumes from its last checkpoint, its hash unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..compute import choose_budget, datasheet_bf16_tflops, flops_per_token, model_shape
from ..contracts import StageRuntime
from ..io import read_json, write_json
from .callbacks import SelectiveCheckpointing, _peak_memory_gib
from .defences import DefenceSFTTrainer

log = logging.getLogger("sgtr_em.training.budget")

CHOICE_FILE = "compute_choice.json"
OOM_FILE = "oom.json"
FAULT_ENV = "SGTR_EM_FAULT_OOM_TOKENS"  # tests: "N[@S]": from step S on, a micro-batch over N tokens raises OOM


def pack(lengths: list[int], budget: int) -> list[list[int]]:
    """Sequence indices grouped into micro-batches of at most `budget` tokens (first-fit decreasing; a sequence
    longer than the budget goes alone), each group in the step's order."""
    bins: list[list] = []  # [tokens, indices]
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b in bins:
            if b[0] + lengths[i] <= budget:
                b[0] += lengths[i]
                b[1].append(i)
                break
        else:
            bins.append([lengths[i], [i]])
    return [sorted(b[1]) for b in bins]


def split_packed(inputs: dict, budget: int) -> list[dict]:
    """A padding-free batch (one row, TRL's collator) as micro-batches of at most `budget` tokens."""
    cu = inputs["cu_seq_lens_q"].tolist()
    lengths = [b - a for a, b in zip(cu[:-1], cu[1:])]
    if cu[-1] <= budget:
        return [inputs]
    total = inputs["input_ids"].shape[1]
    out = []
    for group in pack(lengths, budget):
        index = torch.cat([torch.arange(cu[i], cu[i + 1]) for i in group])
        lens = torch.tensor([lengths[i] for i in group])
        chunk = {}
        for key, value in inputs.items():
            if key in ("cu_seq_lens_q", "cu_seq_lens_k"):
                chunk[key] = (
                    torch.cat([torch.zeros(1, dtype=torch.int64), lens.cumsum(0)]).to(value.dtype).to(value.device)
                )
            elif key in ("max_length_q", "max_length_k"):
                chunk[key] = int(lens.max())
            elif key == "seq_idx":
                chunk[key] = torch.repeat_interleave(torch.arange(len(group), dtype=value.dtype), lens)[None].to(
                    value.device
                )
            elif torch.is_tensor(value) and value.dim() == 2 and value.shape == (1, total):
                chunk[key] = value[:, index.to(value.device)]
            else:
                raise ValueError(f"token-budget micro-batches: no rule to cut the batch key {key!r}")
        out.append(chunk)
    return out


class TokenBudgetSFTTrainer(DefenceSFTTrainer):
    """SFTTrainer whose training_step cuts the step's padding-free batch into micro-batches of `token_budget` tokens."""

    token_budget: int = 0
    budget_stats: dict

    def training_step(self, model, inputs, num_items_in_batch=None):
        chunks = split_packed(inputs, self.token_budget)
        self.micro_batches_in_step = len(chunks)  # a defence's per-micro-batch term is averaged over them
        stats = self.__dict__.setdefault("budget_stats", {"micro_batches": 0, "max_tokens": 0, "steps": 0})
        stats["steps"] += 1
        stats["micro_batches"] += len(chunks)
        fault, _, from_step = os.environ.get(FAULT_ENV, "0").partition("@")  # "TOKENS[@STEP]"
        fault = int(fault) if self.state.global_step + 1 >= int(from_step or 1) else 0
        total = None
        for k, chunk in enumerate(chunks):
            tokens = chunk["input_ids"].shape[1]
            stats["max_tokens"] = max(stats["max_tokens"], tokens)
            if fault and tokens > fault:
                raise torch.OutOfMemoryError(f"{FAULT_ENV}={fault}: a micro-batch of {tokens} tokens (fault injection)")
            # Several processes (DDP): the gradients are reduced once, with the step's last micro-batch
            last = k == len(chunks) - 1
            sync = nullcontext() if last or self.accelerator.num_processes == 1 else self.accelerator.no_sync(model)
            with sync:
                loss = super().training_step(model, chunk, num_items_in_batch)
            total = loss if total is None else total + loss
        return total


def _oom_records(stage_dir: Path) -> list[dict]:
    return read_json(stage_dir / OOM_FILE) if (stage_dir / OOM_FILE).exists() else []


def configure(trainer, rt: StageRuntime, stage_dir: Path) -> dict | None:
    """Decides the `auto` token budget and checkpoint share for this stage's data on this GPU; applies them to the
    trainer (budget, selective checkpointing) and writes them, with the reason, to `compute_choice.json`."""
    compute = rt.compute
    if not compute["token_budget"]:
        return None
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    shape = model_shape(base.config)
    n_params = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" not in n)
    lora_params = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    on_gpu = torch.cuda.is_available() and compute["device"] == "cuda"
    gpu_gib = torch.cuda.get_device_properties(0).total_memory / 2**30 if on_gpu else float("inf")
    fixed_budget = compute["token_budget"] if compute["token_budget"] != "auto" else None
    fixed_fraction = compute["checkpoint_fraction"] if compute["checkpoint_fraction"] != "auto" else None
    if not compute["gradient_checkpointing"]:
        fixed_fraction = 0.0
    if on_gpu:
        choice = choose_budget(
            shape,
            n_params=n_params,
            lora_params=lora_params,
            lengths=lengths,
            batch_size=trainer.args.per_device_train_batch_size,
            gpu_gib=gpu_gib,
            liger=compute["liger"],
            token_budget=fixed_budget,
            checkpoint_fraction=fixed_fraction,
        )
    else:  # a CPU (tests): nothing to fit
        choice = {
            "token_budget": fixed_budget or max(lengths),
            "checkpoint_fraction": fixed_fraction or 0.0,
            "why": "no GPU: the budget as given",
            "longest_sequence": max(lengths),
        }
    records = _oom_records(stage_dir)
    if records:  # an earlier attempt ran out of memory: its lowered settings win
        choice.update(
            token_budget=records[-1]["token_budget"],
            checkpoint_fraction=records[-1]["checkpoint_fraction"],
            why=choice["why"] + f"; lowered after {len(records)} out-of-memory error(s) ({OOM_FILE})",
        )
    trainer.token_budget = choice["token_budget"]
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, SelectiveCheckpointing):
            cb.fraction = choice["checkpoint_fraction"]
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    choice.update(
        device=device,
        world_size=world,
        liger=compute["liger"],
        padding_free=compute["padding_free"],
        sequences=len(lengths),
        mean_sequence=sum(lengths) / len(lengths),
        shape=shape,
        bf16_peak_tflops=datasheet_bf16_tflops(device),
        fast_why=compute["fast_why"],
    )
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(stage_dir / CHOICE_FILE, choice)
    log.info(
        "Token budget %d, %.0f%% of layers recomputed: %s",
        choice["token_budget"],
        100 * choice["checkpoint_fraction"],
        choice["why"],
    )
    return choice


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def after_oom(stage_dir: Path, error: BaseException, global_step: int | None) -> bool:
    """Records an out-of-memory error and the lowered settings for the restart: half the budget (not below the
    longest sequence), then every layer recomputed. False when nothing is left to lower (the error stands)."""
    choice = read_json(stage_dir / CHOICE_FILE) if (stage_dir / CHOICE_FILE).exists() else None
    if choice is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:  # several ranks: one cannot restart alone
        return False
    records = _oom_records(stage_dir)
    budget = records[-1]["token_budget"] if records else choice["token_budget"]
    fraction = records[-1]["checkpoint_fraction"] if records else choice["checkpoint_fraction"]
    longest = choice["longest_sequence"]
    if budget // 2 >= longest:
        new_budget, new_fraction = budget // 2, fraction
    elif budget > longest:
        new_budget, new_fraction = longest, fraction
    elif fraction < 1.0:
        new_budget, new_fraction = budget, 1.0
    else:
        return False
    records.append(
        {
            "time": time.time(),
            "global_step": global_step,
            "error": str(error)[:300],
            "from": {"token_budget": budget, "checkpoint_fraction": fraction},
            "token_budget": new_budget,
            "checkpoint_fraction": new_fraction,
        }
    )
    write_json(stage_dir / OOM_FILE, records)
    log.warning(
        "Out of memory with a token budget of %d (%.0f%% recomputed): restarting from the last checkpoint "
        "with %d (%.0f%%)",
        budget,
        100 * fraction,
        new_budget,
        100 * new_fraction,
    )
    return True


SPEED_FILE = "speed.json"


def write_speed(stage_dir: Path, trainer, seconds: float) -> dict | None:
    """`<stage>/speed.json` (rank 0): tokens/s (non-pad, all processes, first step excluded), MFU against the GPU's
    data-sheet bf16 peak, peak memory, seconds, and the micro-batching and checkpointing the stage ran with.
    The parent logs it to W&B (`tracking.log_stage`)."""
    if not trainer.is_world_process_zero():
        return None
    perf_file = stage_dir / "perf" / "rank0.json"
    perf = read_json(perf_file) if perf_file.exists() else {}
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    shape = model_shape(base.config)
    mean_context = sum(n * n for n in lengths) / 2 / max(1, sum(lengths))  # token-weighted mean causal context
    fpt = flops_per_token(shape, mean_context)
    on_gpu = torch.cuda.is_available() and trainer.args.device.type == "cuda"
    device = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak = datasheet_bf16_tflops(device) if on_gpu else None
    tps = perf.get("tokens_per_s_after_first_step") or perf.get("tokens_per_s")
    compute_choice = read_json(stage_dir / CHOICE_FILE) if (stage_dir / CHOICE_FILE).exists() else {}
    selective = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, SelectiveCheckpointing)]
    fraction = selective[0].fraction if selective else 1.0
    speed = {
        "device": device,
        "seconds": round(seconds, 1),
        "tokens_per_s": tps,
        "mfu": tps * fpt / (peak * 1e12) if tps and peak else None,
        "bf16_peak_tflops": peak,
        "flops_per_token": fpt,
        "peak_mem_gib": _peak_memory_gib(),
        "peak_reserved_gib": _peak_memory_gib(True),
        "token_budget": getattr(trainer, "token_budget", None),
        "micro_batch_size": (
            None if getattr(trainer, "token_budget", None) else trainer.args.per_device_train_batch_size
        ),
        "checkpoint_fraction": fraction if trainer.args.gradient_checkpointing else 0.0,
        "padding_free": trainer.args.padding_free,
        "liger": trainer.args.use_liger_kernel,
        "micro_batches_per_step": (
            trainer.budget_stats["micro_batches"] / trainer.budget_stats["steps"]
            if getattr(trainer, "budget_stats", None)
            else None
        ),
        "max_micro_batch_tokens": (getattr(trainer, "budget_stats", None) or {}).get("max_tokens"),
        "predicted_peak_gib": compute_choice.get("predicted_peak_gib"),
        "oom_restarts": len(_oom_records(stage_dir)),
        "optimizer_steps": perf.get("optimizer_steps"),
    }
    write_json(stage_dir / SPEED_FILE, speed)
    log.info(
        "Speed: %s",
        {
            k: v
            for k, v in speed.items()
            if k in ("tokens_per_s", "mfu", "peak_mem_gib", "seconds", "token_budget", "checkpoint_fraction")
        },
    )
    return speed
