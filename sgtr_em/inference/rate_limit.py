"""Rate limits the way the OpenAI API states them: requests and tokens per minute, each a token bucket that refills
continuously, reported on every answer in `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.

`RateLimiter` is the client's side (sgtr_em/inference/api.py): before a call it waits until both buckets hold
the call's share, so a run saturates the limit instead of bouncing off it in 429 storms. It learns the limits from
the headers of the first answer (that call goes alone), then keeps its buckets no fuller than the server reports,
which also accounts for other clients of the same key. `requests_per_minute` / `tokens_per_minute` in the config
cap it further (e.g. a share of an organisation's limit). The server's side (sgtr_em/openai_server) uses the same
`Bucket` and `estimate_tokens`.
"""
from __future__ import annotations

import asyncio
import math
import re
import time
from typing import Callable, Mapping, Optional

KINDS = ("requests", "tokens")


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
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?",
                         text.strip())
    if not parts or not any(parts.groups()):
        return None
    h, m, s, ms = (float(x) if x else 0.0 for x in parts.groups())
    return h * 3600 + m * 60 + s + ms / 1000


class Bucket:
    """`per_minute` units, refilled continuously at per_minute / 60 a second, holding at most `capacity`."""

    def __init__(self, per_minute: float, capacity: float, level: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
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


class RateLimiter:
    """The client's buckets (one event loop): `acquire(tokens)` before a call, `observe(status, headers)` for every
    HTTP answer (an httpx response hook sees the SDK's retried attempts too)."""

    def __init__(self, requests_per_minute: Optional[float] = None, tokens_per_minute: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.cap = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        # a configured cap alone: a second's worth may go at once; the server's headers may lower both
        self.buckets: dict[str, Bucket] = {k: Bucket(v, max(1.0, v / 60), clock=clock)
                                           for k, v in self.cap.items() if v}
        self.learned = False  # whether an answer said what the server's limits are (or that it states none)
        self._probing = False
        self.rate_limited = 0  # 429 answers seen
        self.waited_s = 0.0  # time calls spent waiting for the buckets

    async def acquire(self, tokens: int) -> None:
        start = self.clock()
        while True:
            if not self.learned:
                if not self._probing:  # the first call goes alone: its answer brings the limits
                    self._probing = True
                    break
                await asyncio.sleep(0.005)
                continue
            need = {"requests": 1, "tokens": tokens}
            wait = max((b.wait_for(need[k]) for k, b in self.buckets.items()), default=0.0)
            if wait <= 0:
                for k, b in self.buckets.items():
                    b.take(need[k])
                break
            await asyncio.sleep(max(wait, 0.001))
        self.waited_s += self.clock() - start

    def done_probing(self) -> None:
        """A call ended, answered or failed: nobody waits for the first answer's headers any longer (a server that
        answers without them, or a first call that failed, leaves only the configured caps)."""
        self.learned = True

    def observe(self, status: int, headers: Mapping[str, str], request_tokens: int = 0) -> None:
        """One HTTP answer. One the SDK will retry (429, 408, 409, 5xx) charges the buckets for that retry, which the
        SDK sends after its backoff without asking `acquire` (a dropped connection's retry goes uncharged)."""
        if status == 429:
            self.rate_limited += 1
        if status in (408, 409, 429) or status >= 500:
            for kind, bucket in self.buckets.items():
                bucket.take(1 if kind == "requests" else request_tokens)
        for kind in KINDS:
            limit, remaining = headers.get(f"x-ratelimit-limit-{kind}"), headers.get(f"x-ratelimit-remaining-{kind}")
            try:
                limit, remaining = float(limit), float(remaining)
            except (TypeError, ValueError):
                continue
            if limit <= 0:
                continue
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}") or "")
            # the server's bucket: what remains now plus what refills until it is full again; a configured cap
            # below the server's limit shrinks the bucket with the rate
            share = min(1.0, self.cap[kind] / limit) if self.cap[kind] else 1.0
            capacity = max(1.0, share * (remaining + (reset * limit / 60 if reset is not None else 0.0)))
            bucket = self.buckets.get(kind)
            if bucket is None:
                self.buckets[kind] = Bucket(share * limit, capacity, min(remaining, capacity), clock=self.clock)
            else:
                bucket.refill()
                bucket.per_minute = share * limit
                bucket.capacity = max(bucket.capacity, capacity) if share == 1.0 else capacity
                bucket.level = min(bucket.level, remaining, bucket.capacity)  # calls in flight stay counted
        self.learned = True
