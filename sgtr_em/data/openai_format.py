"""The OpenAI fine-tuning file: a stage's examples in the chat format, and the API's rules checked before upload.

Each line is `{"messages": [...]}`; the stage's prompt turns come first and its completion (the assistant's
answer) last. The loss is on the completion only, as in the open-model stages: an assistant turn inside the
prompt gets `"weight": 0`. `validate_ft_file` checks every line against the documented rules of the
fine-tuning API (OpenAI's "Preparing your dataset" guide and its chat-format validation cookbook) and fails on
the first bad one with `<file>:<line>: [<rule>] <problem>. Fix: <how>`, so a bad file costs no upload and no job.

Token counts are an estimate (no tokenizer of OpenAI's is available offline): UTF-8 bytes / 3 per content plus
4 tokens per message, which overcounts English (about 4 bytes per token), so the limit is checked on the safe
side. The job reports the exact count (`trained_tokens`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..io import atomic_write_text

MIN_EXAMPLES = 10  # the API refuses a training file with fewer examples
MAX_FILE_BYTES = 512 * 1024**2  # the Files API's limit per file
ROLES = ("system", "developer", "user", "assistant")  # tool / function turns are not produced by this framework
TOP_KEYS = {"messages"}
MESSAGE_KEYS = {"role", "content", "name", "weight"}
PROMPT_ROLES = ("system", "developer")  # instructions: only before the conversation starts


class FineTuningFileError(ValueError):
    """A fine-tuning file breaks one of the API's rules; the message names the file, the line and the rule."""

    def __init__(self, where: str, rule: str, problem: str, fix: str):
        self.where, self.rule = where, rule
        super().__init__(f"{where}: [{rule}] {problem}. Fix: {fix}")


def ft_row(row: dict) -> dict:
    """A stage example ({"prompt", "completion"}) as a fine-tuning line; prompt answers are not trained on."""
    prompt = [{**m, "weight": 0} if m["role"] == "assistant" else dict(m) for m in row["prompt"]]
    return {"messages": prompt + [dict(m) for m in row["completion"]]}


def example_tokens(messages: Iterable[dict]) -> int:
    """An upper-leaning estimate of a fine-tuning example's tokens, held against the model's per-example limit (see the
    module doc); the rate limiter's `estimate_tokens` is another count: what a request costs of tokens per minute."""
    return 3 + sum(4 + math.ceil(len((m.get("content") or "").encode("utf-8")) / 3) for m in messages)


def row_tokens(row: dict) -> int:
    """Estimated tokens of a stage example (data/build.py drops those over the limit)."""
    return example_tokens(row["prompt"] + row["completion"])


def _message_problem(i: int, m) -> tuple[str, str, str] | None:
    if not isinstance(m, dict) or "role" not in m:
        return "message_keys", f"message {i} is not an object with a `role`", 'write {"role": ..., "content": ...}'
    unknown = set(m) - MESSAGE_KEYS
    if unknown:
        return (
            "message_keys",
            f"message {i} has unrecognised keys {sorted(unknown)}",
            f"keep only {sorted(MESSAGE_KEYS)}",
        )
    if m["role"] not in ROLES:
        return "roles", f"message {i} has role {m['role']!r}", f"use one of {ROLES}"
    if "content" not in m or m["content"] is None:
        return "content", f"message {i} ({m['role']}) has no content", "give every message a text `content`"
    if not isinstance(m["content"], str):
        return "content", f"message {i} ({m['role']}) has {type(m['content']).__name__} content", "make it a string"
    if "weight" in m:
        if m["role"] != "assistant":
            return "weight", f"message {i} ({m['role']}) has a weight", "only assistant messages take `weight`"
        if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
            return "weight", f"message {i} has weight {m['weight']!r}", "use 0 (not trained on) or 1"
    if "name" in m and not isinstance(m["name"], str):
        return "message_keys", f"message {i} has a non-string `name`", "make `name` a string or drop it"
    return None


