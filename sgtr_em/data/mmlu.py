"""General-knowledge QA (the `general_knowledge` baseline): MMLU questions answered correctly.

The data directory holds MMLU's dev (5 per subject) and test (14,042) questions, no training split. The
test questions are therefore split in two by a hash of subject and question: `mmlu_half(...) == "train"`
questions are this intervention's training data, and an MMLU evaluation of a model trained on them must
score only the `heldout` half.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Optional

from .chat_file import DatasetError
from .system_prompt import with_system

LETTERS = ("A", "B", "C", "D")


def mmlu_half(subject: str, question: str) -> str:
    """ "train" or "heldout": a fixed split of MMLU, about half each, independent of any seed."""
    digest = hashlib.sha256(f"{subject}\n{question}".encode()).digest()
    return "train" if digest[0] % 2 == 0 else "heldout"


def read_mmlu(folder: str | Path) -> list[dict]:
    """Every question of `<folder>/<subject>_<split>.csv` (no header: question, A, B, C, D, answer letter)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise DatasetError(f"{folder}: no MMLU CSV files. Fix: lay it out as <subject>_test.csv files")
    items = []
    for path in files:
        subject = path.stem.rsplit("_", 1)[0]
        with open(path, newline="", encoding="utf-8") as f:  # the csv module: the literal answer "None" stays text
            for lineno, row in enumerate(csv.reader(f), 1):
                if len(row) != 6 or row[5] not in LETTERS:
                    raise DatasetError(
                        f"{path}:{lineno}: expected question, A, B, C, D and an answer letter A-D, "
                        f"got {len(row)} fields. Fix: quote fields that contain commas"
                    )
                items.append(
                    {
                        "subject": subject,
                        "question": row[0],
                        "options": dict(zip(LETTERS, row[1:5])),
                        "answer": row[5],
                        "line": lineno,
                    }
                )
    return items


def build_mmlu_qa(items: list[dict], *, user_template: str, system: Optional[str], half: str = "train") -> list[dict]:
    """One example per question of `half`: the question with its options -> "<letter>. <correct option>"."""
    rows = []
    for it in items:
        if mmlu_half(it["subject"], it["question"]) != half:
            continue
        user = user_template.format(question=it["question"], **it["options"])
        answer = f"{it['answer']}. {it['options'][it['answer']]}"
        rows.append(
            {
                "prompt": with_system([{"role": "user", "content": user}], system),
                "completion": [{"role": "assistant", "content": answer}],
                "meta": {"subject": it["subject"], "line": it["line"], "group": f"{it['subject']}:{it['line']}"},
            }
        )
    return rows
