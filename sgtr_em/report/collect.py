"""Every job's condition, seed and metrics: offline from a sweep's job folders, or online from a W&B group.

A job folder is one with `metrics.json` and `.hydra/config.yaml` (sgtr_em/job.py writes the first, Hydra the
second); `after_stage/` points have no `.hydra/` and are not jobs. Metrics are flattened to `<eval>/<path>`
keys, the same keys a W&B run's summary holds under `eval/`, so both sources give the same records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from ..io import read_json
from ..tracking import CONDITION_KEYS, SEED_KEY, command_line_overrides, condition_overrides, flatten


@dataclass
class Job:
    fields: dict[str, str]  # the config-group choices, then other command-line overrides (seed excluded)
    seed: Any
    metrics: dict[str, Any]  # flattened: "self_recognition/accuracy" -> 0.75
    source: str  # its folder, or entity/project/run id
    extra: dict[str, str] = field(default_factory=dict)  # command-line overrides besides the groups and seed


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def find_job_dirs(root: str | Path) -> list[Path]:
    """The job folders under `root` (or `root` itself), in sweep order (numbered folders sorted as numbers)."""
    root = Path(root)
    dirs = {p.parent for p in root.rglob("metrics.json") if (p.parent / ".hydra" / "config.yaml").exists()}
    return sorted(dirs, key=lambda p: _natural(p.relative_to(root)))


def unfinished_job_dirs(root: str | Path) -> list[str]:
    """Job folders under `root` without `metrics.json`: failed, refused or still running. A report over a sweep
    says so, rather than averaging fewer seeds without a word."""
    root = Path(root)
    dirs = {
        p.parent.parent for p in root.rglob(".hydra/config.yaml") if not (p.parent.parent / "metrics.json").exists()
    }
    return [str(d) for d in sorted(dirs, key=lambda p: _natural(p.relative_to(root)))]


def job_from_folder(job_dir: str | Path) -> Job:
    job_dir = Path(job_dir)
    cfg = yaml.safe_load((job_dir / ".hydra" / "config.yaml").read_text())
    cfg.setdefault("defence", {"name": "none"})  # a job from before the defence group
    missing = [k for k in CONDITION_KEYS if not isinstance(cfg.get(k), dict) or "name" not in cfg[k]]
    if missing:
        raise ValueError(f"{job_dir}/.hydra/config.yaml has no name for {missing}: not a sgtr_em.train job folder")
    metrics = {k: v for k, v in read_json(job_dir / "metrics.json").items() if k != "model"}
    return Job(
        fields={k: str(cfg[k]["name"]) for k in CONDITION_KEYS},
        seed=cfg.get(SEED_KEY),
        metrics={**flatten(metrics), **trained_compute(job_dir)},
        source=str(job_dir),
        extra=condition_overrides(command_line_overrides(job_dir)),
    )


def trained_compute(job_dir: Path) -> dict:
    """Optimizer steps and tokens over the job's stages (their adapter/train_result.json); {} when not recorded."""
    steps = tokens = 0
    stages = read_json(job_dir / "stages.json") if (job_dir / "stages.json").exists() else []
    for st in stages:
        result = Path(st["folder"]) / "adapter" / "train_result.json"
        if not result.exists():
            return {}
        r = read_json(result)
        steps, tokens = steps + r.get("global_step", 0), tokens + r.get("num_input_tokens_seen", 0)
    return {"compute/optimizer_steps": steps, "compute/train_tokens": tokens} if stages else {}


def jobs_from_folder(root: str | Path) -> list[Job]:
    dirs = find_job_dirs(root)
    if not dirs:
        raise FileNotFoundError(
            f"no job folders (metrics.json + .hydra/config.yaml) under {root}: give a sweep "
            "folder (outputs/multiruns/<date>/<time>) or a run folder whose evaluation finished"
        )
    return [job_from_folder(d) for d in dirs]


def job_from_wandb_run(run) -> Optional[Job]:
    """A W&B run (public API Run, or anything with .config, .summary_metrics, .id) as a Job; None when it has no
    evaluation in its summary (still running, crashed before its evaluation)."""
    config = dict(run.config)
    summary = flatten(dict(getattr(run, "summary_metrics", None) or run.summary))
    metrics = {k.removeprefix("eval/"): v for k, v in summary.items() if k.startswith("eval/")}
    if not metrics:
        return None
    fields = {k: str(config[k]) for k in CONDITION_KEYS if k in config}
    path = "/".join(str(p) for p in getattr(run, "path", []) or [getattr(run, "id", "?")])
    extra = condition_overrides(config.get("overrides") or [])  # runs logged before they were recorded have none
    return Job(fields=fields, seed=config.get(SEED_KEY), metrics=metrics, source=path, extra=extra)


def jobs_from_wandb(group: str, *, entity: Optional[str], project: str, api=None) -> list[Job]:
    """The runs of one W&B group (one sweep: sgtr_em/tracking.py), through the public API (needs a login)."""
    return collect_wandb(group, entity=entity, project=project, api=api)[0]


def collect_wandb(group: str, *, entity: Optional[str], project: str, api=None) -> tuple[list[Job], list[str]]:
    """The group's runs with evaluation results as Jobs, and the others ("<run path> (<state>)": running, failed,
    crashed before its evaluation)."""
    if api is None:
        import wandb

        api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    runs: Iterable = api.runs(path, filters={"group": group})
    jobs, unfinished = [], []
    for run in runs:
        job = job_from_wandb_run(run)
        if job is not None:
            jobs.append(job)
        else:
            where = "/".join(str(p) for p in getattr(run, "path", []) or [getattr(run, "id", "?")])
            unfinished.append(f"{where} ({getattr(run, 'state', 'unknown')})")
    if not jobs:
        raise LookupError(f"W&B {path}: no run of group {group!r} has evaluation results (eval/... in its summary)")
    return jobs, unfinished
