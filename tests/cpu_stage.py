"""A short LoRA stage on the CPU for `build_trainer` (tests/test_attention.py, tests/test_token_budget.py): two
steps at lr 1e-3, fp32, padded micro-batches without gradient checkpointing unless `compute` says otherwise."""

from __future__ import annotations

from sgtr_em.contracts import StageRuntime, StageSpec


def cpu_stage(
    input_model: str, lora: dict, *, micro_batch_size: int, batch_size: int, **compute
) -> tuple[StageSpec, StageRuntime]:
    """(spec, runtime): `batch_size` sequences a step in micro-batches of `micro_batch_size`; `compute` overrides the
    compute block (padding_free, token_budget, gradient_checkpointing, checkpoint_fraction, ...)."""
    compute = {
        "device": "cpu",
        "micro_batch_size": micro_batch_size,
        "gradient_checkpointing": False,
        "checkpoint_fraction": 1.0,
        "padding_free": False,
        "liger": False,
        "token_budget": None,
        **compute,
    }
    training = {
        "learning_rate": 1e-3,
        "num_train_epochs": 1,
        "max_steps": 2,
        "batch_size": batch_size,
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "lr_scheduler_type": "linear",
        "optim": "adamw_torch",
        "max_length": 2048,
    }
    rt = StageRuntime(
        backend="hf",
        input_model=input_model,
        compute=compute,
        dtype="float32",
        chat_template_kwargs={},
        training_extra={"logging_steps": 1, "save_steps": 1000, "save_total_limit": 1},
    )
    spec = StageSpec(
        kind="em", input={}, data={}, system_prompt={}, chat_template_kwargs={}, training=training, lora=lora, seed=0
    )
    return spec, rt
