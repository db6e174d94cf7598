"""Small statistics shared by the evaluations: seeded bootstrap intervals, normalised entropy, and `fmt` for the one
line per evaluation at the end of a run."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Hashable, Iterable, Optional, Sequence

import numpy as np


def mean_or_none(xs: Iterable[Optional[float]]) -> Optional[float]:
    """The mean of the values that are not None (None when there are none)."""
    vals = [float(x) for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def item_seed(seed: int, *key: Hashable) -> int:
    """A seed for one item's random draws, derived from the run's seed and the item's identity (e.g. article id and
    source, or prompt and chunk): the same item draws the same numbers in every run and in every subset it is scored
    in, and two items never share a stream (shared seeds make their draws correlated, so a standard error computed as
    if they were independent is understated; issue 15). blake2b, so it does not vary with PYTHONHASHSEED."""
    return int.from_bytes(hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest(), "little")


def stratified_indices(strata: Sequence[Hashable], n_boot: int, seed: int) -> dict[Hashable, np.ndarray]:
    """Bootstrap resamples within each stratum: {stratum: (n_boot, n_stratum) indices into the items}.

    Resampling within strata (e.g. within each EM question) keeps every stratum's size, as the estimator does.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for s in dict.fromkeys(strata):
        members = np.array([i for i, x in enumerate(strata) if x == s])
        out[s] = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
    return out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> Optional[dict]:
    """The percentile interval of bootstrap statistics (NaN = undefined in that resample, left out)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {"low": float(low), "high": float(high)}


def mean_ci(
    values: Sequence[float],
    *,
    n_boot: int,
    seed: int,
    strata: Optional[Sequence[Hashable]] = None,
    chunk_items: int = 1_000_000,
) -> Optional[dict]:
    """95 % bootstrap interval of the mean of `values` (resampled within `strata` when given).

    Resamples are drawn in chunks of about `chunk_items` values, so 14,000 MMLU questions x 2,000 resamples
    never sit in memory at once.
    """
    if not len(values) or n_boot <= 0:
        return None
    v = np.asarray(values, dtype=float)
    groups = list(strata) if strata is not None else [0] * len(v)
    members = [np.array([i for i, g in enumerate(groups) if g == s]) for s in dict.fromkeys(groups)]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, chunk_items // len(v))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        total = sum(v[m][rng.integers(0, len(m), size=(b, len(m)))].sum(axis=1) for m in members)
        means[start : start + b] = total / len(v)
    return percentile_interval(means)


def cluster_mean_ci(
    values: Sequence[float], clusters: Sequence[Hashable], *, n_boot: int, seed: int, chunk_items: int = 1_000_000
) -> Optional[dict]:
    """95 % bootstrap interval of the mean of `values` resampling whole `clusters` (an SR article: both orderings and
    every source of it are not independent items): each resample draws clusters with replacement and takes the mean
    of all their values. With clusters of one value each, or of equal sizes, it is `mean_ci` of the cluster means,
    draw for draw."""
    if not len(values) or n_boot <= 0:
        return None
    keys = list(dict.fromkeys(clusters))
    index = {k: i for i, k in enumerate(keys)}
    sums, counts = np.zeros(len(keys)), np.zeros(len(keys))
    for v, c in zip(values, clusters):
        sums[index[c]] += v
        counts[index[c]] += 1
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, chunk_items // len(keys))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        pick = rng.integers(0, len(keys), size=(b, len(keys)))
        means[start : start + b] = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    return percentile_interval(means)


def normalised_entropy(labels: Sequence[Hashable], n_categories: int) -> Optional[float]:
    """Shannon entropy of the label distribution divided by log(n_categories): 0 = one label, 1 = uniform."""
    if not labels:
        return None
    if n_categories <= 1:
        return 0.0
    counts = Counter(labels).values()
    n = len(labels)
    h = max(0.0, -sum(c / n * math.log(c / n) for c in counts))  # one label: 0.0, not -0.0
    return h / math.log(n_categories)


def fmt(x) -> str:
    """A metric for humans: 3 decimals, a 95 % interval as [low, high], n/a for None."""
    if x is None:
        return "n/a"
    if isinstance(x, dict) and "low" in x:
        return f"[{x['low']:.3f}, {x['high']:.3f}]"
    return f"{x:.3f}" if isinstance(x, float) else str(x)
