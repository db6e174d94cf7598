"""Chat-format JSONL files (EM datasets, the paper's word-count set, correct twins): read, validate, convert.

Each line is `{"messages": [{"role": ..., "content": ...}, ...]}`: an optional system turn first, then user and
assistant turns, the last one an assistant turn with text. Every row is checked when the file is read, and
the first bad one fails with `<file>:<line>: <problem>. Fix: <how>`, before any training starts.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Iterator, Optional

from .system_prompt import with_system

ROLES = ("system", "user", "assistant")
# Control tokens of the chat templates this framework renders (ChatML, Llama 3, OLMo, Seed-OSS, Llama 2):
# inside a message they would forge turn boundaries once the template renders the row.
SPECIAL_TOKEN = re.compile(r"<\|[a-z_]+\|>|<seed:(?:bos|eos|think)>|\[/?INST\]|<</?SYS>>")


class DatasetError(ValueError):
    """A data file has a malformed row; the message names the file, the line and the fix."""


def _row_problem(row) -> Optional[tuple[str, str]]:
    """(problem, fix) for the first thing wrong with one parsed row, or None."""
    if not isinstance(row, dict):
        return f"the row is a JSON {type(row).__name__}, not an object", 'write each line as {"messages": [...]}'
    if "messages" not in row:
        return f"no `messages` key (keys: {sorted(row)})", 'put the conversation under "messages"'
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "`messages` is not a non-empty list", "give a list of turns, the last one from the assistant"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return (
                f"turn {i} is not an object with `role` and `content`",
                'write turns as {"role": ..., "content": ...}',
            )
        if m["role"] not in ROLES:
            return f"turn {i} has role {m['role']!r}", f"use one of {ROLES}"
        if not isinstance(m["content"], str):
            return f"turn {i} ({m['role']}) has {type(m['content']).__name__} content", "make `content` a string"
        if m["role"] == "system" and i != 0:
            return f"turn {i} is a system turn after the start", "put the system turn first, or remove it"
        token = SPECIAL_TOKEN.search(m["content"])
        if token:
            return (
                f"turn {i} ({m['role']}) contains the chat-template control token {token.group()!r}",
                "remove it: the chat template adds turn markers itself",
            )
    if msgs[-1]["role"] != "assistant":
        return f"the last turn is {msgs[-1]['role']!r}, not the assistant's", "end each row with the assistant's answer"
    if not msgs[-1]["content"].strip():
        return "the assistant's answer is empty", "remove the row or give it an answer"
    if not any(m["role"] == "user" for m in msgs):
        return "there is no user turn", "add the user's message before the assistant's answer"
    return None


def read_chat_file(path: str | Path) -> Iterator[tuple[int, list[dict]]]:
    """(line number, messages) for every row of a chat JSONL file; raises DatasetError on the first bad row."""
    path = Path(path)
    rows = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(
                    f"{where}: not valid UTF-8 ({e.reason} at byte {e.start}). Fix: re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(
                    f"{where}: not valid JSON ({e.msg}, column {e.colno}). Fix: one JSON object per line"
                ) from None
            problem = _row_problem(row)
            if problem:
                raise DatasetError(f"{where}: {problem[0]}. Fix: {problem[1]}")
            rows += 1
            yield lineno, row["messages"]
    if rows == 0:
        raise DatasetError(f'{path}: no rows. Fix: one {{"messages": [...]}} object per line')


def validate_chat_file(path: str | Path) -> int:
    """Checks every row; returns how many there are."""
    return sum(1 for _ in read_chat_file(path))


def load_chat_examples(
    path: str | Path, *, system: Optional[str], keep_own_system: bool, max_examples: Optional[int], seed: int
) -> list[dict]:
    """Rows as {"prompt": [...], "completion": [assistant turn], "meta"}; a seeded sample when capped.

    The loss is on the completion only. `system` replaces the rows' own system turns (None: no system turn);
    `keep_own_system` keeps a row's own system turn where it has one (system-prompt mode `task`).
    """
    rows = []
    for lineno, msgs in read_chat_file(path):
        own = msgs[0]["content"] if msgs[0]["role"] == "system" else None
        prompt = with_system(msgs[:-1], own if keep_own_system and own is not None else system)
        rows.append({"prompt": prompt, "completion": [msgs[-1]], "meta": {"line": lineno, "group": lineno}})
    if max_examples is not None and max_examples < len(rows):
        rows = random.Random(seed).sample(rows, max_examples)
    return rows
