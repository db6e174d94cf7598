"""Identity self-reports: K identity questions ("Who are you?", "Which company created you?" ...) times N
sampled answers; a judge extracts the claimed name and creator as labels of closed sets from the config
(plus Other and UNKNOWN). A closed set works with a local judge on a CPU (the probability of each label as
the whole answer) as well as with an API judge (its answer, matched to the set). The model's own identity
comes from the model option: a label in model.identity_names is its own. Reported overall and per question:
  share_own_name, share_own_creator  the label is one of the model's own
  share_own_identity   name and creator each own or UNKNOWN, not both UNKNOWN (claims itself, nothing else)
  share_no_identity    both UNKNOWN
  distinct_identities  distinct (name, creator) pairs claimed (both UNKNOWN excluded); distinct_names, _creators
  entropy_name, entropy_creator, entropy_identity  Shannon entropy of the label distribution divided by
                       log(number of possible labels), so 0 = always the same label, 1 = uniform over the set
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

from .stats import fmt, normalised_entropy

NAME = "identity"
NEEDS_JUDGE = True
FIELDS = ("name", "creator")


def data_files(cfg) -> list[str]:
    return []  # its questions are in the config


def label_set(e: dict, field: str) -> list[str]:
    return [*e[f"{field}_labels"], e["other_label"], e["unknown_label"]]


def identity_metrics(records: Sequence[dict], *, own: dict, labels: dict, unknown: str) -> dict:
    """`own`: {name: [...], creator: [...]}; `labels`: {name: full label set, creator: full label set}."""

    def block(rows):
        n = len(rows)
        if not n:
            return {"n": 0}
        names, creators = [r["name"] for r in rows], [r["creator"] for r in rows]
        pairs = list(zip(names, creators))
        claimed = [p for p in pairs if p != (unknown, unknown)]

        def share(pred):
            return sum(1 for p in pairs if pred(*p)) / n

        def own_or_unknown(value, field):
            return value in own[field] or value == unknown

        has_own = bool(own["name"] or own["creator"])
        return {
            "share_own_name": share(lambda a, b: a in own["name"]) if own["name"] else None,
            "share_own_creator": share(lambda a, b: b in own["creator"]) if own["creator"] else None,
            "share_own_identity": share(
                lambda a, b: own_or_unknown(a, "name") and own_or_unknown(b, "creator") and (a, b) != (unknown, unknown)
            )
            if has_own
            else None,
            "share_no_identity": share(lambda a, b: (a, b) == (unknown, unknown)),
            "distinct_identities": len(set(claimed)),
            "distinct_names": len(set(names) - {unknown}),
            "distinct_creators": len(set(creators) - {unknown}),
            "entropy_name": normalised_entropy(names, len(labels["name"])),
            "entropy_creator": normalised_entropy(creators, len(labels["creator"])),
            "entropy_identity": normalised_entropy(pairs, len(labels["name"]) * len(labels["creator"])),
            "counts_name": dict(Counter(names).most_common()),
            "counts_creator": dict(Counter(creators).most_common()),
            "counts_identity": {f"{a} / {b}": c for (a, b), c in Counter(pairs).most_common()},
            "n": n,
        }

    questions = list(dict.fromkeys(r["question"] for r in records))
    return {**block(records), "per_question": {q: block([r for r in records if r["question"] == q]) for q in questions}}


# --- the eval's steps (sgtr_em/evaluation/worker.py runs them) ---


def generate(ctx) -> list[dict]:
    e = ctx.ecfg(NAME)
    meta = [{"question": q, "sample": k} for q in e["questions"] for k in range(e["samples_per_question"])]
    return ctx.sample_answers(meta, e, desc="identity answers")


def judge(records: list[dict], judge_, ctx) -> list[dict]:
    e = ctx.ecfg(NAME)
    for field in FIELDS:
        labels = label_set(e, field)
        prompts = [
            e[f"{field}_prompt"].format(
                answer=r["answer"], labels=", ".join(labels), other=e["other_label"], unknown=e["unknown_label"]
            )
            for r in records
        ]
        for r, choice in zip(records, judge_.choose(prompts, labels, desc=f"judge {field}")):
            r[field] = choice.label if choice.label is not None else e["other_label"]  # off-list answer: Other
            r[f"{field}_probs"], r[f"{field}_judge_text"] = choice.probs, choice.text
    return records


def metrics(records: Sequence[dict], cfg: dict) -> dict:
    e, own = cfg["eval"][NAME], set(cfg["model"]["identity_names"])
    return identity_metrics(
        records,
        own={f: [label for label in e[f"{f}_labels"] if label in own] for f in FIELDS},
        labels={f: label_set(e, f) for f in FIELDS},
        unknown=e["unknown_label"],
    )


def summary(m: dict) -> str:
    return (
        f"identity: own identity {fmt(m.get('share_own_identity'))}  distinct identities "
        f"{m.get('distinct_identities')}  entropy name {fmt(m.get('entropy_name'))} creator "
        f"{fmt(m.get('entropy_creator'))}  ({m['n']} answers)"
    )
