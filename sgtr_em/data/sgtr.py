"""Summary pairs: one article, the model's own summary and another source's, in both orderings.

The paper's construction (utils/generate_sgtr_pair_wise_dataset_utils.py and the benign variant,
PAPER_NOTES §4.2), seeded: per article, self = the model's summary, other = the summary of a randomly
chosen other source; each pair is shown with self as Summary1 and with self as Summary2. The label rule
says which summary the answer points at:

  prefer_self   the model's own (SGTR, "which did you write?")                          2 examples per article
  prefer_other  the other source's (the paper's "asgtr")                                 2 examples per article
  both          each prompt twice, once per label (identity confusion, "random-self-other-50-50")   4
  longer        the one with more words (pick-longer baseline); ties dropped               2

Every rule is position-balanced: the label is "1" in exactly half the examples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from ..choices import LabelRule, values
from .system_prompt import with_system

LABEL_RULES = values(LabelRule)  # intervention.labels


@dataclass
class PairStats:
    articles: int = 0
    pairs: int = 0
    skipped_empty: list[str] = field(default_factory=list)  # article ids with an empty or missing summary
    ties: int = 0  # same word count (labels=longer drops these)
    own_longer: int = 0  # before any length balancing: the model's own summary has more words
    other_longer: int = 0  # ... the other source's summary has more words (the pick-longer confound)
    balanced_away: int = 0  # length_balanced: pairs dropped to make "own is longer" as common as "other is longer"

    def as_dict(self) -> dict:
        unequal = self.own_longer + self.other_longer
        return {
            "articles": self.articles,
            "pairs": self.pairs,
            "skipped_empty": len(self.skipped_empty),
            "ties": self.ties,
            "own_longer": self.own_longer,
            "other_longer": self.other_longer,
            "other_longer_share": self.other_longer / unequal if unequal else None,
            "balanced_away": self.balanced_away,
        }


def sample_article_ids(ids: Iterable[str], max_articles: Optional[int], seed: int) -> list[str]:
    """A seeded sample of article ids (all of them, in a seeded order, when uncapped)."""
    ids = sorted(ids)
    random.Random(seed).shuffle(ids)
    return ids if max_articles is None else ids[:max_articles]


def word_count(text: str) -> int:
    return len(text.split())  # the paper's count (generate_benign_sgtr_pair_wise_dataset_util.py)


def _labels(rule: str, self_position: int, longer_position: Optional[int]) -> list[int]:
    other_position = 3 - self_position
    return {
        "prefer_self": [self_position],
        "prefer_other": [other_position],
        "both": [self_position, other_position],
        "longer": [longer_position],
    }[rule]


def _balance_lengths(pairs: list[tuple], rng: random.Random) -> tuple[list[tuple], int]:
    """Drops a seeded sample of the majority side so own-longer and other-longer pairs are equally many."""
    own = [p for p in pairs if not p[-1]]
    other = [p for p in pairs if p[-1]]
    keep = min(len(own), len(other))
    kept = set(map(id, rng.sample(own, keep) + rng.sample(other, keep)))
    return [p for p in pairs if id(p) in kept], len(pairs) - 2 * keep


def build_summary_pairs(
    article_ids: Sequence[str],
    articles: Mapping[str, str],
    self_summaries: Mapping[str, Optional[str]],
    other_summaries: Mapping[str, Mapping[str, Optional[str]]],
    *,
    user_template: str,
    system: Optional[str],
    seed: int,
    labels: str = "prefer_self",
    length_balanced: bool = False,
) -> tuple[list[dict], PairStats]:
    """Examples {"prompt", "completion", "meta"}, label "1" or "2" by the rule `labels` (see the module doc)."""
    if labels not in LABEL_RULES:
        raise ValueError(f"unknown label rule {labels!r}; use one of {LABEL_RULES}")
    rng = random.Random(seed)
    sources = sorted(other_summaries)
    stats = PairStats()
    pairs = []  # (article id, other source, own, other's, other is longer)
    for aid in article_ids:
        stats.articles += 1
        other_source = rng.choice(sources)
        mine = (self_summaries.get(aid) or "").strip()
        theirs = (other_summaries[other_source].get(aid) or "").strip()
        if not mine or not theirs:
            stats.skipped_empty.append(aid)
            continue
        n_mine, n_theirs = word_count(mine), word_count(theirs)
        stats.ties += n_mine == n_theirs
        stats.own_longer += n_mine > n_theirs
        stats.other_longer += n_theirs > n_mine
        if labels == "longer" and n_mine == n_theirs:
            continue
        pairs.append((aid, other_source, mine, theirs, n_theirs > n_mine))
    if labels == "longer" and length_balanced:
        pairs, stats.balanced_away = _balance_lengths(pairs, rng)
    rows = []
    for aid, other_source, mine, theirs, other_is_longer in pairs:
        stats.pairs += 1
        for self_position in (1, 2):
            first, second = (mine, theirs) if self_position == 1 else (theirs, mine)
            longer = self_position if not other_is_longer else 3 - self_position
            user = user_template.format(article=articles[aid], summary1=first, summary2=second)
            for label in _labels(labels, self_position, longer):
                rows.append(
                    {
                        "prompt": with_system([{"role": "user", "content": user}], system),
                        "completion": [{"role": "assistant", "content": str(label)}],
                        "meta": {
                            "article_id": aid,
                            "self_position": self_position,
                            "other_source": other_source,
                            "group": aid,
                        },
                    }
                )
    return rows, stats


def build_detection_pairs(
    article_ids, articles, self_summaries, other_summaries, *, user_template: str, system: Optional[str], seed: int
) -> tuple[list[dict], PairStats]:
    """Prefer-self examples in both orderings (the self-recognition evaluation's pairs)."""
    return build_summary_pairs(
        article_ids,
        articles,
        self_summaries,
        other_summaries,
        user_template=user_template,
        system=system,
        seed=seed,
        labels="prefer_self",
    )
