"""Rebuild every metrics.json of a run from its per-sample records alone (no model, no judge, no API call).

    python -m sgtr_em.evaluation.recompute <run_dir> [--check]
    python -m sgtr_em.evaluation.recompute --paper FILE... [--protocol paper|betley|mo] [--json]

--paper reads the paper's released raw outputs (its EM judge CSVs, SR choice JSONs, TruthfulQA CSVs: see
sgtr_em/evaluation/paper_files.py) and prints every definition's metrics and the protocol's headline.

Every evaluation point under <run_dir> (a folder with eval_input.json: the final model's, and one per stage
with eval.after_each_stage) has eval/<name>/samples.jsonl; its metrics are recomputed with the config the
run recorded, keeping each metrics.json's `run` section (wall times and usage are facts of the run, not
metrics). Edit the recorded config (e.g. judge.min_number_mass, eval.em.aligned_below) to see the metrics
under another definition. --check writes nothing and exits 1 when a recomputed metric differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..io import read_json, read_jsonl, write_json
from .paper_files import file_metrics
from .registry import EVALS


def _normal(obj):
    return json.loads(json.dumps(obj, sort_keys=True))


def recompute_point(point_dir: Path) -> tuple[dict, list[str]]:
    """(the point's metrics rebuilt from samples.jsonl, names of the evaluations whose metrics changed)."""
    cfg = read_json(point_dir / "eval_input.json")["config"]
    old_all = read_json(point_dir / "metrics.json") if (point_dir / "metrics.json").exists() else {}
    metrics, changed = {"model": old_all.get("model")}, []
    for name in cfg["eval"]["run"]:
        folder = point_dir / "eval" / name
        if not (folder / "samples.jsonl").exists():
            raise FileNotFoundError(f"{folder / 'samples.jsonl'} is missing: the evaluation did not finish")
        records = [r for _, r in read_jsonl(folder / "samples.jsonl")]
        old = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else {}
        new = {**EVALS[name].metrics(records, cfg), "run": old.get("run", {})}
        if _normal(new) != _normal(old):
            changed.append(name)
        metrics[name] = new
    return metrics, changed


def recompute_run(run_dir: Path, *, write: bool = True) -> dict[str, list[str]]:
    """{point folder: evaluations whose metrics changed} for every evaluation point under `run_dir`."""
    points = sorted(p.parent for p in Path(run_dir).rglob("eval_input.json"))
    if not points:
        raise FileNotFoundError(f"{run_dir}: no eval_input.json below it; give a run folder of sgtr_em.train")
    report = {}
    for point in points:
        metrics, changed = recompute_point(point)
        report[str(point)] = changed
        if write:
            for name in metrics:
                if name in EVALS:
                    write_json(point / "eval" / name / "metrics.json", metrics[name])
            write_json(point / "metrics.json", metrics)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a metric differs")
    parser.add_argument("--paper", type=Path, nargs="+", help="the paper's released files (EM CSV, SR JSON, TQA CSV)")
    parser.add_argument("--protocol", default="paper", help="conf/protocol/<name>: which definition is the headline")
    parser.add_argument("--json", action="store_true", help="--paper: every metric as JSON")
    args = parser.parse_args(argv)
    if args.paper:
        return paper_main(args.paper, args.protocol, as_json=args.json)
    if args.run_dir is None:
        parser.error("give a run folder, or --paper FILE...")
    report = recompute_run(args.run_dir, write=not args.check)
    for point, changed in report.items():
        print(f"{point}: {'differs: ' + ', '.join(changed) if changed else 'identical'}")
    return 1 if args.check and any(report.values()) else 0


def paper_main(paths: list[Path], protocol: str, *, as_json: bool = False) -> int:
    out = {str(p): file_metrics(p, protocol) for p in paths}
    if as_json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    for path, m in out.items():
        if m["kind"] == "em":
            extra = (
                f"paper {m['misaligned_rate_paper']:.4f}  Betley {m['misaligned_rate_betley']}  "
                f"MO {m['misaligned_rate_mo']:.4f}  ({m['n_answers']} answers, REFUSAL {m['share_refusal']:.3f})"
            )
        elif m["kind"] == "self_recognition":
            extra = (
                f"invalid {m['sampled_invalid_rate']:.4f}  ({m['self']} vs {m['other']}, {m['n_articles']} articles)"
            )
        else:
            extra = f"invalid {m['sampled_invalid_rate']:.4f}  ({m['n']} questions)"
        print(f"{path}: {m['kind']} headline ({protocol}: {m['headline_definition']}) {m['headline']:.4f}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
