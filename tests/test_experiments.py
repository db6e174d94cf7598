"""The paper's experiments as files: each experiment and sweep composes, says what it reproduces and how to run
it, and the main grid expands to its 50 jobs, which train far fewer distinct stages than they ask for."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sgtr_em.config import validate
from sgtr_em.grid import main as grid_main
from sgtr_em.grid import plan_grid, sweep_jobs

from .test_config import CONF, NOT_IMPLEMENTED, REPO, _compose

EXPERIMENTS = sorted(f.stem for f in (CONF / "experiment").glob("*.yaml"))
SWEEPS = sorted(f.stem for f in (CONF / "sweep").glob("*.yaml"))


def header(group: str, name: str) -> str:
    lines = (CONF / group / f"{name}.yaml").read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("#"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_says_what_it_reproduces_and_the_exact_command(name):
    text = header("experiment", name)
    assert f"python -m sgtr_em.train experiment={name}" in text or f"sweep={name}" in text
    cfg = _compose(f"experiment={name}")
    OmegaConf.to_container(cfg, resolve=True)
    if name not in ("paper_scale", "sr_positive_control"):  # the control runs on SmolLM2 (the CPU)
        assert cfg.model.name != "smollm2" and cfg.em_dataset.max_examples is None  # a paper model at paper scale
    if ("experiment", name) not in NOT_IMPLEMENTED:
        validate(cfg)


@pytest.mark.parametrize("name", SWEEPS)
def test_every_sweep_is_a_multirun_of_the_size_its_header_says(name):
    assert (CONF / "experiment" / f"{name}.yaml").exists()  # every grid has its experiment file
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        assert compose("config", overrides=[f"sweep={name}"], return_hydra_config=True).hydra.mode.name == "MULTIRUN"
    jobs = sweep_jobs([f"sweep={name}"])
    claimed = re.search(r"= (\d+) (?:EM-only )?jobs", header("sweep", name))
    assert claimed and len(jobs) == int(claimed.group(1))
    assert len({tuple(sorted(j)) for j in jobs}) == len(jobs)
    for job in (jobs[0], jobs[-1]):
        cfg = _compose(*job)
        if ("sweep", name) in NOT_IMPLEMENTED:
            with pytest.raises(ValueError, match="not implemented yet"):
                validate(cfg)
        else:
            validate(cfg)


@pytest.fixture(scope="module")
def main_grid():
    return plan_grid(["sweep=main_grid"])


def test_the_main_grid_expands_to_50_jobs_and_trains_65_distinct_stages(main_grid):
    """5 interventions x 2 orders x 5 seeds. Reversal jobs share each seed's EM stage; intervention=none trains no
    intervention, and its prevention job is its reversal job: 90 stages asked for, 65 distinct, 45 final models."""
    assert len(main_grid.jobs) == 50 and not any(j.problem for j in main_grid.jobs)
    assert len(main_grid.stage_runs) == 90 and len(main_grid.distinct_stages) == 65
    kinds = [s.kind for s in main_grid.distinct_stages.values()]
    assert (kinds.count("em"), kinds.count("intervention")) == (25, 40)  # 5 on the base model + 20 after an intervention
    assert len({j.final_model for j in main_grid.jobs}) == 45
    assert len(main_grid.stage_runs) < 2 * len(main_grid.jobs)
    models = {s.spec["input"]["base"]["path"] for s in main_grid.stage_runs if "base" in s.spec["input"]}
    assert models == {"Qwen/Qwen2.5-32B-Instruct"}


def test_the_plan_command_prints_the_counts(capsys):
    grid_main(["-m", "stage_order=em_only,reversal", "seed=0,1", "--jobs"])
    out = capsys.readouterr().out
    assert "4 jobs" in out and "stages asked for: 6 (em 4, intervention 2)" in out
    assert "distinct stages to train: 4 (em 2, intervention 2); 2 reused" in out
    assert out.count("  #") == 4


def test_cfg_job_works_on_a_sweep_file():
    out = subprocess.run([sys.executable, "-m", "sgtr_em.train", "sweep=main_grid", "--cfg", "job"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    cfg = OmegaConf.create(out)
    assert cfg.model.name == "qwen32b" and cfg.eval.name == "paper" and cfg.em_dataset.name == "aesthetic_unpopular"
