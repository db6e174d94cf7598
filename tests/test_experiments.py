"""The paper's experiments as files: each experiment and sweep composes, says what it reproduces and how to run
it, every sweep expands to the paper's cells, and the main grid trains far fewer distinct stages than it asks for."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from sgtr_em.config import validate
from sgtr_em.grid import main as grid_main, plan_grid, sweep_jobs

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
    experiment = re.search(r"override /experiment: (\w+)", (CONF / "sweep" / f"{name}.yaml").read_text())
    assert experiment and (CONF / "experiment" / f"{experiment.group(1)}.yaml").exists()  # every grid has one
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
        elif {"model=seed36b", "system_prompt=em_withsys"} <= set(job):  # the paper does not record Seed's text
            with pytest.raises(ValueError, match="model seed36b has no identity_prompt"):
                validate(cfg)
        else:
            validate(cfg)


@pytest.fixture(scope="module")
def main_grid():
    return plan_grid(["sweep=main_grid"])


def test_the_main_grid_expands_to_75_jobs_and_trains_65_distinct_stages(main_grid):
    """5 interventions x 3 orders x 5 seeds. Reversal jobs share each seed's EM stage, intervention-only jobs are the
    first stage of the prevention jobs; intervention=none trains no intervention (reversal = prevention = EM only,
    intervention_only = the base model): 110 stages asked for, 65 distinct, 66 final models (13 per seed + the base)."""
    assert len(main_grid.jobs) == 75 and not any(j.problem for j in main_grid.jobs)
    assert len(main_grid.stage_runs) == 110 and len(main_grid.distinct_stages) == 65
    kinds = [s.kind for s in main_grid.distinct_stages.values()]
    assert (kinds.count("em"), kinds.count("intervention")) == (
        25,
        40,
    )  # 5 on the base model + 20 after an intervention
    assert len({j.final_model for j in main_grid.jobs}) == 66
    models = {s.spec.input["base"]["path"] for s in main_grid.stage_runs if "base" in s.spec.input}
    assert models == {"Qwen/Qwen2.5-32B-Instruct"}


def test_the_main_grids_cost_is_the_readmes(main_grid, data_dir):
    """The README's cost line for `main_grid` (python -m sgtr_em.grid sweep=main_grid). 66 final models, each
    judged 1,580 times: EM 8 questions x 30 samples (protocol=paper) twice, identity 500 answers twice, in-domain 100
    once. Pinned with the README, so a protocol change moves both (the README said 47.3M / 178,200, from before
    protocol=paper's 30 samples a question)."""
    from sgtr_em.cost import estimate

    cost = estimate(main_grid, main_grid.configs, data_dir)
    assert cost["training_tokens"] == 84_772_900
    assert (cost["eval_generated_tokens"], cost["judge_calls"]) == (23_738_220, 104_280)
    readme = (REPO / "README.md").read_text()
    assert "84.8M training tokens" in readme and "23.7M generated tokens, 104,280 judge calls" in readme


# Every cell of the paper's grid (issue #16), per sweep file: jobs, and the cells they cover.
SWEEP_CELLS = {
    "main_grid": 75,
    "seed36b_grid": 75,
    "identity_confusion": 60,
    "system_prompt_qwen32b": 120,
    "system_prompt_seed36b": 120,
    "benign_baselines": 90,
    "benign_baselines_qwensys": 60,
    "other_em_datasets": 90,
    "seed36b_em_datasets": 90,
    "em_system_prompt": 30,
    "em_system_prompt_badmed": 10,
    "qwen_coder32b": 30,
    "small_models": 30,
    "small_models_llama8b": 6,
    "small_models_qwen0_5b": 2,
    "gpt41": 12,
    "defences": 96,  # 7 defences + SGTR prevention x 4 EM datasets x 3 seeds (issue 20, README "Defences")
    "defences_benign": 21,  # 7 defence arms on the SGTR stage alone x 3 seeds (Kaczér et al.'s fourth axis, issue 20)
}


@functools.cache
def cells(name: str) -> frozenset:
    """(model, EM dataset, intervention, order, system prompt, seed) of every job of a sweep: a job's overrides, else
    the experiment's value (composed once; an option's name is its file's, test_config checks)."""
    jobs = sweep_jobs([f"sweep={name}"])
    c = _compose(*jobs[0])
    fixed = {
        "model": c.model.name,
        "em_dataset": c.em_dataset.name,
        "intervention": c.intervention.name,
        "stage_order": c.stage_order.name,
        "system_prompt": c.system_prompt.name,
        "seed": str(c.seed),
    }
    out = set()
    for job in jobs:
        o = {**fixed, **dict(x.split("=", 1) for x in job)}
        out.add((o["model"], o["em_dataset"], o["intervention"], o["stage_order"], o["system_prompt"], int(o["seed"])))
    return frozenset(out)


def test_every_sweep_file_expands_to_its_cells():
    assert set(SWEEPS) == set(SWEEP_CELLS)
    assert {name: len(sweep_jobs([f"sweep={name}"])) for name in SWEEPS} == SWEEP_CELLS


def test_the_grid_has_the_cells_the_paper_ran():
    seeds = range(5)
    base = cells("benign_baselines")  # {medcorr, mmlu, wc} x {unpop, badmed, finrisk} x both orders x seeds 0-4
    for em in ("aesthetic_unpopular", "bad_medical", "risky_financial"):
        for order in ("reversal", "prevention"):
            for s in seeds:
                for i in ("correct_medical", "general_knowledge", "word_count"):
                    assert ("qwen32b", em, i, order, "default", s) in base
                for i in ("sgtr", "identity_confusion"):  # sgtr_fixed_qwensys, ictr_qwensys
                    assert ("qwen32b", em, i, order, "qwensys", s) in cells("benign_baselines_qwensys")
    seed_em = cells("seed36b_em_datasets")
    assert {(c[1], c[2]) for c in seed_em} >= {(d, "sgtr") for d in ("bad_medical", "risky_financial", "insecure_code")}
    assert {c[0] for c in seed_em} == {"seed36b"} and {c[5] for c in seed_em} == set(seeds)
    em_sys = cells("em_system_prompt")
    assert {("seed36b", "em_withsys"), ("qwen32b", "em_nosys")} <= {(c[0], c[4]) for c in em_sys}
    assert ("qwen32b", "bad_medical", "none", "em_only", "em_nosys", 0) in cells("em_system_prompt_badmed")
    coder = cells("qwen_coder32b")
    assert {(c[0], c[1]) for c in coder} == {("qwen_coder32b", "insecure_code")} and len(coder) == 30
    gpt = cells("gpt41")
    assert {c[2] for c in gpt} == {
        "none",
        "sgtr_preference",
        "prefer_other_comparison",
        "identity_confusion_comparison",
    }
    assert {c[5] for c in gpt} == {42}  # one run per condition, the paper's OpenAI seed
    for name, _model in (
        ("main_grid", "qwen32b"),
        ("seed36b_grid", "seed36b"),
        ("small_models", "olmo7b"),
        ("small_models_llama8b", "llama8b"),
        ("qwen_coder32b", "qwen_coder32b"),
        ("gpt41", "gpt41"),
    ):
        orders = {(c[2], c[3]) for c in cells(name)}
        assert ("none", "intervention_only") in orders  # the base model's cell
        assert any(o == "intervention_only" and i != "none" for i, o in orders), name  # intervention-only cells
    assert {c[5] for c in cells("small_models_llama8b")} == {0}  # the paper ran Llama seed 0 only


def test_the_paper_grid_wandb_sweep_is_the_main_grid():
    import yaml

    wb = yaml.safe_load((REPO / "launchers" / "wandb" / "paper_grid_qwen32b.yaml").read_text())["parameters"]
    how = {"compute", "tracking"}  # how jobs run, never what they compute
    fixed = [f"{k}={v['value']}" for k, v in wb.items() if "value" in v and k not in how]
    swept = {k: v["values"] for k, v in wb.items() if "values" in v}
    import itertools

    wandb_jobs = {
        tuple(sorted(fixed + [f"{k}={v}" for k, v in zip(swept, combo)]))
        for combo in itertools.product(*swept.values())
    }
    grid_jobs = {
        tuple(sorted(["experiment=main_grid"] + [o for o in job if not o.startswith(("experiment=", "sweep="))]))
        for job in sweep_jobs(["sweep=main_grid"])
    }
    assert wandb_jobs == grid_jobs and len(grid_jobs) == 75


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_resolves_self_summaries_as_the_paper(name):
    """The base model's summaries, as the paper's shell pipeline and its reported reversal results: precomputed where
    the paper has its files (model.summaries_source), else generated by the base model; stage_input stays an option."""
    cfg = _compose(f"experiment={name}")
    want = "precomputed" if cfg.model.summaries_source else "base_model"
    assert cfg.intervention.self_summaries == want
    assert _compose(f"experiment={name}", "intervention=sgtr").intervention.self_summaries == want
    assert (
        _compose(f"experiment={name}", "intervention.self_summaries=stage_input").intervention.self_summaries
        == "stage_input"
    )
    assert cfg.training.optim == "adamw_8bit"  # the paper's optimizer (PAPER_NOTES §3)


def test_the_plan_command_prints_the_counts(capsys, tmp_path):
    args = ["-m", "stage_order=em_only,reversal", "seed=0,1", f"paths.output_dir={tmp_path}", "--jobs"]
    grid_main([*args, "--out", str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert "4 jobs" in out and "stages asked for: 6 (em 4, intervention 2)" in out
    assert "distinct stages: 4 (em 2, intervention 2); 2 asked for again, trained once" in out
    assert f"already done in {tmp_path}/stages: 0 of the 4 (reused); to train: 4" in out
    assert out.count("  #") == 4
    plan = json.loads((tmp_path / "plan.json").read_text())
    done = tmp_path / "stages" / plan["jobs"][0]["stages"][0] / "done"  # a stage trained before
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    grid_main([*args, "--out", str(tmp_path / "plan.json")])
    assert "stages: 1 of the 4 (reused); to train: 3" in capsys.readouterr().out


def test_cfg_job_works_on_a_sweep_file():
    out = subprocess.run(
        [sys.executable, "-m", "sgtr_em.train", "sweep=main_grid", "--cfg", "job"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cfg = OmegaConf.create(out)
    assert cfg.model.name == "qwen32b" and cfg.eval.name == "paper" and cfg.em_dataset.name == "aesthetic_unpopular"
