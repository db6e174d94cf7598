"""Entry point: compose a job with Hydra and run it (stages -> merge -> evaluation -> W&B).

python -m sgtr_em.train                                  # CPU smoke default: SmolLM2, EM -> SGTR
python -m sgtr_em.train -m stage_order=em_only,reversal  # a sweep; shared stages train once
python -m sgtr_em.train --cfg job --resolve              # print the resolved config
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .preflight import argv_problems, redact

if __name__ == "__main__":  # before the heavy imports below: a refused command line costs nothing
    if problems := argv_problems(sys.argv[1:]):
        sys.exit("sgtr-em: refused, nothing was run or written:\n  - " + "\n  - ".join(problems))

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .config import override_problems, register_configs, validate
from .evaluation.registry import effect_lines, summary_lines as eval_lines
from .io import read_json
from .job import run_job

log = logging.getLogger("sgtr_em")
register_configs()


def summary_lines(run_dir: Path, metrics: dict, cfg=None) -> str:
    """The final console summary: one line per evaluation (`cfg`: its plugins' too), then the effect of each one
    also run on the base model."""
    base = run_dir / "base" / "metrics.json"  # eval.base: the base model's evaluation point
    effects = effect_lines(read_json(base), metrics) if base.exists() else []
    lines = eval_lines(metrics, cfg) + effects
    return "\n".join([f"\nsgtr-em: results in {run_dir}", *(f"  {line}" for line in lines)])


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        validate(cfg)
        group = Path(hc.sweep.dir).name if hc.mode.name == "MULTIRUN" else run_dir.name
        metrics = run_job(cfg, run_dir, group=f"{cfg.model.name}-{group}")
    except Exception as e:  # the error reaches the run's own log (<run_dir>/train.log), not only the terminal
        log.error("The job failed: %s", redact(f"{type(e).__name__}: {e}"))
        raise
    if metrics is None:  # a node other than node 0 of a multi-node job: it only joined the trainings
        return None
    log.info("Results: %s (metrics.json, summary.txt, eval/*/samples.jsonl, stages.json)", run_dir)
    summary = summary_lines(run_dir, metrics, cfg)
    (run_dir / "summary.txt").write_text(summary.lstrip("\n") + "\n")  # the console's closing lines, kept with the run
    print(summary)
    sr = metrics.get("self_recognition", {}).get("accuracy")
    return sr  # what a Hydra sweeper optimises, if one is used


def multirun_cfg_argv(argv: list[str]) -> list[str]:
    """Hydra 1.3 refuses `-m` together with `--cfg`: read it as `--cfg ... hydra.mode=MULTIRUN`, which prints the
    sweep's config (its launcher: the Slurm request) without running anything."""
    shows_cfg = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
    if shows_cfg and ("-m" in argv or "--multirun" in argv):
        return [argv[0], "hydra.mode=MULTIRUN", *(a for a in argv[1:] if a not in ("-m", "--multirun"))]
    return argv


if __name__ == "__main__":
    if problems := override_problems(sys.argv[1:]):  # before Hydra, whose hint for them (`+key=...`) fails too
        sys.exit("sgtr-em: refused, nothing was run or written:\n  - " + "\n  - ".join(problems))
    sys.argv = multirun_cfg_argv(sys.argv)
    main()
