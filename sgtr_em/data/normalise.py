"""Normalise a summary's surface form before it is paired, so the format does not give away the author.

Sources differ in format, not only in content: some end every line with a period and some never do,
some write "- " bullets or "1." numbering, Claude sometimes opens with "Summary:", and Seed-OSS often
wrote its reasoning instead of a summary ("Got it, let's tackle this...", "Let's count: 1.The 2.Willow").
`normalise_summary` returns the text in one format, or None when there is no summary to keep (empty, or
leaked reasoning); the pair builder skips such an article and counts it.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

THINK_BLOCK = re.compile(r"<(seed:think|think)>.*?</\1>", re.S)
OPEN_THINK = re.compile(r"<(?:seed:think|think)>")
# Openings and phrases of a model thinking aloud about the task rather than answering it.
REASONING = re.compile(
    r"^(got it|okay|ok,|alright|hmm|wait|let'?s |let me |first,? i |so,? |that works|that's better|is okay)"
    r"|\b(the user wants|i need to (?:summar|identify|pick|read)|that's \d+ words|let's count|did i miss"
    r"|is there a more concise)|\b(alternatively|maybe)[,:]?$",
    re.I,
)
BULLET = re.compile(r"^(?:[-*•–—]|\(?\d{1,2}[.)])\s+")
LABEL = re.compile(r"^(?:summary|highlights?)\s*:\s*", re.I)
PREAMBLE = re.compile(r"^(?:here(?:'s| is| are)\b[^\n]*|summary|highlights?)\s*:$", re.I)
QUOTES = {'"': '"', "“": "”", "'": "'"}


def _clean_line(line: str) -> str:
    line = " ".join(line.split())
    line = LABEL.sub("", BULLET.sub("", line))
    if len(line) > 1 and line[0] in QUOTES and line.endswith(QUOTES[line[0]]):
        line = line[1:-1].strip()
    return line.rstrip(".").rstrip()


def normalise_summary(text: Optional[str]) -> Optional[str]:
    """One summary in a neutral format (lines kept, markers and trailing periods dropped); None if unusable."""
    if text is None:
        return None
    text = THINK_BLOCK.sub("", text)
    if OPEN_THINK.search(text) or REASONING.search(text.strip()):
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines and PREAMBLE.match(lines[0].strip()):
        lines = lines[1:]
    lines = [c for c in map(_clean_line, lines) if c]
    return "\n".join(lines) or None


def normalise_all(summaries: Mapping[str, Optional[str]], enabled: bool = True) -> tuple[dict, dict]:
    """({id: text or None}, counts): every summary normalised (or only stripped when `enabled` is false)."""
    out, counts = {}, {"changed": 0, "unusable": 0}
    for key, text in summaries.items():
        new = normalise_summary(text) if enabled else ((text or "").strip() or None)
        out[key] = new
        counts["unusable"] += new is None
        counts["changed"] += new is not None and new != text
    return out, counts
