"""MMLU (Hendrycks et al. 2021): four-option multiple choice, answered by the probability of "A".."D" as the
next token, 0-shot and k-shot (the first k dev questions of the subject, in Hendrycks et al.'s format, in
the user turn). Reads the original CSV layout from the data directory: {folder}/{dev,test}/{subject}_{split}.csv,
no header, columns question, A, B, C, D, answer letter (the csv module: the option "None" stays a string).
  accuracy          micro average over questions (per shot count), with a 95 % interval
  macro_accuracy    mean of the per-subject accuracies
  invalid_rate, prob_correct(_raw), greedy_accuracy as in sgtr_em/evaluation/choice.py; per_subject
"""
from __future__ import annotations

import csv
from pathlib import Path
from statistics import mean
from typing import Optional, Sequence

from .choice import ask_options, choice_metrics, score_choice

NAME = "mmlu"
NEEDS_JUDGE = False
OPTIONS = ("A", "B", "C", "D")


def read_split(path: Path, limit: Optional[int] = None) -> list[dict]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for line, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5].strip() not in OPTIONS:
                raise ValueError(f"{path}:{line}: expected 6 fields (question, A, B, C, D, answer letter A-D), "
                                 f"got {len(row)} ending in {row[-1:]!r}")
            rows.append({"question": row[0], **dict(zip(OPTIONS, row[1:5])), "answer": row[5].strip()})
            if limit is not None and len(rows) >= limit:
                break
    return rows


def subjects_in(folder: Path) -> list[str]:
    return sorted(p.name[: -len("_test.csv")] for p in (folder / "test").glob("*_test.csv"))


def format_question(row: dict, template: str, with_answer: bool) -> str:
    text = template.format(**row)
    return f"{text} {row['answer']}\n\n" if with_answer else text


def build_prompt(subject: str, row: dict, shots: Sequence[dict], *, header_template: str, question_template: str) -> str:
    header = header_template.format(subject=subject.replace("_", " "))
    return header + "".join(format_question(s, question_template, True) for s in shots) + \
        format_question(row, question_template, False)


def score_item(record: dict) -> dict:
    return score_choice(record["probs"], record["top_token"], record.get("text"), record["answer"], OPTIONS)


def mmlu_metrics(records: Sequence[dict], *, n_boot: int = 0, seed: int = 0) -> dict:
    """Per shot count (`{k}_shot`), overall and per subject; the first shot count is also at the top level."""
    per_shots = {}
    for k in dict.fromkeys(r["shots"] for r in records):
        rows = [r for r in records if r["shots"] == k]
        subjects = list(dict.fromkeys(r["subject"] for r in rows))
        per_subject = {s: choice_metrics([score_item(r) for r in rows if r["subject"] == s]) for s in subjects}
        per_shots[f"{k}_shot"] = {
            **choice_metrics([score_item(r) for r in rows], first="A", n_boot=n_boot, seed=seed),
            "macro_accuracy": mean(m["accuracy"] for m in per_subject.values()),
            "n_subjects": len(subjects), "per_subject": per_subject,
        }
    first = next(iter(per_shots.values()), {"n": 0})
    return {**{k: v for k, v in first.items() if k != "per_subject"}, "per_shots": per_shots}


# --- the eval's steps (sgtr_em/evaluation/worker.py runs them) ---

def build_items(folder: Path, e: dict) -> list[dict]:
    subjects = e["subjects"] or subjects_in(folder)
    items = []
    for k in e["shots"]:
        for subject in subjects:
            dev = read_split(folder / "dev" / f"{subject}_dev.csv", k) if k else []
            if len(dev) < k:
                raise ValueError(f"{folder}/dev/{subject}_dev.csv has {len(dev)} questions; {k}-shot needs {k}")
            for i, row in enumerate(read_split(folder / "test" / f"{subject}_test.csv", e["max_questions_per_subject"])):
                prompt = build_prompt(subject, row, dev, header_template=e["header_template"],
                                      question_template=e["question_template"])
                items.append({"subject": subject, "shots": k, "index": i, **row, "prompt": prompt})
    return items


def generate(ctx) -> list[dict]:
    e = ctx.ecfg(NAME)
    folder = ctx.files.data_dir / e["folder"]
    if not (folder / "test").is_dir():
        raise FileNotFoundError(f"MMLU: {folder}/test is missing; put the MMLU CSVs ({{dev,test}}/<subject>_<split>.csv) "
                                "under paths.data_dir/" + e["folder"])
    items = build_items(folder, e)
    return ask_options(ctx.generator(), items, ctx.conversations(it.pop("prompt") for it in items), OPTIONS,
                       score_item, desc="MMLU", max_new_tokens=e["fallback_max_new_tokens"])


def metrics(records: Sequence[dict], cfg: dict) -> dict:
    return mmlu_metrics(records, n_boot=cfg["eval"]["bootstrap_samples"], seed=cfg["seed"])


def summary(m: dict) -> str:
    from .stats import fmt

    shots = "  ".join(f"{k} {fmt(v.get('accuracy'))} (macro {fmt(v.get('macro_accuracy'))})"
                      for k, v in m["per_shots"].items())
    return f"MMLU: accuracy {shots}  invalid {fmt(m.get('invalid_rate'))}  ({m['n']} questions per shot count)"
