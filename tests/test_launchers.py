"""Launch configs: the Slurm request a preset makes (the sbatch file submitit would submit), the `-m --cfg hydra`
view of it, and the commands W&B sweep agents run, composed into the intended Hydra configs."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sgtr_em.config import register_configs

from .conftest import REPO

register_configs()
CONF = REPO / "conf"
LAUNCHERS = sorted((CONF / "hydra" / "launcher").glob("*.yaml"))
SWEEPS = sorted((REPO / "launchers" / "wandb").glob("*.yaml"))


def _compose_with_hydra(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def sbatch_script(*overrides: str, n_jobs: int, folder) -> str:
    """The sbatch file hydra-submitit-launcher would submit for a grid of `n_jobs` (its own parameter mapping).

    Writing the file needs no Slurm; submitit's executor refuses to be built without `srun` on PATH (which only
    submitting needs), so its check is answered here: these tests pass on a machine without Slurm, in any order."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    launcher = _compose_with_hydra(*overrides).hydra.launcher
    params = {
        k: OmegaConf.to_container(launcher, resolve=True)[k]
        for k in launcher
        if k not in ("submitit_folder", "_target_")
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # what submitit answers when srun is found
        executor = submitit.AutoExecutor(
            folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    executor._executor.parameters["map_count"] = n_jobs
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid")


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.stem for p in LAUNCHERS])
def test_every_launcher_preset_composes_and_says_how_to_use_it(path):
    assert path.read_text().startswith("#"), f"{path}: first line must be a usage comment"
    cfg = _compose_with_hydra(f"hydra/launcher={path.stem}")
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.tasks_per_node == 1


def test_the_qwen32b_grid_on_8_gpu_nodes_asks_slurm_for_whole_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv("SGTR_EM_SLURM_PARTITION", raising=False)
    monkeypatch.delenv("SGTR_EM_SLURM_ACCOUNT", raising=False)
    script = sbatch_script(
        "model=qwen32b", "intervention=sgtr", "compute=gpu8", "hydra/launcher=slurm_gpu8", n_jobs=30, folder=tmp_path
    )
    for line in (
        "--gpus-per-node=8",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--cpus-per-task=64",
        "--mem=512GB",
        "--time=1440",
        "--signal=USR2@300",
        "--requeue",
        "--open-mode=append",
        "--array=0-29%4",
        "--job-name=sgtr-em",
    ):
        assert f"#SBATCH {line}\n" in script, f"{line} missing from:\n{script}"
    assert "--partition" not in script  # the cluster's default unless SGTR_EM_SLURM_PARTITION or an override says
    assert "export TOKENIZERS_PARALLELISM=false" in script and "srun" in script


def test_multinode_asks_for_one_parent_per_node(tmp_path):
    script = sbatch_script(
        "compute=multinode",
        "hydra/launcher=slurm_multinode",
        "hydra.launcher.nodes=4",
        "hydra.launcher.partition=h100",
        n_jobs=2,
        folder=tmp_path,
    )
    for line in ("--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=h100"):
        assert f"#SBATCH {line}\n" in script


def test_cfg_hydra_of_a_multirun_shows_the_slurm_request():
    """The README's check, verbatim: Hydra 1.3 refuses -m with --cfg, so train.py reads it as hydra.mode=MULTIRUN."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgtr_em.train",
            "model=qwen32b",
            "intervention=sgtr",
            "compute=gpu8",
            "hydra/launcher=slurm_gpu8",
            "-m",
            "--cfg",
            "hydra",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hydra_cfg = yaml.safe_load(out)["hydra"]
    assert hydra_cfg["mode"] == "MULTIRUN"
    launcher = hydra_cfg["launcher"]
    assert (launcher["gpus_per_node"], launcher["nodes"], launcher["tasks_per_node"]) == (8, 1, 1)
    assert launcher["timeout_min"] == 1440 and launcher["max_num_timeout"] >= 1


# -- W&B sweeps ---------------------------------------------------------------------------------------------------


def sweep_points(sweep: dict) -> list[dict]:
    """Grid points of a grid sweep; for other methods, one point per listed value (ends of distributions)."""
    choices = {}
    for name, p in sweep["parameters"].items():
        choices[name] = [p["value"]] if "value" in p else p.get("values") or [p["min"], p["max"]]
    if sweep["method"] == "grid":
        return [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]
    longest = max(len(v) for v in choices.values())
    return [{k: v[i % len(v)] for k, v in choices.items()} for i in range(longest)]


def agent_command(sweep: dict, point: dict) -> list[str]:
    """The command line a W&B agent runs for `point` (wandb's own macro functions, then its substitution loop)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    command = sweep_utils.create_sweep_command(list(sweep["command"]))
    macros = sweep_utils.create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    macros.update(env=["/usr/bin/env"], interpreter=["python"], program=[sweep.get("program", "")])
    out = []
    for chunk in map(str, command):
        out += macros.get(chunk[2:-1], []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return out


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_a_sweep_agent_command_composes_into_the_intended_config(path):
    sweep = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("#") and "${args_no_hyphens}" in sweep["command"]
    groups = {p.name for p in CONF.iterdir() if p.is_dir()}
    points = sweep_points(sweep)
    for point in points[:: max(1, len(points) // 12)]:  # a spread of points: every value of every parameter appears
        cmd = agent_command(sweep, point)
        assert cmd[:4] == ["/usr/bin/env", "python", "-m", "sgtr_em.train"], cmd
        cfg = _compose_with_hydra(*cmd[4:])
        for key, value in point.items():
            if key in groups:
                assert cfg.hydra.runtime.choices[key] == value, (key, cmd)
            else:
                assert OmegaConf.select(cfg, key) == pytest.approx(value), (key, cmd)


def test_a_sweep_agent_command_runs_through_the_real_cli():
    sweep = yaml.safe_load((REPO / "launchers" / "wandb" / "paper_grid_qwen32b.yaml").read_text())
    point = sweep_points(sweep)[-1]
    cmd = agent_command(sweep, point)
    out = subprocess.run(
        [sys.executable, *cmd[2:], "--cfg", "job"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    job = yaml.safe_load(out)
    assert (job["model"]["name"], job["em_dataset"]["name"], job["stage_order"]["name"], job["seed"]) == (
        "qwen32b",
        "aesthetic_unpopular",
        point["stage_order"],
        point["seed"],
    )
    assert job["em_dataset"]["max_examples"] is None  # experiment=main_grid (on paper_scale) took effect
    assert job["compute"]["nproc_per_node"] == 8 and job["tracking"]["mode"] == "online"
