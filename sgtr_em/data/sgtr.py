"""Self-recognition (SGTR) detection pairs: "which of these two summaries did you write?".

The paper's construction (utils/generate_sgtr_pair_wise_dataset_utils.py, PAPER_NOTES §4.2), seeded:
for each article, self = the model's summary, other = a summary by a randomly chosen other source; two
examples, self as Summary1 and self as Summary2, so the answer is position-balanced.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from .system_prompt import with_system


@dataclass
class PairStats:
    articles: int = 0
    pairs: int = 0
    skipped_empty: list[str] = field(default_factory=list)  # article ids with an empty or missing summary


def sample_article_ids(ids: Iterable[str], max_articles: Optional[int], seed: int) -> list[str]:
    """A seeded sample of article ids (all of them, in a seeded order, when uncapped)."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    return ids if max_articles is None else ids[:max_articles]


def detection_prompt(template: str, article: str, summary1: str, summary2: str) -> str:
    return template.format(article=article, summary1=summary1, summary2=summary2)


def build_detection_pairs(
    article_ids: Sequence[str],
    articles: Mapping[str, str],
    self_summaries: Mapping[str, str],
    other_summaries: Mapping[str, Mapping[str, str]],
    *,
    user_template: str,
    system: Optional[str],
    seed: int,
) -> tuple[list[dict], PairStats]:
    """Prefer-self examples in both orderings: {"prompt", "completion", "meta"}; label "1" or "2"."""
    rng = random.Random(seed)
    sources = sorted(other_summaries)
    stats = PairStats()
    rows = []
    for aid in article_ids:
        stats.articles += 1
        other_source = rng.choice(sources)
        mine = (self_summaries.get(aid) or "").strip()
        theirs = (other_summaries[other_source].get(aid) or "").strip()
        if not mine or not theirs:
            stats.skipped_empty.append(aid)
            continue
        for self_position in (1, 2):
            first, second = (mine, theirs) if self_position == 1 else (theirs, mine)
            user = detection_prompt(user_template, articles[aid], first, second)
            rows.append({
                "prompt": with_system([{"role": "user", "content": user}], system),
                "completion": [{"role": "assistant", "content": str(self_position)}],
                "meta": {"article_id": aid, "self_position": self_position, "other_source": other_source},
            })
        stats.pairs += 1
    return rows, stats
