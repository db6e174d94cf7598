"""Dry run of a sweep: expand it into jobs as Hydra's basic sweeper does, plan each job, count what trains.

    python -m sgtr_em.grid sweep=main_grid               # jobs, stages asked for, distinct stages, final models
    python -m sgtr_em.grid sweep=main_grid --jobs        # and one line per job: its overrides and stage hashes
    python -m sgtr_em.grid -m stage_order=em_only,reversal seed=0,1   # any sweep given on the command line
    python -m sgtr_em.grid sweep=main_grid --out plan.json   # where the plan and cost are recorded

Stages are content-hashed (sgtr_em/plan.py), so a stage asked for by several jobs trains once: the report
says how many distinct stages a grid trains, and how many distinct models it evaluates, and what it costs
(sgtr_em/cost.py: training tokens, GPU-hours from bench/results, generated tokens, judge calls, dollars). The
plan and cost are recorded as JSON (default `<paths.output_dir>/plans/<sweep>.json`). Nothing is run.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from .config import CONF_DIR, override_problems, register_configs, validate
from .cost import estimate, summary_lines, to_json
from .plan import Stage, content_hash, final_model_identity, plan_stages


@dataclass
class JobPlan:
    overrides: list[str]
    stages: list[Stage]
    final_model: str  # hash of the identity of the model its evaluation sees
    problem: str = ""  # why validation fails (e.g. a backend that is not implemented yet)


@dataclass
class GridPlan:
    jobs: list[JobPlan] = field(default_factory=list)
    configs: list = field(default_factory=list, repr=False)  # each job's composed config (same order)

    @property
    def stage_runs(self) -> list[Stage]:
        return [r for j in self.jobs for s in j.stages for r in (*s.requires, s)]  # requires: trained first

    @property
    def distinct_stages(self) -> dict[str, Stage]:
        return {s.hash: s for s in self.stage_runs}

    def summary(self) -> str:
        runs, distinct = self.stage_runs, self.distinct_stages
        by_kind = lambda stages: ", ".join(f"{k} {n}" for k, n in sorted(Counter(s.kind for s in stages).items()))  # noqa: E731
        stages_dir = Path(self.configs[0].paths.stages_dir) if self.configs else None
        done = [h for h in distinct if stages_dir and (stages_dir / h / "done").exists()]
        lines = [
            f"{len(self.jobs)} jobs",
            f"stages asked for: {len(runs)} ({by_kind(runs)})",
            f"distinct stages: {len(distinct)} ({by_kind(distinct.values())}); "
            f"{len(runs) - len(distinct)} asked for again, trained once",
            f"already done in {stages_dir}: {len(done)} of the {len(distinct)} (reused); to train: "
            f"{len(distinct) - len(done)}",
            f"distinct final models to evaluate: {len({j.final_model for j in self.jobs})}",
        ]
        invalid = [j for j in self.jobs if j.problem]
        if invalid:
            lines.append(f"jobs that fail validation: {len(invalid)} (first: {invalid[0].problem.splitlines()[-1]})")
        return "\n".join(lines)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job of the sweep (hydra.sweeper.params and command-line sweeps)."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    return BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), max_batch_size=None)[0]


def plan_grid(overrides: list[str]) -> GridPlan:
    register_configs()
    grid = GridPlan()
    jobs = sweep_jobs(overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            cfg = compose("config", overrides=job)
            try:
                validate(cfg)
                problem = ""
            except ValueError as e:
                problem = str(e)
            stages = plan_stages(cfg)
            grid.jobs.append(JobPlan(job, stages, content_hash(final_model_identity(stages, cfg)), problem))
            grid.configs.append(cfg)
    return grid


def record_path(overrides: list[str], grid: GridPlan) -> Path:
    """`<paths.output_dir>/plans/<sweep name, or the overrides' hash>.json`."""
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")), None)
    return Path(grid.configs[0].paths.output_dir) / "plans" / f"{name or content_hash(overrides, 8)}.json"


def main(argv: list[str]) -> dict:
    show_jobs = "--jobs" in argv
    out = argv[argv.index("--out") + 1] if "--out" in argv else None
    overrides = [
        a
        for i, a in enumerate(argv)
        if a not in ("--jobs", "-m", "--multirun", "--out") and not (i and argv[i - 1] == "--out")
    ]
    if problems := override_problems(overrides):
        sys.exit("sgtr-em: refused, nothing was planned:\n  - " + "\n  - ".join(problems))
    grid = plan_grid(overrides)
    cost = estimate(grid, grid.configs, Path(grid.configs[0].paths.data_dir))
    print(f"sgtr-em plan of `{' '.join(overrides)}`:\n  " + grid.summary().replace("\n", "\n  "))
    print("  " + "\n  ".join(summary_lines(cost)))
    if show_jobs:
        for i, j in enumerate(grid.jobs):
            stages = " -> ".join(f"{s.kind}:{s.hash}" for s in j.stages) or "(no training)"
            print(f"  #{i} {' '.join(j.overrides)}: {stages}")
    path = Path(out) if out else record_path(overrides, grid)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "overrides": overrides,
        "jobs": [
            {
                "overrides": j.overrides,
                "stages": [s.hash for s in j.stages],
                "final_model": j.final_model,
                "problem": j.problem,
            }
            for j in grid.jobs
        ],
        "cost": cost,
    }
    path.write_text(to_json(record))
    print(f"  recorded: {path}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
