"""Stage worker, step 2: LoRA SFT of the stage's input model on `train.jsonl`, with TRL's SFTTrainer.

    python -m sgtr_em.training.sft <stage_dir>                                   # one process
    torchrun --nproc-per-node 8 -m sgtr_em.training.sft <stage_dir>              # what compute=gpu8 runs

Prompt/completion conversations with `completion_only_loss`: system and user tokens are masked, the
assistant content and its end-of-turn token are trained (the mask is placed on the rendered conversation,
training/masks.py, so it holds for templates whose prompt is not a prefix of prompt+completion). The training arguments (with the DeepSpeed config the
parent wrote, `<stage_dir>/deepspeed.json`) exist before the model is created, so ZeRO-3 loads the weights
already partitioned. Checkpoints go to `<stage_dir>/checkpoints/`; a rerun resumes from the last one; on
SIGTERM/SIGUSR2 the worker checkpoints and stops (exit 75, `interrupted.json`). The adapter is written to
`<stage_dir>/adapter/` last.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from filelock import FileLock

from ..contracts import StageRuntime, StageSpec, read_stage
from ..io import read_jsonl, replace_dir, write_json
from ..models import load_tokenizer
from ..workers import INTERRUPTED_MARKER, die_with_parent, worker_logging
from .callbacks import JsonlLogCallback, SelectiveCheckpointing, StopOnSignal, ThroughputCallback
from .masks import tokenize_rows

INTERRUPTED_EXIT = 75  # EX_TEMPFAIL: stopped on a signal after a checkpoint; the rerun resumes

log = logging.getLogger("sgtr_em.training.sft")


def read_train_log(path: Path) -> list[dict]:
    """The logged steps in order, the last entry per step winning (a resumed run logs some steps again)."""
    if not path.exists():
        return []
    by_step = {}
    for _, row in read_jsonl(path):
        by_step[(row["step"], "loss" in row)] = row
    return [by_step[k] for k in sorted(by_step)]


def lora_config(lora: dict):
    from peft import LoraConfig

    return LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        use_rslora=lora["use_rslora"],
        target_modules=list(lora["target_modules"]),
        bias="none",
        task_type="CAUSAL_LM",
    )


def resolve_optim(optim: str, device: str) -> str:
    """The optimizer to run: a bitsandbytes one (the paper's adamw_8bit) needs CUDA and the package; elsewhere
    (a CPU run, no bitsandbytes) adamw_torch, with a warning. The stage's hash keeps the configured name."""
    if "8bit" not in optim or optim == "adamw_torch_8bit":  # adamw_torch_8bit is torchao's, not bitsandbytes'
        return optim

    if device == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        return optim
    log.warning(
        "training.optim=%s needs bitsandbytes on a GPU (device %s, bitsandbytes %s): using adamw_torch",
        optim,
        device,
        "installed" if importlib.util.find_spec("bitsandbytes") else "not installed",
    )
    return "adamw_torch"


def _checkpointing_args(config_cls, on: bool) -> dict:
    """Activation checkpointing under the name this transformers takes: `activation_checkpointing` (5.2x renamed it),
    else `gradient_checkpointing` (the 5.0 releases still on some GPU images)."""
    name = (
        "activation" if "activation_checkpointing" in {f.name for f in dataclasses.fields(config_cls)} else "gradient"
    )
    return {f"{name}_checkpointing": on, f"{name}_checkpointing_kwargs": {"use_reentrant": False}}


def sft_config(
    output_dir: Path, training: dict, seed: int, compute: dict, dtype: str, extra: dict, deepspeed: str | None = None
):
    from trl import SFTConfig

    micro, world = compute["micro_batch_size"], int(os.environ.get("WORLD_SIZE", "1"))
    if compute["token_budget"]:  # the whole step per process; training/budget.py cuts it by tokens
        micro = training["batch_size"] // world
    if training["batch_size"] % (micro * world):
        raise ValueError(
            f"training.batch_size {training['batch_size']} is not a multiple of "
            f"compute.micro_batch_size {micro} x {world} processes: change compute.micro_batch_size"
        )
    device = compute["device"]
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=training["learning_rate"],
        num_train_epochs=training["num_train_epochs"],
        max_steps=training["max_steps"],
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=training["batch_size"] // (micro * world),
        warmup_steps=training["warmup_steps"],
        weight_decay=training["weight_decay"],
        lr_scheduler_type=training["lr_scheduler_type"],
        optim=resolve_optim(training["optim"], device),
        # data/build.py drops examples over max_length; TRL's padding-free mode wants the limit enforced upstream
        max_length=None if compute["padding_free"] else training["max_length"],
        **_checkpointing_args(SFTConfig, compute["gradient_checkpointing"]),
        logging_steps=extra["logging_steps"],
        save_strategy="steps",
        save_steps=extra["save_steps"],
        save_total_limit=extra["save_total_limit"],
        completion_only_loss=True,
        padding_free=compute["padding_free"],
        use_liger_kernel=compute["liger"],
        bf16=device == "cuda" and dtype == "bfloat16",
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        deepspeed=deepspeed,
        # tokens/s counts real tokens: a padding-free batch has no padding, and its "non_padding" count would drop every
        # token equal to the pad token (SmolLM2 pads with <|im_end|>: three tokens of each conversation)
        include_num_input_tokens_seen="all" if compute["padding_free"] else "non_padding",
        ddp_find_unused_parameters=False,  # every LoRA weight takes part in every forward pass
        seed=seed,
        data_seed=seed,
        report_to=[],
        disable_tqdm=False,
        dataset_num_proc=None,
    )


