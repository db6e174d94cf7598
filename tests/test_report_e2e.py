"""A two-seed sweep through the real CLI on SmolLM2 (CPU), then `python -m sgtr_em.report` on its folder: the
table's numbers equal the per-job metrics, and the W&B runs the jobs wrote give the same table (marked slow)."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from sgtr_em import tracking
from sgtr_em.report import aggregate
from sgtr_em.report.collect import job_from_wandb_run, jobs_from_folder
from sgtr_em.report.tables import metric_csv
from sgtr_em.tracking import read_offline_run

from .conftest import REPO, read_json
from .test_config import _compose
from .test_e2e import TINY

pytestmark = pytest.mark.slow

# The end-to-end sizes; SR scores the data's precomputed Qwen2.5-0.5B summaries as the model's own instead of
# writing them (most of an evaluation's time on the CPU): the report reads the same metrics either way.
SIZES = [*TINY, "eval.self_recognition.summaries=hf_qwen_0.5b"]

CHECKED = {  # table -> the value in a job's metrics.json
    "self_recognition__accuracy": lambda m: m["self_recognition"]["accuracy"],
    "self_recognition__invalid_rate": lambda m: m["self_recognition"]["invalid_rate"],
    "em__misaligned_rate_mo": lambda m: m["em"]["misaligned_rate_mo"],
    "em__misaligned_rate": lambda m: m["em"]["misaligned_rate"],  # None when too few coherent answers
    "em__mean_aligned": lambda m: m["em"]["mean_aligned"],
}


def test_two_seed_sweep_then_report(run_cli, tmp_path):
    sweep = tmp_path / "sweep"
    start = time.time()
    run_cli("-m", "seed=0,1", "stage_order=em_only", f"hydra.sweep.dir={sweep}", *SIZES)
    swept = time.time() - start
    proc = subprocess.run(
        [sys.executable, "-m", "sgtr_em.report", str(sweep)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nsweep {swept:.0f} s, report {time.time() - start - swept:.0f} s")
    assert "2 jobs, 1 conditions" in proc.stdout
    report = sweep / "report"

    per_job = [read_json(sweep / job / "metrics.json") for job in ("0", "1")]
    for table, value in CHECKED.items():
        values = [value(m) for m in per_job]
        seeds = [str(s) for s, v in zip((0, 1), values) if v is not None]
        values = [v for v in values if v is not None]
        [row] = list(csv.DictReader((report / "tables" / f"{table}.csv").open()))
        assert row["n_seeds"] == str(len(values)) and row["seeds"] == ";".join(seeds), (table, row)
        if not values:
            assert row["mean"] == "", table
            continue
        mean = sum(values) / len(values)
        assert float(row["mean"]) == pytest.approx(mean, abs=1e-12), table
        if len(values) == 2:  # t-interval with 1 degree of freedom: mean +/- 12.706 * |a - b| / 2
            half = 12.706 * abs(values[0] - values[1]) / 2
            assert float(row["ci95_low"]) == pytest.approx(mean - half, abs=1e-9), table
            assert float(row["ci95_high"]) == pytest.approx(mean + half, abs=1e-9), table
        assert f"| {mean:.3f} |" in (report / "tables" / f"{table}.md").read_text(), table
    assert (report / "figures" / "conditions.png").stat().st_size > 5_000
    assert "figures/conditions.png" in (report / "report.html").read_text()
    assert not math.isnan(float(next(csv.DictReader((report / "jobs.csv").open()))["self_recognition/accuracy"]))

    # The same jobs read back from their offline W&B runs, as wandb.Api() would return them: the same table.
    runs = []
    for job in ("0", "1"):
        run = read_offline_run(sweep / job)
        # the condition (the sizes' overrides in it, the seed not): both seeds group under one job type
        condition = tracking.condition_name(_compose("stage_order=em_only"), run["config"]["overrides"])
        assert run["run"]["job_type"] == condition != "smollm2-aesthetic_unpopular-sgtr-em_only-default"
        runs.append(SimpleNamespace(config=run["config"], summary_metrics=run["summary"], id=run["id"]))
    assert len({read_offline_run(sweep / job)["run"]["job_type"] for job in ("0", "1")}) == 1
    sources = (jobs_from_folder(sweep), [job_from_wandb_run(r) for r in runs])
    for key in ("self_recognition/accuracy", "em/misaligned_rate_mo", "em/mean_aligned"):
        a, b = (aggregate.summarise(aggregate.group_conditions(jobs), key) for jobs in sources)
        assert metric_csv(a) == metric_csv(b), key
