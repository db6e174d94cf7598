"""Trainer callbacks of the training worker: the JSONL log the parent reads, throughput, stop-on-signal,
selective gradient checkpointing."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from ..io import write_json


class JsonlLogCallback(TrainerCallback):
    """Appends every logged step (loss, learning rate, grad norm, tokens/s) to a JSONL file the parent reads."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


def _peak_memory_gib(reserved: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return (torch.cuda.max_memory_reserved() if reserved else torch.cuda.max_memory_allocated()) / 2**30


class ThroughputCallback(TrainerCallback):
    """Tokens/s over all processes (non-pad tokens through the forward pass, DESIGN.md §9) and peak GPU memory.

    Adds `tokens_per_s` and `peak_mem_gib` (rank 0) to each logged step; at the end every rank writes
    `<perf_dir>/rank<r>.json` (its peak memory; rank 0 also the steady-state tokens/s, first step excluded).
    """

    def __init__(self, perf_dir: Path):
        self.perf_dir = perf_dir
        self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at each optimizer step's end

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks = [(time.perf_counter(), state.num_input_tokens_seen)]

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def _rate(self, first: int) -> float | None:
        if len(self.marks) < first + 2:  # no step after `first` (a resume from the last checkpoint runs none)
            return None
        (t0, n0), (t1, n1) = self.marks[first], self.marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and len(self.marks) > 1:
            (t0, n0), (t1, n1) = self.marks[-2], self.marks[-1]
            logs["tokens_per_s"] = (n1 - n0) / (t1 - t0) if t1 > t0 else None
            logs["peak_mem_gib"] = _peak_memory_gib()

    def on_train_end(self, args, state, control, **kwargs):
        rank = int(os.environ.get("RANK", "0"))
        steps = len(self.marks) - 1
        write_json(
            self.perf_dir / f"rank{rank}.json",
            {
                "rank": rank,
                "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                "optimizer_steps": steps,
                "peak_mem_gib": _peak_memory_gib(),
                "peak_reserved_gib": _peak_memory_gib(reserved=True),
                "tokens": self.marks[-1][1] - self.marks[0][1],
                "tokens_per_s": self._rate(0),
                "tokens_per_s_after_first_step": self._rate(1),
                "step_seconds": [round(b[0] - a[0], 3) for a, b in zip(self.marks, self.marks[1:])],
                "step_tokens": [b[1] - a[1] for a, b in zip(self.marks, self.marks[1:])],
            },
        )


class StopOnSignal(TrainerCallback):
    """On SIGTERM or SIGUSR2 (preemption, requeue, Slurm's time-limit warning): finish the optimizer step, save a
    checkpoint, stop. Ranks agree on the step through an all-reduce of the flag, so none waits on another."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR2)):
        self.received: int | None = None
        self.stopped = False
        for s in signals:
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.received = signum

    def _any_rank(self, args) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.received is not None
        flag = torch.tensor([int(self.received is not None)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._any_rank(args):
            control.should_save = True
            control.should_training_stop = True
            self.stopped = True


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