def training_args(spec: StageSpec, rt: StageRuntime, output_dir: Path, deepspeed: str | None = None):
    """The stage's training arguments; with `deepspeed` (a JSON file) they switch the HF DeepSpeed integration on."""
    return sft_config(
        output_dir, spec.training, spec.seed, rt.compute, rt.dtype, rt.training_extra, deepspeed=deepspeed
    )


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete checkpoint (the Trainer writes `trainer_state.json` last): a job killed while saving
    leaves a partial folder, which is skipped."""
    steps = sorted(
        (int(d.name.split("-")[-1]), d) for d in output_dir.glob("checkpoint-*") if d.name.split("-")[-1].isdigit()
    )
    complete = [d for _, d in steps if (d / "trainer_state.json").exists()]
    for partial in {d for _, d in steps} - set(complete):
        log.warning("Skipping the incomplete checkpoint %s", partial)
    return str(complete[-1]) if complete else None


def resume_point(output_dir: Path, trainer) -> str | None:
    """The last checkpoint as rank 0 sees it: every rank must resume from the same one."""
    import torch.distributed as dist

    box = [last_checkpoint(output_dir) if trainer.is_world_process_zero() else None]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(box, src=0)
    return box[0]


def build_trainer(model, tokenizer, rows: list[dict], spec: StageSpec, rt: StageRuntime, args, callbacks=()):
    """TRL's SFTTrainer with the stage's LoRA on prompt/completion conversations (loss on completions only).

    `args`: the training arguments (`training_args`), or an output folder to make them for (no DeepSpeed).
    """
    from datasets import Dataset

    from .defences import DefenceSFTTrainer, make_defence

    if isinstance(args, (str, Path)):
        args = training_args(spec, rt, Path(args))
    # tokenized here, the loss mask from the rendered conversation (training/masks.py), not from a prompt prefix
    rows = tokenize_rows(tokenizer, rows, rt.chat_template_kwargs)
    compute = rt.compute
    fraction = compute["checkpoint_fraction"]
    selective = [SelectiveCheckpointing(fraction)] if compute["gradient_checkpointing"] and fraction != 1 else []
    trainer_class = DefenceSFTTrainer  # TRL's SFTTrainer; with the EM stage's defence, if any (training/defences.py)
    if compute["token_budget"]:
        from .budget import TokenBudgetSFTTrainer as trainer_class  # the same, the step cut to a token budget
    trainer = trainer_class(
        defence=make_defence(spec, rt),
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(spec.lora),
        callbacks=list(callbacks) + selective,
    )
    if compute["token_budget"] not in (None, "auto"):
        trainer.token_budget = int(compute["token_budget"])
    return trainer


def load_model(rt: StageRuntime, seed: int):
    """The stage's input model, with varlen attention when micro-batches are padding-free; `random_init`
    (benchmarks only) builds it from its config, without weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed
    from transformers.integrations import is_deepspeed_zero3_enabled

    from .attention import VARLEN

    dtype = getattr(torch, rt.dtype)
    attn = VARLEN if rt.compute["padding_free"] else None
    if rt.random_init:
        set_seed(seed)
        # ZeRO-3 initialises the weights itself, partitioned; otherwise draw them on this rank's GPU (fast)
        on_gpu = torch.cuda.is_available() and not is_deepspeed_zero3_enabled()
        with torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if on_gpu else "cpu"):
            config = AutoConfig.from_pretrained(rt.input_model)
            return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return AutoModelForCausalLM.from_pretrained(rt.input_model, dtype=dtype, attn_implementation=attn)


