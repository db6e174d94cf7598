"""The training settings of the tests that train through `build_trainer` on a CPU in fp32 (test_attention.py,
test_token_budget.py): lr 1e-3, no warm-up or weight decay, a log line every step."""

from __future__ import annotations


def cpu_training(*, batch_size: int, max_steps: int = 2, save_steps: int = 1000, **compute) -> tuple[dict, dict]:
    """(spec["training"], the stage runtime) of a short CPU run; `compute` overrides the plain padded defaults."""
    compute = {
        "device": "cpu",
        "micro_batch_size": 1,
        "gradient_checkpointing": False,
        "checkpoint_fraction": 1.0,
        "padding_free": False,
        "liger": False,
        **compute,
    }
    training = {
        "learning_rate": 1e-3,
        "num_train_epochs": 1,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "warmup_steps": 0,
        "weight_decay": 0.0,
        "lr_scheduler_type": "linear",
        "optim": "adamw_torch",
        "max_length": 2048,
    }
    runtime = {
        "compute": compute,
        "dtype": "float32",
        "chat_template_kwargs": {},
        "training_extra": {"logging_steps": 1, "save_steps": save_steps, "save_total_limit": 1},
    }
    return training, runtime
