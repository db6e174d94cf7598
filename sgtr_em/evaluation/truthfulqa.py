"""TruthfulQA, binary (the paper's variant, PAPER_NOTES §5.3): each question with its Best Answer and Best
Incorrect Answer as options A and B, in an order fixed by the seed, with the paper's prompt. Answered by
comparing P("A") and P("B") as the next token (a greedy answer where a backend has no probabilities).
  accuracy            P(correct) > P(wrong);   one_minus_accuracy: the paper's headline "TruthfulQA (1 - p)"
  invalid_rate        the most likely next token is neither A nor B (reported separately, not folded in)
  greedy_accuracy     the most likely token is the correct letter (invalid = wrong, as the paper scored it)
  prob_correct(_raw)  normalised over A and B / raw;  per_type: Adversarial and Non-Adversarial
  chose_first_rate    share answering A: a position bias shows here (the correct letter is A for about half)
  sampled_expected_accuracy   the exact expected value of the paper's estimator (one token sampled at T 0.7,
                      invalid = wrong); sampled_expected_accuracy_valid: invalid dropped; sampled_accuracy: one draw
  headline            1 - the accuracy of the protocol's estimator (protocol.truthfulqa_estimator)
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Optional, Sequence

from .choice import ESTIMATOR_KEYS, ask_options, choice_metrics, score_choice
from .stats import fmt

NAME = "truthfulqa"
NEEDS_JUDGE = False
OPTIONS = ("A", "B")
COLUMNS = ("Type", "Category", "Question", "Best Answer", "Best Incorrect Answer")


def data_files(cfg) -> list[str]:
    return [cfg["eval"][NAME]["file"]]


def load_questions(path: Path, max_questions: Optional[int] = None) -> list[dict]:
    """The rows of TruthfulQA.csv (the csv module: no NA guessing), in file order; fails on a missing column."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected the 2025 binary TruthfulQA.csv")
        rows = []
        for line, row in enumerate(reader, 2):
            if not row["Best Answer"].strip() or not row["Best Incorrect Answer"].strip():
                raise ValueError(f"{path}:{line}: empty Best Answer or Best Incorrect Answer")
            rows.append(
                {
                    "index": line - 2,
                    "type": row["Type"],
                    "category": row["Category"],
                    "question": row["Question"],
                    "best": row["Best Answer"],
                    "incorrect": row["Best Incorrect Answer"],
                }
            )
    return rows[:max_questions] if max_questions is not None else rows


def build_items(questions: Sequence[dict], template: str, seed: int) -> list[dict]:
    """Each question as an A/B prompt; whether the best answer is A is drawn from a generator seeded by `seed`."""
    rng = random.Random(seed)
    items = []
    for q in questions:
        best_first = rng.random() < 0.5
        a, b = (q["best"], q["incorrect"]) if best_first else (q["incorrect"], q["best"])
        items.append(
            {
                **q,
                "correct_option": "A" if best_first else "B",
                "prompt": template.format(question=q["question"], option_a=a, option_b=b),
            }
        )
    return items


def score_item(record: dict) -> dict:
    return score_choice(
        record["probs"],
        record["top_token"],
        record.get("text"),
        record["correct_option"],
        OPTIONS,
        record.get("sampled_probs"),
    )


def tqa_metrics(records: Sequence[dict], *, n_boot: int = 0, seed: int = 0, estimator: str = "argmax") -> dict:
    def block(rows):
        m = choice_metrics([score_item(r) for r in rows], first="A", n_boot=n_boot, seed=seed)
        for key in ("accuracy", "greedy_accuracy", "sampled_expected_accuracy", "sampled_accuracy"):
            if key in m:
                m[f"one_minus_{key}"] = None if m[key] is None else 1 - m[key]
        acc = m.get(ESTIMATOR_KEYS[estimator])
        m["headline"] = None if acc is None else 1 - acc
        m["headline_definition"] = f"1 - {estimator} accuracy"
        return m

    types = list(dict.fromkeys(r["type"] for r in records))
    return {**block(records), "per_type": {t: block([r for r in records if r["type"] == t]) for t in types}}


# --- the eval's steps (sgtr_em/evaluation/worker.py runs them) ---


def generate(ctx) -> list[dict]:
    e = ctx.ecfg(NAME)
    items = build_items(load_questions(ctx.files.path(e["file"]), e["max_questions"]), e["prompt_template"], ctx.seed)
    return ask_options(
        ctx.generator(),
        items,
        ctx.conversations(it.pop("prompt") for it in items),
        OPTIONS,
        score_item,
        desc="TruthfulQA",
        max_new_tokens=e["fallback_max_new_tokens"],
        sampling=e.get("sampling"),
    )


def metrics(records: Sequence[dict], cfg: dict) -> dict:
    protocol = cfg.get("protocol") or {}
    return tqa_metrics(
        records,
        n_boot=cfg["eval"]["bootstrap_samples"],
        seed=cfg["seed"],
        estimator=protocol.get("truthfulqa_estimator", "argmax"),
    )


def summary(m: dict) -> str:
    return (
        f"TruthfulQA: headline {fmt(m.get('headline'))} ({m.get('headline_definition')})  "
        f"1 - argmax accuracy {fmt(m.get('one_minus_accuracy'))}  "
        f"1 - sampled expected {fmt(m.get('one_minus_sampled_expected_accuracy'))}  accuracy {fmt(m.get('accuracy'))} "
        f"{fmt(m.get('accuracy_ci95'))}  invalid {fmt(m.get('invalid_rate'))}  ({m['n']} questions)"
    )
