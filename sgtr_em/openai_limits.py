"""The OpenAI API's rate-limit rules, as its documentation states them: requests and tokens per minute, each a token
bucket that refills continuously; what a chat request counts against the tokens limit; the duration format of the
`x-ratelimit-reset-*` headers. Both sides follow them: the client (sgtr_em/inference/rate_limit.py) and the local
server (sgtr_em/openai_server/server.py), neither importing the other.
"""

from __future__ import annotations

import math
import re
import time
from typing import Callable, Mapping, Optional


def estimate_tokens(body: Mapping) -> int:
    """What a chat request counts against a tokens-per-minute limit: its prompt (about 4 characters a token, as
    OpenAI's own estimate) and the completion tokens it may produce (max_tokens x n), as OpenAI counts them."""
    chars = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts
            chars += sum(len(p.get("text") or "") for p in content if isinstance(p, Mapping))
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return math.ceil(chars / 4) + int(completion) * int(body.get("n") or 1)


def format_duration(seconds: float) -> str:
    """The API's reset format: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{seconds % 60:.0f}s"


def parse_duration(text: str) -> Optional[float]:
    """Seconds in "20ms", "1.5s", "6m0s", "1h2m3s"; None when it is none of these."""
    parts = re.fullmatch(
        r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?", text.strip()
    )
    if not parts or not any(parts.groups()):
        return None
    h, m, s, ms = (float(x) if x else 0.0 for x in parts.groups())
    return h * 3600 + m * 60 + s + ms / 1000


class Bucket:
    """`per_minute` units, refilled continuously at per_minute / 60 a second, holding at most `capacity`."""

    def __init__(
        self,
        per_minute: float,
        capacity: float,
        level: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if per_minute <= 0 or capacity <= 0:
            raise ValueError(f"a rate limit needs a positive rate and capacity, not {per_minute}/min, {capacity}")
        self.per_minute, self.capacity, self.clock = per_minute, capacity, clock
        self.level, self.t = (capacity if level is None else level), clock()

    @property
    def rate(self) -> float:
        return self.per_minute / 60

    def refill(self) -> float:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        return self.level

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` fits (a call larger than the bucket waits for a full one, then overdraws it)."""
        need = min(amount, self.capacity) - self.refill()
        return max(0.0, need / self.rate)

    def take(self, amount: float) -> None:
        self.refill()
        self.level -= amount

    def time_to_full(self) -> float:
        return max(0.0, (self.capacity - self.refill()) / self.rate)
