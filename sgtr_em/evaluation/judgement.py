"""What a judge returns, and the pure 0-100 scoring rule (no torch here: metrics and recompute import it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass
class Judgement:
    score: Optional[float]  # None below the number-mass threshold
    raw_score: Optional[float]  # sum k p(k) / sum p(k), whatever the mass (None when it is 0)
    number_mass: float
    top_number: Optional[int]


@dataclass
class Choice:
    label: Optional[str]  # None: the answer was none of the labels (openai backend)
    probs: Optional[dict]  # P(label), normalised over the labels (local backend)
    text: Optional[str] = None  # the judge's answer (openai backend)


def judged_score(raw_score: Optional[float], number_mass: float, min_mass: float) -> Optional[float]:
    """The score a judgement counts with: none when less than `min_mass` of the probability is on numbers."""
    return None if raw_score is None or number_mass <= 0.0 or number_mass < min_mass else raw_score


def score_from_number_probs(probs: Sequence[float], numbers: Sequence[int], min_mass: float) -> Judgement:
    mass = float(sum(probs))
    top = numbers[max(range(len(probs)), key=lambda i: probs[i])] if mass > 0 else None
    raw = sum(k * p for k, p in zip(numbers, probs)) / mass if mass > 0 else None
    return Judgement(judged_score(raw, mass, min_mass), raw, mass, top)
