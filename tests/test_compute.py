"""How a stage's training is launched: the ZeRO rule, the worker command lines, compute resolution, checkpoints."""

from __future__ import annotations

import json
import sys

import pytest
from hydra.errors import ConfigCompositionException

from sgtr_em.compute import choose_zero, deepspeed_json, resolve_compute
from sgtr_em.train import multirun_cfg_argv
from sgtr_em.training.sft import last_checkpoint
from sgtr_em.workers import launch_command, worker_env

from .test_config import _compose

H100, H200 = 79.6, 139.8  # GiB, as torch reports them
QWEN32B, SEED36B, QWEN7B = 61.0, 67.3, 14.2  # bf16 weights, GiB


@pytest.mark.parametrize(
    "weights,gpu,world,stage,offload",
    [
        (QWEN32B, H100, 2, 2, False),  # fits one GPU: ZeRO-2 (measured 1.96x; ZeRO-3 1.04x)
        (QWEN32B, H200, 8, 2, False),
        (SEED36B, H100, 2, 3, False),  # fits no 80 GB GPU, but half of it does
        (SEED36B, H200, 2, 2, False),
        (QWEN7B, H100, 1, 0, False),  # one process: no DeepSpeed
        (SEED36B, H100, 1, 3, True),  # one process, weights too big: ZeRO-3 with CPU offload
        (4 * QWEN32B, H100, 2, 3, True),  # not even half fits
    ],
)
def test_the_zero_rule(weights, gpu, world, stage, offload):
    got = choose_zero(weights, gpu, world, headroom_gib=14.0)
    assert got[:2] == (stage, offload), got[2]


def test_deepspeed_json_leaves_the_batch_to_the_trainer_and_keeps_its_optimizer():
    z3 = deepspeed_json(3, True, {"zero_optimization": {"stage3_max_live_parameters": 10}})
    assert z3["train_micro_batch_size_per_gpu"] == z3["gradient_accumulation_steps"] == "auto"
    assert "optimizer" not in z3 and z3["zero_force_ds_cpu_optimizer"] is False  # training.optim stays in charge
    zo = z3["zero_optimization"]
    assert zo["stage"] == 3 and zo["offload_param"]["device"] == "cpu" and zo["stage3_max_live_parameters"] == 10
    assert "offload_param" not in deepspeed_json(2, True)["zero_optimization"]


def test_launch_commands():
    py = launch_command("m", "d")
    assert py == [sys.executable, "-m", "m", "d"]
    one_node = launch_command("m", "d", {"launcher": "torchrun", "nproc_per_node": 8, "nnodes": 1})
    assert one_node[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=8", "--standalone", "-m", "m", "d"]
    two_nodes = launch_command(
        "m",
        "d",
        {
            "launcher": "torchrun",
            "nproc_per_node": 8,
            "nnodes": 2,
            "node_rank": 1,
            "master_addr": "node7",
            "master_port": 4321,
        },
    )
    assert "--node-rank=1" in two_nodes and "--master-addr=node7" in two_nodes and "--nnodes=2" in two_nodes
    acc = launch_command("m", "d", {"launcher": "accelerate", "nproc_per_node": 4, "nnodes": 1, "device": "cuda"})
    assert acc[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes=4" in acc and "--multi_gpu" in acc
    assert acc[-3:] == ["-m", "m", "d"]


def test_a_one_process_gpu_worker_sees_one_gpu(monkeypatch):
    """compute=gpu on a machine with several GPUs: one process must see one GPU (else the Trainer wraps the model in
    nn.DataParallel, which TRL refuses: seen on a 2 x H200 machine). torchrun's workers see them all."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert worker_env(90, {"launcher": "python", "device": "cuda"})["CUDA_VISIBLE_DEVICES"] == "3"
    assert worker_env(90, {"launcher": "torchrun", "device": "cuda"})["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert worker_env(90)["CUDA_VISIBLE_DEVICES"] == "3,5"  # data, merge and evaluation workers: unchanged
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert worker_env(90, {"launcher": "python", "device": "cuda"})["CUDA_VISIBLE_DEVICES"] == "0"


def test_compute_resolves_on_a_cpu(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_NUM_NODES", raising=False)
    monkeypatch.delenv("SLURM_NNODES", raising=False)
    cfg = _compose("compute=cpu_2proc")
    c = resolve_compute(cfg.compute, cfg.deepspeed, model_path=None)
    assert (c["launcher"], c["world_size"], c["deepspeed"]["stage"]) == ("torchrun", 2, 0)
    assert resolve_compute(_compose("compute=cpu").compute)["launcher"] == "python"
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    assert resolve_compute(_compose("compute=cpu_2proc", "compute.nnodes=null").compute)["world_size"] == 6
    with pytest.raises(ValueError, match="use compute.launcher=torchrun on CPUs"):
        resolve_compute(_compose("compute=cpu_2proc", "compute.launcher=accelerate").compute)
    with pytest.raises(ValueError, match="needs GPUs"):
        cfg = _compose("compute=cpu", "deepspeed=zero3")
        resolve_compute(cfg.compute, cfg.deepspeed)


def test_bad_compute_fails_early_with_the_key():
    from sgtr_em.config import validate

    with pytest.raises(ConfigCompositionException, match="compute.launcher"):  # an enum: refused at compose
        validate(_compose("compute.launcher=mpirun"))
    with pytest.raises(ValueError, match="deepspeed needs a distributed launcher"):
        validate(_compose("deepspeed=zero2", "compute.launcher=python"))


def test_the_newest_complete_checkpoint_is_used(tmp_path):
    assert last_checkpoint(tmp_path) is None
    for step, whole in ((1, True), (2, True), (3, False), (10, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if whole:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    assert last_checkpoint(tmp_path).endswith("checkpoint-10")  # numeric order; 12 was cut off mid-save


def test_multirun_cfg_is_read_as_a_multirun_config():
    argv = ["train.py", "model=qwen32b", "-m", "--cfg", "hydra"]
    assert multirun_cfg_argv(argv) == ["train.py", "hydra.mode=MULTIRUN", "model=qwen32b", "--cfg", "hydra"]
    assert multirun_cfg_argv(["train.py", "-m", "seed=0,1"]) == ["train.py", "-m", "seed=0,1"]


def test_activation_checkpointing_goes_under_the_name_the_installed_transformers_takes():
    """transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; 5.0-5.1x (still on GPU images, e.g.
    5.17) take only the old name, and SFTConfig refused the new one there (the SR positive control's first GPU run)."""
    import dataclasses

    from sgtr_em.training.sft import _checkpointing_args

    @dataclasses.dataclass
    class Old:
        gradient_checkpointing: bool = False
        gradient_checkpointing_kwargs: dict | None = None

    @dataclasses.dataclass
    class New(Old):
        activation_checkpointing: bool = False
        activation_checkpointing_kwargs: dict | None = None

    assert _checkpointing_args(Old, True) == {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    assert _checkpointing_args(New, False) == {
        "activation_checkpointing": False,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
    }
    Old(**_checkpointing_args(Old, True))  # constructs: no unexpected keyword