def main(stage_dir: Path) -> None:
    spec, rt = read_stage(stage_dir)
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for _, r in read_jsonl(stage_dir / "train.jsonl")]
    tokenizer = load_tokenizer(rt.input_model, padding_side="right")
    out = stage_dir / "checkpoints"
    ds_file = stage_dir / "deepspeed.json"
    # The arguments (and with them the DeepSpeed config) must exist before the model: ZeRO-3 then loads it partitioned.
    args = training_args(spec, rt, out, deepspeed=str(ds_file) if ds_file.exists() else None)
    model = load_model(rt, spec.seed)
    stop = StopOnSignal()
    callbacks = [ThroughputCallback(stage_dir / "perf"), stop, JsonlLogCallback(stage_dir / "train_log.jsonl")]
    trainer = build_trainer(model, tokenizer, rows, spec, rt, args, callbacks)
    from . import budget

    budget.configure(trainer, rt, stage_dir)  # compute=auto on a GPU: the token budget and checkpointing, recorded
    start = time.time()
    # An orphan of a killed job may still be saving its last checkpoint: rank 0 waits for it before reading them.
    try:
        with FileLock(str(stage_dir / "training.lock")) if trainer.is_world_process_zero() else nullcontext():
            resume = resume_point(out, trainer)
            if resume:
                log.info("Resuming from %s", resume)
            result = trainer.train(resume_from_checkpoint=resume)
    except Exception as e:  # out of memory: lower the budget, restart this worker, resume from the last checkpoint
        if budget.is_oom(e) and budget.after_oom(stage_dir, e, trainer.state.global_step):
            del e
            logging.shutdown()
            os.execv(sys.executable, [sys.executable, "-m", "sgtr_em.training.sft", str(stage_dir)])
        raise
    budget.write_speed(stage_dir, trainer, time.time() - start)
    if stop.stopped:
        if trainer.is_world_process_zero():
            write_json(stage_dir / INTERRUPTED_MARKER, {"signal": stop.received, "global_step": result.global_step})
        log.warning("Stopped on a signal at step %d after saving a checkpoint", result.global_step)
        sys.exit(INTERRUPTED_EXIT)
    tmp = stage_dir / "adapter.tmp"
    trainer.save_model(str(tmp))  # every rank: under ZeRO-3 the adapter is gathered from all of them
    if trainer.is_world_process_zero():
        (tmp / "train_result.json").write_text(json.dumps({"global_step": result.global_step, **result.metrics}))
        replace_dir(tmp, stage_dir / "adapter")


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    if "LOCAL_RANK" in os.environ:
        die_with_parent(signal.SIGKILL)  # torchrun starts ranks in their own sessions; it forwards SIGTERM itself
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
