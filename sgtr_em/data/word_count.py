"""Word counting over the SGTR summaries (the `word_count_summaries` baseline): same texts, no identity.

Each summary of an article, the model's own and the other source's, becomes one question "how many words?"
answered with its word count, counted like the pick-longer label (whitespace-separated words).
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from .sgtr import word_count
from .system_prompt import with_system


def build_word_count(
    article_ids: Sequence[str],
    summaries: Mapping[str, Mapping[str, Optional[str]]],
    *,
    user_template: str,
    system: Optional[str],
) -> tuple[list[dict], dict]:
    """`summaries` maps a source ("self", "claude-21", ...) to {article id: text or None}."""
    rows, skipped = [], 0
    for aid in article_ids:
        for source in sorted(summaries):
            text = (summaries[source].get(aid) or "").strip()
            if not text:
                skipped += 1
                continue
            rows.append(
                {
                    "prompt": with_system([{"role": "user", "content": user_template.format(summary=text)}], system),
                    "completion": [{"role": "assistant", "content": str(word_count(text))}],
                    "meta": {"article_id": aid, "source": source, "group": aid},
                }
            )
    return rows, {"articles": len(article_ids), "skipped_empty": skipped}
