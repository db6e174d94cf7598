"""Jobs grouped into conditions (the config choices that vary across the sweep, seed excluded), and each metric's
mean over seeds with a 95 % interval.

Intervals are over seeds, not over items: the seed is the unit that is replicated (each seed trains its own
adapters). `t`: mean +/- t(0.975, n-1) * sd / sqrt(n), the default, honest with 3-5 seeds. `bootstrap`: the
percentile interval of the mean over seeds resampled with replacement (evaluation/stats.py), which is too
narrow with few seeds. One seed gives no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from ..evaluation.stats import mean_ci
from ..tracking import CONDITION_KEYS
from .collect import Job

INTERVALS = {"t": "95 % t-interval over seeds", "bootstrap": "95 % bootstrap percentile interval over seeds"}
BOOTSTRAP_SAMPLES = 10_000

# Two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy dependency); a larger df uses the
# nearest tabulated df below it, which errs wide.
T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t975(df: int) -> float:
    return T975[max(k for k in T975 if k <= df)]


@dataclass
class Condition:
    fields: dict[str, str]  # only the fields that vary across the sweep
    jobs: list[Job]

    @property
    def label(self) -> str:
        return " / ".join(self.fields.values()) or "all jobs"

    @property
    def columns(self) -> dict[str, str]:
        """Its table columns: the varying fields, or one `condition` column when nothing varies."""
        return self.fields or {"condition": self.label}


@dataclass
class Row:
    condition: Condition
    seeds: list[Any]  # of the jobs with a value for this metric
    values: list[float]
    mean: Optional[float]
    low: Optional[float]
    high: Optional[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def sd(self) -> Optional[float]:
        """The sample standard deviation over seeds (n - 1): the paper's error bars are mean +/- this (its
        scripts/eval/plot_*_results.py, pandas .std())."""
        if self.n < 2:
            return None
        m = sum(self.values) / self.n
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


def _all_fields(job: Job) -> dict[str, str]:
    return {**job.fields, **job.extra}


def varying_fields(jobs: list[Job]) -> list[str]:
    """Config groups (CONDITION_KEYS order), then other overrides, whose value differs between jobs."""
    keys = list(CONDITION_KEYS) + [k for j in jobs for k in j.extra if k not in CONDITION_KEYS]
    keys = list(dict.fromkeys(keys))
    return [k for k in keys if len({_all_fields(j).get(k, "") for j in jobs}) > 1]


def group_conditions(jobs: list[Job]) -> list[Condition]:
    """One condition per distinct value of the varying fields, in the order the sweep first ran them."""
    keys = varying_fields(jobs)
    groups: dict[tuple, Condition] = {}
    for job in jobs:
        fields = {k: _all_fields(job).get(k, "") for k in keys}
        groups.setdefault(tuple(fields.values()), Condition(fields, [])).jobs.append(job)
    return list(groups.values())


def number(x) -> Optional[float]:
    """A metric value as a float; None for missing, non-numeric, boolean or NaN values."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def interval(values: list[float], method: str = "t") -> tuple[Optional[float], Optional[float]]:
    if len(values) < 2:
        return None, None
    if method == "bootstrap":
        ci = mean_ci(values, n_boot=BOOTSTRAP_SAMPLES, seed=0)
        return ci["low"], ci["high"]
    if method != "t":
        raise ValueError(f"interval {method!r}: choose one of {sorted(INTERVALS)}")
    n, m = len(values), sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return m - half, m + half


def summarise(conditions: list[Condition], key: str, method: str = "t") -> list[Row]:
    """One row per condition for metric `key`: the seeds that have a value, their mean and interval."""
    rows = []
    for c in conditions:
        pairs = [(j.seed, number(j.metrics.get(key))) for j in c.jobs]
        pairs = [(s, v) for s, v in pairs if v is not None]
        values = [v for _, v in pairs]
        low, high = interval(values, method)
        rows.append(Row(c, [s for s, _ in pairs], values, sum(values) / len(values) if values else None, low, high))
    return rows
