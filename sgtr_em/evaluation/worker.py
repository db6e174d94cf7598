"""Eval worker: run the evaluations `eval.run` names on one model; write per-sample JSONL and metrics.json.

    python -m sgtr_em.evaluation.worker <point_dir>

Reads `<point_dir>/eval_input.json` (written by the parent: the resolved config, the model to evaluate, the
base model, the judge model). Writes `<point_dir>/eval/<name>/{samples.jsonl,metrics.json}` and
`<point_dir>/metrics.json`. First every evaluation runs the model under test, then the judge scores the
answers that need it: the two models are loaded one after the other, never both at once. Each metrics.json
has a `run` section (not a metric): wall times, generation and judge calls, tokens and cost.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..contracts import EvalInput
from ..io import write_json, write_jsonl
from ..workers import worker_logging
from .context import EvalContext
from .judge import make_judge
from .registry import eval_module

log = logging.getLogger("sgtr_em.evaluation.worker")


def write_eval(point_dir: Path, name: str, records: list, metrics: dict) -> None:
    write_jsonl(point_dir / "eval" / name / "samples.jsonl", records)
    write_json(point_dir / "eval" / name / "metrics.json", metrics)


def main(point_dir: Path) -> None:
    inp = EvalInput.read(point_dir)
    ctx = EvalContext.from_input(inp.to_json())
    cfg, names = ctx.cfg, list(ctx.cfg["eval"]["run"])
    evals = {name: eval_module(name, cfg) for name in names}
    records, runs = {}, {name: {"wall_s": {}} for name in names}
    for name in names:  # the model under test
        start, before = time.time(), ctx.generation_usage.copy()
        records[name] = evals[name].generate(ctx)
        runs[name]["wall_s"]["generate"] = round(time.time() - start, 2)
        runs[name]["generation_usage"] = ctx.generation_usage.minus(before).as_dict()
        write_jsonl(point_dir / "eval" / name / "samples.jsonl", records[name])  # kept if judging fails
    judged = [name for name in names if evals[name].NEEDS_JUDGE]
    if judged:
        judge = make_judge(
            cfg["judge"], model_path=inp.judge_model_path, load_generator=ctx.hf_generator, cache_dir=ctx.cache_dir
        )
        for name in judged:
            start, before = time.time(), judge.usage.copy()
            records[name] = evals[name].judge(records[name], judge, ctx)
            runs[name]["wall_s"]["judge"] = round(time.time() - start, 2)
            runs[name]["judge_usage"] = judge.usage.minus(before).as_dict()
            runs[name]["judge"] = judge.describe()
    ctx.free()
    metrics: dict = {"model": inp.model_identity}
    for name in names:
        runs[name]["wall_s"]["total"] = round(sum(runs[name]["wall_s"].values()), 2)
        m = {**evals[name].metrics(records[name], cfg), "run": runs[name]}
        write_eval(point_dir, name, records[name], m)
        metrics[name] = m
        log.info("%s", evals[name].summary(m))
    write_json(point_dir / "metrics.json", metrics)


if __name__ == "__main__":
    point_dir = Path(sys.argv[1])
    worker_logging(point_dir / "worker.log")
    main(point_dir)
