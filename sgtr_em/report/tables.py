"""Tables: per metric a Markdown and a CSV file (mean, 95 % interval and n seeds per condition), a summary of
the headline metrics, and every job's raw values (jobs.csv) for anyone who wants to redo the statistics."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Optional

from ..io import atomic_write_text as write_text
from .aggregate import Row
from .collect import Job
from .metrics import METRICS, Metric


def num(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def cell(row: Row) -> str:
    """mean [low, high] (n) for the summary table."""
    if row.mean is None:
        return "n/a (0)"
    ci = f" [{num(row.low)}, {num(row.high)}]" if row.low is not None else ""
    return f"{num(row.mean)}{ci} ({row.n})"


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])


def metric_rows(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one metric's table (Markdown and HTML)."""
    fields = list(rows[0].condition.columns) if rows else []
    header = [*fields, "mean", "95 % interval", "sd (the paper's bars)", "n seeds", "seeds"]
    lines = [
        [
            *r.condition.columns.values(),
            num(r.mean),
            f"[{num(r.low)}, {num(r.high)}]" if r.low is not None else "n/a",
            num(r.sd),
            str(r.n),
            ", ".join(map(str, r.seeds)),
        ]
        for r in rows
    ]
    return header, lines


def metric_markdown(metric: Metric, rows: list[Row]) -> str:
    return f"### {metric.label} (`{metric.key}`)\n\n" + markdown_table(*metric_rows(rows)) + "\n"


def metric_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    fields = list(rows[0].condition.columns) if rows else []
    w.writerow([*fields, "mean", "ci95_low", "ci95_high", "sd", "n_seeds", "seeds", "values"])
    for r in rows:
        w.writerow(
            [
                *r.condition.columns.values(),
                *("" if x is None else repr(x) for x in (r.mean, r.low, r.high, r.sd)),
                r.n,
                ";".join(map(str, r.seeds)),
                ";".join(repr(v) for v in r.values),
            ]
        )
    return buf.getvalue()


def summary_rows(table: dict[str, list[Row]]) -> tuple[list[str], list[list[str]]]:
    """Conditions x headline metrics: mean [interval] (n seeds)."""
    heads = [m for m in METRICS if m.headline and m.key in table]
    first = table[heads[0].key] if heads else []
    fields = list(first[0].condition.columns) if first else []
    lines = [[*first[i].condition.columns.values(), *(cell(table[m.key][i]) for m in heads)] for i in range(len(first))]
    return [*fields, *(m.label for m in heads)], lines


def jobs_csv(jobs: list[Job], fields: list[str], out: Path) -> str:
    """One row per job; a job folder is given relative to the report folder, so the report can be moved with it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*fields, "seed", "source", *(m.key for m in METRICS)])
    for j in jobs:
        values = {**j.fields, **j.extra}
        source = os.path.relpath(j.source, out) if Path(j.source).is_dir() else j.source
        w.writerow(
            [
                *(values.get(f, "") for f in fields),
                j.seed,
                source,
                *("" if j.metrics.get(m.key) is None else j.metrics[m.key] for m in METRICS),
            ]
        )
    return buf.getvalue()


def write_tables(out: Path, table: dict[str, list[Row]], jobs: list[Job], fields: list[str]) -> list[Path]:
    """tables/<metric>.md and .csv for every metric some job has, and jobs.csv; returns the files written."""
    written = []
    for m in METRICS:
        if m.key in table:
            for suffix, text in ((".md", metric_markdown(m, table[m.key])), (".csv", metric_csv(table[m.key]))):
                path = out / "tables" / f"{m.slug}{suffix}"
                write_text(path, text)
                written.append(path)
    write_text(out / "jobs.csv", jobs_csv(jobs, fields, out))
    return written + [out / "jobs.csv"]
