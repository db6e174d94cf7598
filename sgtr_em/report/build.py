"""A report from jobs: group into conditions, summarise every pinned metric, write tables, figures and pages.

out/report.md  report.html  jobs.csv  tables/<metric>.{md,csv}  figures/*.png
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..io import atomic_write_text
from .aggregate import INTERVALS, group_conditions, summarise, varying_fields
from .collect import Job
from .defences import write_defences
from .figures import figure_keys, write_figures
from .metrics import BY_KEY, FIGURE_METRICS, METRICS
from .page import render_html, render_markdown
from .tables import write_tables


def seed_order(seed) -> tuple:
    return (0, seed) if isinstance(seed, int) else (1, str(seed))


def seeds_fact(jobs: list[Job]) -> str:
    """How many seeds and which: "1 (seed 0)", "3 (seeds 0, 1, 2)" (a bare "0" read as no seeds at all)."""
    seeds = sorted({j.seed for j in jobs}, key=seed_order)
    return f"{len(seeds)} (seed{'s' if len(seeds) != 1 else ''} {', '.join(map(str, seeds))})"


def write_report(
    jobs: list[Job], out: str | Path, *, source: str, interval: str = "t", unfinished: list[str] = ()
) -> dict:
    """Writes the report of `jobs` under `out`; returns the files written ('markdown', 'html', 'tables', 'figures')
    and what they show ('table': {metric key: rows}, 'conditions'). `unfinished`: the source's jobs without results
    (failed or still running), named at the top of the report."""
    out = Path(out)
    fields = varying_fields(jobs)
    conditions = group_conditions(jobs)
    present = {k for j in jobs for k in j.metrics}
    table = {m.key: summarise(conditions, m.key, interval) for m in METRICS if m.key in present}
    repeated = [f"{c.label} seed {s}" for c in conditions for s, n in Counter(j.seed for j in c.jobs).items() if n > 1]
    meta = {
        "source": source,
        "facts": {
            **(
                {
                    f"warning: {len(unfinished)} of {len(jobs) + len(unfinished)} jobs have no results (failed or "
                    "still running), not in any number below": "; ".join(unfinished)
                }
                if unfinished
                else {}
            ),
            "jobs": len(jobs),
            "conditions": len(conditions),
            "condition fields (vary across the jobs)": ", ".join(fields) or "none (one condition)",
            "seeds": seeds_fact(jobs),
            "interval": INTERVALS[interval] + " (none with fewer than 2 seeds)",
            "missing values": "a job whose metric is undefined (e.g. too few coherent answers) is left out of that "
            "metric's seeds: see n seeds",
            **({"warning: a seed repeated within a condition": "; ".join(repeated)} if repeated else {}),
            **(
                {"not in the figures (no job has a value)": ", ".join(BY_KEY[k].label for k in left_out)}
                if (left_out := [k for k in FIGURE_METRICS if k not in figure_keys(table)])
                else {}
            ),
        },
    }
    tables = write_tables(out, table, jobs, fields)
    figures = write_figures(out, table, fields)
    defences = write_defences(out, table, fields)  # sweep=defences: defences.md and its figure
    if "figure" in defences:
        figures["Defences vs SGTR prevention"] = defences["figure"]
    atomic_write_text(out / "report.md", render_markdown(meta, table, figures, out))
    atomic_write_text(out / "report.html", render_html(meta, table, figures, out))
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "tables": tables + list(defences.values())[:1],
        "figures": figures,
        "table": table,
        "conditions": conditions,
    }