def _row_problem(row, max_tokens: int) -> tuple[str, str, str] | None:
    """(rule, problem, fix) for the first thing wrong with one parsed line, or None."""
    if not isinstance(row, dict):
        return "format", f"the line is a JSON {type(row).__name__}, not an object", 'write {"messages": [...]}'
    if "messages" not in row:
        return "format", f"no `messages` key (keys: {sorted(row)})", 'put the conversation under "messages"'
    if set(row) - TOP_KEYS:
        return "format", f"unrecognised keys {sorted(set(row) - TOP_KEYS)}", 'keep only "messages"'
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        return "format", "`messages` is not a non-empty list", "give the conversation as a list of messages"
    for i, m in enumerate(msgs):
        problem = _message_problem(i, m)
        if problem:
            return problem
        if m["role"] in PROMPT_ROLES and any(p["role"] not in PROMPT_ROLES for p in msgs[:i]):
            return (
                "roles",
                f"message {i} is a {m['role']} message after the conversation started",
                "put system/developer messages first",
            )
    if msgs[-1]["role"] != "assistant":
        return (
            "assistant_last",
            f"the last message is {msgs[-1]['role']!r}",
            "end every example with the assistant's answer",
        )
    if msgs[-1].get("weight", 1) == 0:
        return "weight", "the final assistant message has weight 0: nothing is trained", "give it weight 1 (or none)"
    if not msgs[-1]["content"].strip():
        return "content", "the final assistant message is empty", "remove the example or give it an answer"
    if not any(m["role"] == "user" for m in msgs):
        return "roles", "there is no user message", "add the user's message before the assistant's answer"
    n = example_tokens(msgs)
    if n > max_tokens:
        return (
            "token_limit",
            f"about {n} tokens, over the model's {max_tokens} per example",
            "shorten or drop the example (the API would truncate it, cutting off the answer)",
        )
    return None


@dataclass
class FileReport:
    examples: int = 0
    estimated_tokens: int = 0  # one epoch
    max_example_tokens: int = 0
    bytes: int = 0
    assistant_messages_trained: int = 0
    per_role: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def validate_ft_file(path: str | Path, *, max_example_tokens: int, min_examples: int = MIN_EXAMPLES) -> FileReport:
    """Checks every line of a fine-tuning file; raises FineTuningFileError at the first bad one."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FineTuningFileError(
            str(path), "file_size", f"{size} bytes, over the API's {MAX_FILE_BYTES}", "train on fewer examples"
        )
    report = FileReport(bytes=size)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FineTuningFileError(
                    where, "encoding", f"not UTF-8 ({e.reason})", "write the file as UTF-8"
                ) from None
            if not line.strip():
                raise FineTuningFileError(where, "format", "an empty line", "one JSON object per line, no blank lines")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise FineTuningFileError(
                    where, "json", f"not valid JSON ({e.msg}, column {e.colno})", "one JSON object per line"
                ) from None
            problem = _row_problem(row, max_example_tokens)
            if problem:
                raise FineTuningFileError(where, *problem)
            n = example_tokens(row["messages"])
            report.examples += 1
            report.estimated_tokens += n
            report.max_example_tokens = max(report.max_example_tokens, n)
            report.assistant_messages_trained += sum(
                m["role"] == "assistant" and m.get("weight", 1) == 1 for m in row["messages"]
            )
            for m in row["messages"]:
                report.per_role[m["role"]] = report.per_role.get(m["role"], 0) + 1
    if report.examples < min_examples:
        raise FineTuningFileError(
            str(path),
            "min_examples",
            f"{report.examples} examples, fewer than the API's minimum of {min_examples}",
            "train on more examples (e.g. intervention.num_examples)",
        )
    return report


def write_ft_file(rows: Iterable[dict], path: Path) -> None:
    """The stage's examples as a fine-tuning file (atomic; compact JSON, one line each)."""
    atomic_write_text(path, "".join(json.dumps(ft_row(r), ensure_ascii=False) + "\n" for r in rows))
