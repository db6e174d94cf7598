"""Stage worker, step 2: LoRA SFT of the stage's input model on `train.jsonl`, with TRL's SFTTrainer.

    python -m sgtr_em.training.sft <stage_dir>

Prompt/completion conversations with `completion_only_loss`: system and user tokens are masked, the
assistant turn (and its end-of-turn token) is trained. Checkpoints go to `<stage_dir>/checkpoints/`; a
rerun resumes from the last one. The adapter is written to `<stage_dir>/adapter/` last.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

from ..io import read_json, read_jsonl, replace_dir
from ..models import load_tokenizer
from ..workers import worker_logging

log = logging.getLogger("sgtr_em.training.sft")


class JsonlLogCallback(TrainerCallback):
    """Appends every logged step (loss, learning rate, grad norm) to a JSONL file the parent reads."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class SelectiveCheckpointing(TrainerCallback):
    """Recompute only a share of the decoder layers: memory between full checkpointing and none, speed too.

    The Trainer turns checkpointing on for every layer when training starts; this turns it back off for the
    layers past the first `fraction` of them, spread evenly over the depth.
    """

    def __init__(self, fraction: float):
        self.fraction = fraction

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from transformers.modeling_layers import GradientCheckpointingLayer

        layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
        keep = round(self.fraction * len(layers))
        for i, layer in enumerate(layers):
            layer.gradient_checkpointing = (i * keep) // len(layers) != ((i + 1) * keep) // len(layers)


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

    return LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                      use_rslora=lora["use_rslora"], target_modules=list(lora["target_modules"]),
                      bias="none", task_type="CAUSAL_LM")


def sft_config(output_dir: Path, training: dict, seed: int, compute: dict, dtype: str, extra: dict):
    from trl import SFTConfig

    micro, world = compute["micro_batch_size"], int(os.environ.get("WORLD_SIZE", "1"))
    if training["batch_size"] % (micro * world):
        raise ValueError(f"training.batch_size {training['batch_size']} is not a multiple of "
                         f"compute.micro_batch_size {micro} x {world} devices")
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
        optim=training["optim"],
        # data/build.py drops examples over max_length; TRL's padding-free mode wants the limit enforced upstream
        max_length=None if compute["padding_free"] else training["max_length"],
        gradient_checkpointing=compute["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=extra["logging_steps"],
        save_strategy="steps",
        save_steps=extra["save_steps"],
        save_total_limit=extra["save_total_limit"],
        completion_only_loss=True,
        padding_free=compute["padding_free"],
        use_liger_kernel=compute["liger"],
        bf16=device == "cuda" and dtype == "bfloat16",
        use_cpu=device == "cpu",
        seed=seed,
        data_seed=seed,
        report_to=[],
        disable_tqdm=False,
        dataset_num_proc=None,
    )


def last_checkpoint(output_dir: Path):
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def build_trainer(model, tokenizer, rows: list[dict], spec: dict, rt: dict, output_dir: Path, callbacks=()):
    """TRL's SFTTrainer with the stage's LoRA on prompt/completion conversations (loss on completions only)."""
    from datasets import Dataset
    from trl import SFTTrainer

    if rt["chat_template_kwargs"]:
        rows = [{**r, "chat_template_kwargs": rt["chat_template_kwargs"]} for r in rows]
    compute = rt["compute"]
    fraction = compute.get("checkpoint_fraction", 1.0)
    selective = [SelectiveCheckpointing(fraction)] if compute["gradient_checkpointing"] and fraction < 1 else []
    return SFTTrainer(
        model=model,
        args=sft_config(output_dir, spec["training"], spec["seed"], rt["compute"], rt["dtype"], rt["training_extra"]),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(spec["lora"]),
        callbacks=list(callbacks) + selective,
    )


def load_training_model(path: str, dtype: str, compute: dict):
    """The stage's input weights, with varlen attention when micro-batches are padding-free."""
    import torch
    from transformers import AutoModelForCausalLM

    from .attention import VARLEN

    attn = VARLEN if compute["padding_free"] else None
    return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), attn_implementation=attn)


def main(stage_dir: Path) -> None:

    st = read_json(stage_dir / "stage.json")
    spec, rt = st["spec"], st["runtime"]
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for _, r in read_jsonl(stage_dir / "train.jsonl")]
    tokenizer = load_tokenizer(rt["input_model"], padding_side="right")
    model = load_training_model(rt["input_model"], rt["dtype"], rt["compute"])
    out = stage_dir / "checkpoints"
    trainer = build_trainer(model, tokenizer, rows, spec, rt, out, [JsonlLogCallback(stage_dir / "train_log.jsonl")])
    resume = last_checkpoint(out)
    if resume:
        log.info("Resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    tmp = stage_dir / "adapter.tmp"
    trainer.model.save_pretrained(tmp)
    (tmp / "train_result.json").write_text(json.dumps({"global_step": result.global_step, **result.metrics}))
    replace_dir(tmp, stage_dir / "adapter")


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
