"""Rate limits the way the OpenAI API states them: requests and tokens per minute, each a token bucket that refills
continuously, reported on every answer in `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.

`RateLimiter` is the client's side (sgtr_em/inference/api.py): before a call it waits until both buckets hold
the call's share, so a run saturates the limit instead of bouncing off it in 429 storms. It learns the limits from
the headers of the first answer (that call goes alone), then keeps its buckets no fuller than the server reports,
which also accounts for other clients of the same key. `requests_per_minute` / `tokens_per_minute` in the config
cap it further (e.g. a share of an organisation's limit). The API's own rules (the bucket, how a request's tokens are
counted, the reset format) are sgtr_em/openai_limits.py, which the local server (sgtr_em/openai_server) follows too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Mapping, Optional

from ..openai_limits import Bucket, parse_duration

KINDS = ("requests", "tokens")
JITTER_S = 0.05  # the refill the client keeps in hand at the limit (RateLimiter.acquire)


class RateLimiter:
    """The client's buckets (one event loop): `acquire(tokens)` before a call, `observe(status, headers)` for every
    HTTP answer (an httpx response hook sees the SDK's retried attempts too)."""

    def __init__(
        self,
        requests_per_minute: Optional[float] = None,
        tokens_per_minute: Optional[float] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.cap = {"requests": requests_per_minute, "tokens": tokens_per_minute}
        # a configured cap alone: a second's worth may go at once; the server's headers may lower both
        self.buckets: dict[str, Bucket] = {
            k: Bucket(v, max(1.0, v / 60), clock=clock) for k, v in self.cap.items() if v
        }
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
            # JITTER_S of refill stays in hand: calls reach the server later than we take them, and not evenly (the
            # connection pool, a busy event loop), so at the brim a bunched arrival would find its bucket empty
            wait = max((b.wait_for(need[k] + JITTER_S * b.rate) for k, b in self.buckets.items()), default=0.0)
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
            if reset is not None:  # the header is rounded ("20ms" up, "1.5s" to 3 digits): never learn a bucket
                reset = max(0.0, reset - max(0.001, 0.005 * reset))  # larger than the server's (a 429 at the brim)
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
