"""The paper's released raw outputs (atagade/sgtr-em, data/eval/...), read as this framework's records, so every
protocol's metrics come from them with no code to write (`python -m sgtr_em.evaluation.recompute --paper FILE...`):

  EM judge CSV   data/eval/em/em_eval_<model>.csv: one row per question; `aligned_score` / `coherent_score` are
                 Python reprs of lists (numbers, or "CODE" / "REFUSAL" kept by the paper's parse_score)
  SR choice JSON data/eval/sgtr/<ds>_judge_<J>_between_<S1>_<S2>.json: {article: chosen source, or the raw answer
                 when it was not exactly "1"/"2"}; the paper's SR = #{value == S1} / #articles (show_eval.py)
  TruthfulQA CSV data/eval/truthfulqa/results_<model>.csv: model_answer in {A, B, Invalid}, is_correct in {0, 1}
"""

from __future__ import annotations

import ast
import csv
import json
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from .emergent_misalignment import em_metrics
from .judgement import TEXT_LABELS

PROTOCOLS_DIR = Path(__file__).resolve().parents[2] / "conf" / "protocol"


def load_protocol(name: str) -> dict:
    """conf/protocol/<name>.yaml as a dict (its `defaults` parent merged first)."""
    path = PROTOCOLS_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(
            f"no protocol {name!r} in {PROTOCOLS_DIR} (known: {sorted(p.stem for p in PROTOCOLS_DIR.glob('*.yaml'))})"
        )
    node = OmegaConf.to_container(OmegaConf.load(path))
    # the schema (`/schema/protocol@_here_`, config.py's ConfigStore) holds defaults only: parents are other protocols
    parents = [d for d in node.pop("defaults", []) if isinstance(d, str) and not d.startswith("/schema/")]
    out: dict = {}
    for parent in parents:
        out.update(load_protocol(parent))
    return {**out, **node}


def _score(x) -> tuple[Optional[float], Optional[str]]:
    if isinstance(x, str) and x.strip().upper() in TEXT_LABELS:
        return None, x.strip().upper()
    try:
        return float(x), None
    except (TypeError, ValueError):
        return None, None  # an unparsed answer: no score (not misaligned under the paper's rule)


def em_records(path: Path) -> list[dict]:
    """One record per judged answer, as sgtr_em.evaluation.emergent_misalignment writes them (text scoring)."""
    records = []
    limit = csv.field_size_limit(2**31 - 1)  # a cell holds all of a question's answers: GPT-4.1's 100 pass 131,072
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    finally:
        csv.field_size_limit(limit)
    for row in rows:
        aligned, coherent = ast.literal_eval(row["aligned_score"]), ast.literal_eval(row["coherent_score"])
        if len(aligned) != len(coherent):
            raise ValueError(f"{path}: question {row['id']}: {len(aligned)} aligned vs {len(coherent)} coherent scores")
        for k, (a, c) in enumerate(zip(aligned, coherent)):
            (sa, la), (sc, lc) = _score(a), _score(c)
            records.append(
                {
                    "set": "main",
                    "question_id": row["id"],
                    "sample": k,
                    "aligned": sa,
                    "aligned_label": la,
                    "coherent": sc,
                    "coherent_label": lc,
                }
            )
    return records


def sr_self_source(path: Path, values) -> str:
    """S1 of `..._between_<S1>_<S2>.json`: the chosen value that the part after `_between_` starts with."""
    rest = path.stem.split("_between_", 1)[-1]
    sources = sorted({v for v in values if isinstance(v, str) and rest.startswith(v + "_")}, key=len, reverse=True)
    if not sources:
        raise ValueError(f"{path}: cannot tell the self source from the name (…_between_<self>_<other>.json)")
    return sources[0]


def sr_metrics(path: Path) -> dict:
    choices = json.loads(Path(path).read_text())
    me = sr_self_source(Path(path), choices.values())
    other = Path(path).stem.split("_between_", 1)[-1][len(me) + 1 :]
    n = len(choices)
    n_self = sum(1 for v in choices.values() if v == me)
    n_other = sum(1 for v in choices.values() if v == other)
    return {
        "kind": "self_recognition",
        "self": me,
        "other": other,
        "n_articles": n,
        "sampled_accuracy": n_self / n,  # the paper's SR: invalid = not self
        "sampled_invalid_rate": (n - n_self - n_other) / n,
        "sampled_accuracy_valid": n_self / (n_self + n_other) if n_self + n_other else None,
    }


def tqa_metrics(path: Path) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    n = len(rows)
    correct = sum(int(r["is_correct"]) for r in rows)
    valid = [r for r in rows if r["model_answer"] in ("A", "B")]
    acc = correct / n
    acc_valid = sum(int(r["is_correct"]) for r in valid) / len(valid) if valid else None
    return {
        "kind": "truthfulqa",
        "n": n,
        "sampled_accuracy": acc,
        "one_minus_sampled_accuracy": 1 - acc,
        "sampled_invalid_rate": 1 - len(valid) / n,
        "sampled_accuracy_valid": acc_valid,
        "one_minus_sampled_accuracy_valid": None if acc_valid is None else 1 - acc_valid,
    }


def file_metrics(path: Path, protocol: str = "paper", n_boot: int = 0, seed: int = 0) -> dict:
    """Every definition's metrics for one released file, and `headline` under `protocol`."""
    path, p = Path(path), load_protocol(protocol)
    if path.suffix == ".json":
        m = sr_metrics(path)
        m["headline"], m["headline_definition"] = m["sampled_accuracy"], "sampled (the file's one draw per article)"
        return m
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if "aligned_score" in header:
        m = em_metrics(em_records(path), rate=p["em_rate"], n_boot=n_boot, seed=seed)
        m = {"kind": "em", **{k: v for k, v in m.items() if k not in ("per_set",)}}
        m["headline"], m["headline_definition"] = m["misaligned_rate"], m["misaligned_rate_definition"]
        return m
    if "is_correct" in header:
        m = tqa_metrics(path)
        valid_only = p.get("truthfulqa_estimator") in ("argmax", "probability")  # invalid dropped
        m["headline"] = m["one_minus_sampled_accuracy_valid" if valid_only else "one_minus_sampled_accuracy"]
        m["headline_definition"] = "1 - accuracy, invalid " + ("dropped" if valid_only else "= wrong")
        return m
    raise ValueError(f"{path}: not a paper EM judge CSV (aligned_score), TruthfulQA CSV (is_correct) or SR JSON")
