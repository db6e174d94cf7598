"""Hand-made job folders laid out like a sweep's (metrics.json + .hydra/config.yaml + overrides.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

GROUPS = {
    "model": "smollm2",
    "em_dataset": "aesthetic_unpopular",
    "intervention": "sgtr",
    "stage_order": "em_only",
    "system_prompt": "default",
}


def make_job(root: Path, num: int, *, seed: int, metrics: dict, overrides: tuple[str, ...] = (), **groups) -> Path:
    d = Path(root) / str(num)
    choice = {**GROUPS, **groups}
    (d / ".hydra").mkdir(parents=True)
    cfg = {k: {"name": v, "other": "${paths.output_dir}"} for k, v in choice.items()} | {"seed": seed}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"{k}={v}" for k, v in groups.items()] + [f"seed={seed}", *overrides])
    )
    (d / "metrics.json").write_text(json.dumps({"model": {"path": "x"}, **metrics}))
    return d


def em_sr(misaligned_mo: float, sr: float, misaligned=None) -> dict:
    return {
        "em": {"misaligned_rate": misaligned, "misaligned_rate_mo": misaligned_mo, "per_question": {"q": {"n": 1}}},
        "self_recognition": {"headline": sr, "accuracy": sr, "per_source": {"human": {"accuracy": sr}}},
    }


def paper_like_sweep(root: Path) -> Path:
    """base, EM only, SGTR reversal and prevention, each with system prompts default/nosys, 3 seeds."""
    n = 0
    for stage_order in ("base", "em_only", "reversal", "prevention"):
        for sp in ("default", "nosys"):
            for seed in range(3):
                base = {"base": 0.0, "em_only": 0.3, "reversal": 0.1, "prevention": 0.15}[stage_order]
                make_job(
                    root,
                    n,
                    seed=seed,
                    stage_order=stage_order,
                    system_prompt=sp,
                    metrics=em_sr(base + 0.01 * seed + (0.05 if sp == "nosys" else 0), 0.5 + 0.1 * seed),
                )
                n += 1
    return root
