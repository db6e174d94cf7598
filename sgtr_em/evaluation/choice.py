"""Scoring a choice between single-token options (SR "1"/"2", TruthfulQA "A"/"B", MMLU "A".."D").

From a record's raw ingredients (the options' next-token probabilities, the most likely token, or a greedy
answer where a backend gives no probabilities), pure functions derive:
  chosen           the most probable option (None on a tie, or a greedy answer naming no option)
  is_correct       the correct option is strictly the most probable option (a tie counts as wrong)
  prob_correct     P(correct) / sum of the options' probabilities (normalised over the options)
  prob_correct_raw P(correct) as the next token (raw)
  valid            the most likely next token is one of the options (greedy answer: it names one)
  greedy_correct   the most likely next token is the correct option (invalid counts as wrong: the paper's convention)
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

from .stats import mean_ci, mean_or_none


def parse_option(text: Optional[str], options: Sequence[str]) -> Optional[str]:
    """The option a greedy answer gives: exactly the option, or the option followed by punctuation or space."""
    t = (text or "").strip()
    for o in options:
        if t == o or re.match(re.escape(o) + r"[\s.:)\],]", t):
            return o
    return None


def score_choice(probs: Optional[dict], top_token: Optional[str], text: Optional[str], correct: str,
                 options: Sequence[str]) -> dict:
    """The derived fields above for one item (`method`: logprobs, or greedy where there are no probabilities)."""
    if probs is None:
        answer = parse_option(text, options)
        return {"method": "greedy", "chosen": answer, "is_correct": answer == correct, "prob_correct": None,
                "prob_correct_raw": None, "valid": answer is not None, "greedy_correct": answer == correct}
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
    }


def ask_options(generator, items: list[dict], conversations: Sequence, options: Sequence[str], score, *, desc: str,
                max_new_tokens: int = 1) -> list[dict]:
    """Adds to each item the options' probabilities (or a greedy answer) for its conversation, then `score(item)`."""
    answers = generator.option_probs(list(conversations), options, desc=desc, max_new_tokens=max_new_tokens)
    for item, a in zip(items, answers):
        item.update(probs=a["probs"], top_token=a["top_token"], text=a["text"])
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
        "n": len(scored),
    }
