"""EM datasets: `{"messages": [...]}` JSONL rows into prompt/completion conversations for TRL."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Optional

from ..io import read_jsonl
from .system_prompt import with_system


def load_em_examples(path: Path, *, system: Optional[str], keep_own_system: bool,
                     max_examples: Optional[int], seed: int) -> list[dict]:
    """Rows as {"prompt": [...], "completion": [assistant turn]}; a seeded sample when capped.

    The loss is on the completion only. `keep_own_system` keeps a row's own system turn (mode `task`).
    """
    rows = []
    for lineno, row in read_jsonl(path):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not msgs or msgs[-1].get("role") != "assistant":
            raise ValueError(f"{path}:{lineno}: expected {{\"messages\": [..., {{\"role\": \"assistant\", ...}}]}}")
        own = next((m["content"] for m in msgs if m["role"] == "system"), None)
        prompt = with_system(msgs[:-1], own if keep_own_system and own is not None else system)
        rows.append({"prompt": prompt, "completion": [msgs[-1]], "source_line": lineno})
    if max_examples is not None and max_examples < len(rows):
        rows = random.Random(seed).sample(rows, max_examples)
    return rows
