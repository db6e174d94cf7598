"""The report over hand-made job folders: conditions, means and intervals over seeds, tables, figures, the W&B
path (run-like objects), the CLI, and the dashboard definition (offline)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from sgtr_em.report import aggregate
from sgtr_em.report.__main__ import main
from sgtr_em.report.build import write_report
from sgtr_em.report.collect import (
    collect_wandb,
    job_from_wandb_run,
    jobs_from_folder,
    jobs_from_wandb,
    unfinished_job_dirs,
)
from sgtr_em.report.tables import metric_csv
from sgtr_em.tracking import GROUP_KEYS, flatten

from .report_fixtures import em_sr, make_job, paper_like_sweep


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_jobs_group_by_what_varies_and_average_over_seeds(tmp_path):
    for seed, (mo, sr) in enumerate([(0.1, 0.5), (0.2, 0.6), (0.3, 1.0)]):
        make_job(tmp_path, seed, seed=seed, stage_order="em_only", metrics=em_sr(mo, sr))
        make_job(tmp_path, 10 + seed, seed=seed, stage_order="reversal", metrics=em_sr(mo / 2, sr))
    (tmp_path / "0" / "after_stage" / "1_em").mkdir(parents=True)  # an evaluation point, not a job
    (tmp_path / "0" / "after_stage" / "1_em" / "metrics.json").write_text("{}")
    jobs = jobs_from_folder(tmp_path)
    assert len(jobs) == 6 and aggregate.varying_fields(jobs) == ["stage_order"]
    out = write_report(jobs, tmp_path / "report", source="hand-made")
    rows = read_csv(tmp_path / "report" / "tables" / "em__misaligned_rate_mo.csv")
    assert [r["stage_order"] for r in rows] == ["em_only", "reversal"]
    half = 4.303 * 0.1 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n): values 0.1, 0.2, 0.3 have sd 0.1
    assert float(rows[0]["mean"]) == pytest.approx(0.2)
    assert float(rows[0]["ci95_low"]) == pytest.approx(0.2 - half)
    assert float(rows[0]["ci95_high"]) == pytest.approx(0.2 + half)
    assert rows[0]["n_seeds"] == "3" and rows[0]["seeds"] == "0;1;2"
    assert float(rows[0]["sd"]) == pytest.approx(0.1)  # the paper's error bar: mean +/- the sample sd over seeds
    assert float(rows[1]["mean"]) == pytest.approx(0.1)
    md = (tmp_path / "report" / "tables" / "self_recognition__accuracy.md").read_text()
    assert "| em_only | 0.700 | [" in md and "| 3 | 0, 1, 2 |" in md
    assert set(out["figures"]) == {"Per condition"}  # one stage order besides em_only: no side-by-side figure
    assert (tmp_path / "report" / "figures" / "conditions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report" / "report.md").read_text()
    assert "n/a (0)" in report  # Betley's rate undefined in every job
    assert (
        "not in the figures (no job has a value)" in report and "Misaligned rate (the protocol's)" in report
    )  # said so
    assert "3 (seeds 0, 1, 2)" in report
    assert [r["source"] for r in read_csv(tmp_path / "report" / "jobs.csv")][:2] == ["../0", "../1"]


def test_an_undefined_value_leaves_its_seed_out_and_one_seed_has_no_interval(tmp_path):
    make_job(tmp_path, 0, seed=0, metrics=em_sr(0.1, 0.5, misaligned=0.4))
    make_job(tmp_path, 1, seed=1, metrics=em_sr(0.2, 0.5, misaligned=None))
    [row] = aggregate.summarise(aggregate.group_conditions(jobs_from_folder(tmp_path)), "em/misaligned_rate")
    assert (row.seeds, row.values, row.mean, row.low, row.high) == ([0], [0.4], 0.4, None, None)
    assert row.condition.label == "all jobs" and row.condition.columns == {"condition": "all jobs"}


def test_other_overrides_that_vary_are_condition_fields(tmp_path):
    for i, lr in enumerate(["1e-4", "1e-4", "2e-4"]):
        # how a job ran (micro-batch, data folder) is no condition: seed 0 and 1 of 1e-4 pool although they differ
        make_job(
            tmp_path,
            i,
            seed=i % 2,
            metrics=em_sr(0.1, 0.5),
            overrides=(
                f"training.learning_rate={lr}",
                "eval.em.max_new_tokens=12",
                f"compute.micro_batch_size={2**i}",
                f"paths.data_dir=/data{i}",
                "tracking=none",
            ),
        )
    conditions = aggregate.group_conditions(jobs_from_folder(tmp_path))
    assert [c.fields for c in conditions] == [{"training.learning_rate": "1e-4"}, {"training.learning_rate": "2e-4"}]
    # the same from W&B (the run's config records its overrides): two learning rates were pooled as one condition
    runs = [run_like(em_sr(0.1, 0.5), i % 2, overrides=[f"training.learning_rate={lr}"]) for i, lr in enumerate("112")]
    wandb_conditions = aggregate.group_conditions([job_from_wandb_run(r) for r in runs])
    assert [c.fields for c in wandb_conditions] == [{"training.learning_rate": "1"}, {"training.learning_rate": "2"}]


def test_bootstrap_interval_lies_within_the_seeds(tmp_path):
    low, high = aggregate.interval([0.1, 0.2, 0.6], "bootstrap")
    assert 0.1 <= low < 0.3 < high <= 0.6
    assert aggregate.t975(200) == 1.980 and aggregate.t975(4) == 2.776


def test_paper_like_sweep_draws_every_figure(tmp_path):
    out = write_report(jobs_from_folder(paper_like_sweep(tmp_path / "sweep")), tmp_path / "r", source="s")
    assert set(out["figures"]) == {"Per condition", "Reversal vs prevention", "System-prompt ablation"}
    for path in out["figures"].values():
        assert path.stat().st_size > 10_000
    rows = read_csv(tmp_path / "r" / "tables" / "em__misaligned_rate_mo.csv")
    assert [(r["stage_order"], r["system_prompt"]) for r in rows][:3] == [
        ("base", "default"),
        ("base", "nosys"),
        ("em_only", "default"),
    ]
    assert float(rows[1]["mean"]) == pytest.approx(0.06)
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.count("<img class='figure'") == 3 and "figures/reversal_vs_prevention.png" in html


def run_like(job_metrics: dict, seed: int, overrides=(), **groups) -> SimpleNamespace:
    """What wandb.Api().runs() yields, as far as the report reads it: config (group choices at the top) and the
    summary (metrics flattened under eval/, plus other keys the run logged)."""
    summary = {
        **flatten({k: v for k, v in job_metrics.items() if k != "model"}, "eval"),
        "train/1_em/hash": "abc",
        "eval/em/samples": {"_type": "table-file", "path": "x.json"},
    }
    config = {
        k: groups.get(k, v)
        for k, v in {
            "model": "smollm2",
            "em_dataset": "aesthetic_unpopular",
            "intervention": "sgtr",
            "stage_order": "em_only",
            "system_prompt": "default",
        }.items()
    } | {"seed": seed, "cfg": {"x": 1}, "overrides": list(overrides)}
    return SimpleNamespace(config=config, summary_metrics=summary, path=["e", "p", f"run{seed}"], id=f"run{seed}")


def test_a_wandb_run_maps_back_to_the_jobs_metrics():
    metrics = em_sr(0.25, 0.75, misaligned=0.5)
    job = job_from_wandb_run(run_like(metrics, 3, stage_order="reversal"))
    assert (
        job.fields
        == {
            "model": "smollm2",
            "em_dataset": "aesthetic_unpopular",
            "intervention": "sgtr",
            "stage_order": "reversal",
            "system_prompt": "default",
        }
        and job.seed == 3
    )
    assert job.metrics["em/misaligned_rate_mo"] == 0.25 and job.metrics["self_recognition/accuracy"] == 0.75
    assert job.metrics["self_recognition/per_source/human/accuracy"] == 0.75 and job.source == "e/p/run3"
    assert job_from_wandb_run(SimpleNamespace(config={"seed": 0}, summary_metrics={"train/1_em/loss": 1.0})) is None


def test_a_report_names_the_jobs_without_results(tmp_path, capsys):
    """A sweep with a failed job (its folder has `.hydra/` and `train.log`, no metrics.json) is not averaged over
    fewer seeds without a word: the report and the console name it, from folders and from W&B alike."""
    for seed in (0, 1, 2):
        make_job(tmp_path, seed, seed=seed, metrics=em_sr(0.1 * seed, 0.5))
    (tmp_path / "1" / "metrics.json").unlink()  # failed
    (tmp_path / "0" / "base" / "eval").mkdir(parents=True)  # the base model's point: not a job
    assert unfinished_job_dirs(tmp_path) == [str(tmp_path / "1")]
    assert main([str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "2 jobs, 1 conditions" in out and "1 more jobs have no results" in err and str(tmp_path / "1") in err
    report = (tmp_path / "report" / "report.md").read_text()
    assert (
        f"- warning: 1 of 3 jobs have no results (failed or still running), not in any number below: {tmp_path / '1'}"
        in report
    )
    assert "2 (seeds 0, 2)" in report

    def runs(path, filters):
        done = run_like(em_sr(0.1, 0.5), 0)
        return [
            done,
            SimpleNamespace(config={"seed": 1}, summary_metrics={}, summary={}, path=["e", "p", "r1"], state="crashed"),
        ]

    jobs, unfinished = collect_wandb("g", entity="e", project="p", api=SimpleNamespace(runs=runs))
    assert len(jobs) == 1 and unfinished == ["e/p/r1 (crashed)"]
    write_report(jobs, tmp_path / "online", source="g", unfinished=unfinished)
    assert "warning: 1 of 2 jobs have no results" in (tmp_path / "online" / "report.md").read_text()


def test_the_wandb_path_gives_the_same_tables_as_the_folders(tmp_path):
    sweep = paper_like_sweep(tmp_path / "sweep")
    folder_jobs = jobs_from_folder(sweep)
    runs = [
        run_like(json.loads((Path(j.source) / "metrics.json").read_text()), j.seed, **j.fields) for j in folder_jobs
    ]
    asked = {}

    class Api:
        def runs(self, path, filters):
            asked.update(path=path, filters=filters)
            return runs

    api_jobs = jobs_from_wandb("smollm2-16-33-00", entity="e", project="p", api=Api())
    assert asked == {"path": "e/p", "filters": {"group": "smollm2-16-33-00"}}
    for key in ("em/misaligned_rate_mo", "self_recognition/accuracy", "em/misaligned_rate"):
        a, b = (aggregate.summarise(aggregate.group_conditions(jobs), key) for jobs in (folder_jobs, api_jobs))
        assert metric_csv(a) == metric_csv(b) and len(a) == 8


def test_cli_writes_the_report_beside_the_sweep(tmp_path, capsys):
    for seed in (0, 1):
        make_job(tmp_path, seed, seed=seed, metrics=em_sr(0.1 * seed, 0.5))
    assert main([str(tmp_path), "--interval", "bootstrap"]) == 0
    printed = capsys.readouterr().out
    assert "2 jobs, 1 conditions" in printed
    n_metrics = len(list((tmp_path / "report" / "tables").glob("*.md")))
    assert f" {n_metrics} metric tables (tables/*.md, *.csv)" in printed  # metrics, not files
    assert "bootstrap percentile interval over seeds" in (tmp_path / "report" / "report.md").read_text()
    make_job(tmp_path, 2, seed=1, metrics=em_sr(0.3, 0.5))  # the same condition and seed twice: said so
    write_report(jobs_from_folder(tmp_path), tmp_path / "again", source="x")
    assert "a seed repeated within a condition: all jobs seed 1" in (tmp_path / "again" / "report.md").read_text()
    with pytest.raises(FileNotFoundError, match="no job folders"):
        jobs_from_folder(tmp_path / "report")
    with pytest.raises(SystemExit):  # a mistyped folder is not taken for a W&B group
        main([str(tmp_path / "no_such_sweep")])
    assert "no such folder" in capsys.readouterr().err


def test_dashboard_definition_names_every_panel_and_grouping(capsys):
    from sgtr_em.report.dashboard import BAR_METRICS, PER_STAGE_METRICS, STAGES, definition, workspace

    w = workspace("team", "sgtr-em", group="smollm2-16-33-00")
    spec = definition(w)
    assert spec["entity"] == "team" and spec["project"] == "sgtr-em"
    sections = {s["name"]: s["panels"] for s in spec["spec"]["section"]["panelBankConfig"]["sections"]}
    panels = {p["config"]["chartTitle"]: p["config"]["metrics"] for ps in sections.values() for p in ps}
    titles = {t.lower() for t in panels}
    for needle in (
        "misaligned rate (the protocol's)",
        "misaligned rate (model organisms)",
        "self-recognition (the protocol's)",
        "truthfulqa 1 - accuracy (the protocol's)",
        "identity diversity (normalised entropy)",
    ):
        assert needle in titles
    metrics = {m for ms in panels.values() for m in ms}
    assert {f"eval/{k}" for k in (*BAR_METRICS, *PER_STAGE_METRICS)} <= metrics
    assert {f"train/{i}_{kind}/loss" for i, kind in STAGES} <= metrics
    assert sorted(sections) == sorted(
        ["Results by condition (mean +/- s.e. over seeds)", "Training loss per stage", "Evaluations after each stage"]
    )
    [runset] = spec["spec"]["section"]["runSets"]
    # W&B groups by the config groups, the defence (its config holds `defence` since sgtr_em/tracking.py records it)
    # and the overrides that change what a job computes (two learning rates are two conditions)
    assert runset["grouping"] == [
        {"section": "config", "name": f"{k}.value"} for k in (*GROUP_KEYS, "defence", "condition_overrides")
    ]
    assert runset["filters"]["filters"] == [
        {"key": {"section": "run", "name": "group"}, "op": "=", "value": "smollm2-16-33-00", "disabled": False}
    ]
    assert main(["--dashboard", "--print"]) == 0 and '"chartTitle"' in capsys.readouterr().out
