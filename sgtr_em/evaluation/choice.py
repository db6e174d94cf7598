"""Scoring a choice between single-token options (SR "1"/"2", TruthfulQA "A"/"B", MMLU "A".."D").

From a record's raw ingredients (the options' next-token probabilities, the most likely token, or a greedy
answer where a backend gives no probabilities), pure functions derive:
  chosen           the most probable option (None on a tie, or a greedy answer naming no option)
  is_correct       the correct option is strictly the most probable option (a tie counts as wrong)
  prob_correct     P(correct) / sum of the options' probabilities (normalised over the options)
  prob_correct_raw P(correct) as the next token (raw)
  valid            the most likely next token is one of the options (greedy answer: it names one)
  greedy_correct   the most likely next token is the correct option (invalid counts as wrong: the paper's convention)
  sampled_correct  P(the token sampled with the protocol's temperature / top-p / top-k is the correct option), over
                   the whole vocabulary: the exact expected value of the paper's one-sampled-answer score (invalid =
                   wrong); sampled_mass: P(it is any option), 1 - sampled_mass is the expected invalid rate
The metrics (`choice_metrics`) also draw one answer per item from those probabilities (seeded): the paper's sampled
estimator itself, without sampling the model again.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from .stats import mean_ci, mean_or_none


def parse_option(text: Optional[str], options: Sequence[str]) -> Optional[str]:
    """The option a greedy answer gives: exactly the option, or the option followed by punctuation or space."""
    t = (text or "").strip()
    for o in options:
        if t == o or re.match(re.escape(o) + r"[\s.:)\],]", t):
            return o
    return None


def score_choice(
    probs: Optional[dict],
    top_token: Optional[str],
    text: Optional[str],
    correct: str,
    options: Sequence[str],
    sampled_probs: Optional[dict] = None,
) -> dict:
    """The derived fields above for one item (`method`: logprobs, or greedy where there are no probabilities)."""
    sampled = (
        {}
        if sampled_probs is None
        else {"sampled_correct": sampled_probs[correct], "sampled_mass": sum(sampled_probs[o] for o in options)}
    )
    if probs is None:
        answer = parse_option(text, options)
        return {
            "method": "greedy",
            "chosen": answer,
            "is_correct": answer == correct,
            "prob_correct": None,
            "prob_correct_raw": None,
            "valid": answer is not None,
            "greedy_correct": answer == correct,
            **sampled,
        }
    total = sum(probs[o] for o in options)
    best = max(probs[o] for o in options)
    winners = [o for o in options if probs[o] == best]
    top = (top_token or "").strip()
    return {
        "method": "logprobs",
        "chosen": winners[0] if len(winners) == 1 else None,
        "is_correct": winners == [correct],
        "prob_correct": probs[correct] / total if total > 0 else 1 / len(options),
        "prob_correct_raw": probs[correct],
        "valid": top in options,
        "greedy_correct": top == correct,
        **sampled,
    }


def ask_options(
    generator,
    items: list[dict],
    conversations: Sequence,
    options: Sequence[str],
    score,
    *,
    desc: str,
    max_new_tokens: int = 1,
    sampling: Optional[dict] = None,
) -> list[dict]:
    """Adds to each item the options' probabilities (or a greedy answer) for its conversation, then `score(item)`;
    with `sampling` (temperature, top_p, top_k) also each option's probability of being the sampled answer."""
    kw = {"sampling": dict(sampling)} if sampling else {}
    answers = generator.option_probs(list(conversations), options, desc=desc, max_new_tokens=max_new_tokens, **kw)
    for item, a in zip(items, answers):
        item.update(probs=a["probs"], top_token=a["top_token"], text=a["text"])
        if sampling:
            item.update(sampled_probs=a.get("sampled_probs"), sampling=dict(sampling))
        item.update(score(item))
    return items


def choice_metrics(scored: Sequence[dict], *, first: Optional[str] = None, n_boot: int = 0, seed: int = 0) -> dict:
    """Means of the derived fields over items (records that carry them), with a 95 % interval for accuracy;
    `chose_first_rate`: the share choosing the `first` option (position bias; chance is 1 / number of options)."""
    if not scored:
        return {"n": 0}
    acc = [float(r["is_correct"]) for r in scored]
    return {
        **({"chose_first_rate": mean_or_none(float(r["chosen"] == first) for r in scored)} if first else {}),
        "accuracy": mean_or_none(acc),
        "accuracy_ci95": mean_ci(acc, n_boot=n_boot, seed=seed),
        "prob_correct": mean_or_none(r["prob_correct"] for r in scored),
        "prob_correct_raw": mean_or_none(r["prob_correct_raw"] for r in scored),
        "invalid_rate": mean_or_none(float(not r["valid"]) for r in scored),
        "greedy_accuracy": mean_or_none(float(r["greedy_correct"]) for r in scored),
        "share_greedy_fallback": mean_or_none(float(r["method"] == "greedy") for r in scored),
        **sampled_metrics(scored, n_boot=n_boot, seed=seed),
        "n": len(scored),
    }


def draw(p_correct: float, p_mass: float, u: float) -> str:
    """One sampled answer's outcome from its probabilities and a uniform draw: correct, wrong or invalid."""
    return "correct" if u < p_correct else ("wrong" if u < p_mass else "invalid")


def sampled_metrics(scored: Sequence[dict], *, n_boot: int = 0, seed: int = 0) -> dict:
    """The sampled estimators (items with sampled probabilities): the exact expected accuracy (invalid = wrong), the
    expected invalid rate, the expected accuracy among valid answers, and one seeded draw per item (the estimator
    as the paper computed it: invalid = wrong)."""
    rows = [r for r in scored if r.get("sampled_correct") is not None]
    if not rows:
        return {}

    u = np.random.default_rng(seed).random(len(rows))
    outcomes = [draw(r["sampled_correct"], r["sampled_mass"], x) for r, x in zip(rows, u)]
    exp = [r["sampled_correct"] for r in rows]
    return {
        "sampled_expected_accuracy": mean_or_none(exp),
        "sampled_expected_accuracy_ci95": mean_ci(exp, n_boot=n_boot, seed=seed),
        "sampled_expected_invalid_rate": mean_or_none(1 - r["sampled_mass"] for r in rows),
        "sampled_expected_accuracy_valid": mean_or_none(
            r["sampled_correct"] / r["sampled_mass"] for r in rows if r["sampled_mass"] > 0
        ),
        "sampled_accuracy": mean_or_none(float(o == "correct") for o in outcomes),
        "sampled_invalid_rate": mean_or_none(float(o == "invalid") for o in outcomes),
    }


ESTIMATOR_KEYS = {  # protocol.sr_estimator / truthfulqa_estimator -> the accuracy it reads
    "sampled_expected": "sampled_expected_accuracy",
    "sampled": "sampled_accuracy",
    "argmax": "accuracy",
    "probability": "prob_correct",
    "greedy": "greedy_accuracy",
}
