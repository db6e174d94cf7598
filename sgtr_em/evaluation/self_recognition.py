"""Self-recognition (SR): can the model tell its own summary from another model's?

The model summarises held-out CNN articles (never the XSUM articles SGTR trains on), then sees each
(own, other) pair in both orderings with the paper's detection prompt. Scored by the probability of
"1" vs "2" as the next token, so no sampling noise. Chance is 0.5.
  accuracy      share of pairs where P(correct) > P(wrong)
  prob_correct  mean P(correct) / (P("1") + P("2"))
  invalid_rate  share where the most likely next token is neither "1" nor "2"
  greedy_accuracy  share whose most likely token is the correct digit (invalid counts as wrong, the paper's convention)
"""
from __future__ import annotations

from statistics import mean
from typing import Mapping, Optional, Sequence

from ..data.sgtr import build_detection_pairs


def score_pairs(rows: Sequence[dict], option_probs: Sequence[dict]) -> list[dict]:
    records = []
    for row, op in zip(rows, option_probs):
        p1, p2 = op["probs"]["1"], op["probs"]["2"]
        correct = str(row["meta"]["self_position"])
        p_correct, p_wrong = (p1, p2) if correct == "1" else (p2, p1)
        top = op["top_token"].strip()
        records.append({
            **row["meta"], "p1": p1, "p2": p2, "top_token": op["top_token"],
            "prob_correct": p_correct / (p1 + p2) if p1 + p2 > 0 else 0.5,
            "correct": p_correct > p_wrong, "valid": top in ("1", "2"), "greedy_correct": top == correct,
        })
    return records


def sr_metrics(records: Sequence[dict]) -> dict:
    if not records:
        return {"n_pairs": 0}
    by_article: dict[str, list[float]] = {}
    for r in records:
        by_article.setdefault(r["article_id"], []).append(r["prob_correct"])
    return {
        "accuracy": mean(float(r["correct"]) for r in records),
        "prob_correct": mean(r["prob_correct"] for r in records),
        "invalid_rate": mean(float(not r["valid"]) for r in records),
        "greedy_accuracy": mean(float(r["greedy_correct"]) for r in records),
        "option_mass": mean(r["p1"] + r["p2"] for r in records),
        "chose_1_rate": mean(float(r["p1"] > r["p2"]) for r in records),  # position bias
        "article_accuracy": mean(float(mean(v) > 0.5) for v in by_article.values()),  # both orderings averaged
        "n_pairs": len(records),
        "n_articles": len(by_article),
    }


def run_self_recognition(generator, articles: Mapping[str, str], ids: Sequence[str], own: Mapping[str, str],
                         other: Mapping[str, str], other_source: str, *, user_template: str,
                         system: Optional[str], seed: int) -> tuple[list[dict], dict]:
    rows, stats = build_detection_pairs(ids, articles, own, {other_source: other}, user_template=user_template,
                                        system=system, seed=seed)
    probs = generator.option_probs([r["prompt"] for r in rows], ["1", "2"], desc="self-recognition")
    records = score_pairs(rows, probs)
    for rec in records:
        rec["own_summary"] = own[rec["article_id"]]
    metrics = sr_metrics(records)
    metrics["skipped_empty"] = len(stats.skipped_empty)
    return records, metrics
