"""Stage worker, step 1: build a stage's training set into `<stage_dir>/train.jsonl`.

    python -m sgtr_em.data.build <stage_dir>

Reads `<stage_dir>/stage.json` (written by the parent) and calls the builder of the stage's data kind
(data/interventions.py); for summary kinds, a model may first write its summaries (cached per model).
Examples are shuffled (seeded, whole groups together); those longer than `training.max_length` tokens are
dropped and counted: truncation would cut off an SGTR label (an API model: its per-example limit, on an estimate). With `num_examples` set (matched compute),
exactly that many are kept: the first ones, or repeated passes when fewer were built.
"""

from __future__ import annotations

import json
import logging
import random
import sys
from pathlib import Path
from typing import Callable, Optional

from ..contracts import read_stage
from ..io import write_json, write_jsonl
from ..workers import worker_logging
from .backends import worker_backend
from .defences import apply_data_defence
from .files import DataFiles
from .interventions import build_stage_rows

log = logging.getLogger("sgtr_em.data.build")


def select_examples(
    rows: list[dict], n: Optional[int], seed: int, fits: Callable[[dict], bool]
) -> tuple[list[dict], dict]:
    """The rows that fit, in a seeded order of whole groups (`meta.group`, e.g. both orderings of one pair).

    With `n` (matched compute), exactly n of them: the first n, or repeated passes when fewer fit. Only the
    rows needed are measured, so capping a large file costs little.
    """
    groups: dict = {}
    for r in rows:
        groups.setdefault(r["meta"]["group"], []).append(r)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    kept, dropped = [], 0
    for r in (r for g in order for r in g):
        if n is not None and len(kept) == n:
            break
        if fits(r):
            kept.append(r)
        else:
            dropped += 1
    stats = {"dropped_too_long": dropped}
    if n is not None:
        stats.update(num_examples=n, distinct=len(kept), repeats=max(0, n - len(kept)))
        kept = [kept[i % len(kept)] for i in range(n)] if kept else []
    return kept, stats


def main(stage_dir: Path) -> None:
    spec, rt = read_stage(stage_dir)
    files = DataFiles(Path(rt.data_dir), Path(rt.cache_dir) / "data", download=False)
    rows, stats = build_stage_rows(spec, rt, files)
    length = worker_backend(rt).example_length(rt)  # as training renders it (an API model: an estimate)
    max_length = spec.training["max_length"]
    rows, selection = select_examples(
        rows, spec.data.get("num_examples"), spec.seed, fits=lambda r: length(r) <= max_length
    )
    stats.update(selection)
    rows, defence_stats = apply_data_defence(spec, rt, rows, stage_dir, files)  # interleave, inoculation (EM stage)
    stats.update(defence_stats)
    if not rows:
        raise SystemExit(f"stage {stage_dir.name}: no training examples left ({json.dumps(stats)})")
    stats["train_examples"] = len(rows)
    stats["label_counts"] = label_counts(rows)
    shown = {k: v for k, v in stats.items() if k != "label_counts"}
    if all(len(answer) <= 20 for answer in stats["label_counts"]):  # labels ("1", "2", "even"): their balance
        shown["label_counts"] = stats["label_counts"]
    else:  # free-text answers (a chat file): no dump of them (data_stats.json keeps the commonest)
        shown["distinct_answers"] = len({r["completion"][0]["content"] for r in rows})
    log.info("stage %s (%s): %s", stage_dir.name, spec.data["name"], json.dumps(shown))
    write_json(stage_dir / "data_stats.json", stats)
    write_jsonl(stage_dir / "train.jsonl", rows)  # written last: its presence means the data step is done


def label_counts(rows: list[dict], most: int = 10) -> dict:
    """How often each answer occurs (the `most` commonest): label balance at a glance."""
    counts: dict[str, int] = {}
    for r in rows:
        answer = r["completion"][0]["content"]
        counts[answer] = counts.get(answer, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:most])


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
