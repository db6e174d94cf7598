"""Chat completions against any OpenAI-compatible endpoint: bounded concurrency paced by the server's rate limits
(token buckets, sgtr_em/inference/rate_limit.py), the SDK's retries with backoff, an on-disk cache (a rerun makes
no calls), and token/cost accounting.

The API key is read from the environment variable the config names, never from a config; a local server
(vLLM, `python -m sgtr_em.openai_server`) needs none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tqdm import tqdm

from ..openai_limits import estimate_tokens
from .cache import DiskCache, Usage
from .rate_limit import RateLimiter

log = logging.getLogger(__name__)
OPENAI_URL = "https://api.openai.com/v1"


@dataclass
class ApiConfig:
    """An OpenAI-compatible endpoint (OpenAI, vLLM, the project's own `python -m sgtr_em.openai_server`): the schema of
    judge.api and eval.generation.api, and the endpoint half of the `openai` block (OpenAIConfig extends it)."""

    base_url: Optional[str] = None  # null: $OPENAI_BASE_URL, else https://api.openai.com/v1
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this environment variable, never from a config
    max_concurrency: int = 16  # requests in flight at once
    # Rate limits, paced on the client (sgtr_em/inference/rate_limit.py): null = the server's, learned from its
    # x-ratelimit-* headers; a number caps them further (e.g. a share of an organisation's limit shared by jobs)
    requests_per_minute: Optional[float] = None
    tokens_per_minute: Optional[float] = None
    max_retries: int = 8  # the SDK's retries with exponential backoff on 408/409/429/5xx, timeouts, connection errors
    timeout_s: float = 60.0
    input_usd_per_mtok: float = 0.0  # prices, for the cost accounting in metrics.json
    output_usd_per_mtok: float = 0.0
    cache: bool = True  # on-disk cache keyed by model + messages + parameters: a rerun makes no calls


API_KEYS = tuple(f.name for f in dataclasses.fields(ApiConfig))


def api_key(api_cfg: dict, base_url: Optional[str]) -> str:
    key = os.environ.get(api_cfg["api_key_env"])
    if key:
        return key
    if base_url is None or base_url.startswith(OPENAI_URL):
        raise RuntimeError(
            f"The OpenAI API needs a key: set the environment variable {api_cfg['api_key_env']} "
            "(keys are never read from a config), or point api.base_url at a server that needs none"
        )
    return "EMPTY"  # local servers ignore it


def parse_completion(resp) -> dict:
    """What we keep of a chat completion: text, first-token top logprobs per position, finish reason, usage."""
    choice = resp.choices[0]
    positions = None
    if choice.logprobs is not None and choice.logprobs.content is not None:
        positions = [
            [{"token": t.token, "logprob": t.logprob} for t in (pos.top_logprobs or [])]
            for pos in choice.logprobs.content
        ]
    usage = resp.usage
    return {
        "content": choice.message.content,
        "top_logprobs": positions,
        "finish_reason": choice.finish_reason,
        "usage": {
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
        },
    }


class ChatAPI:
    def __init__(self, model: str, api_cfg: dict, cache_dir=None, usage: Optional[Usage] = None):
        self.model = model
        self.cfg = api_cfg
        self.base_url = api_cfg["base_url"] or os.environ.get("OPENAI_BASE_URL")
        self.key = api_key(api_cfg, self.base_url)
        self.cache = DiskCache(cache_dir if api_cfg["cache"] else None)
        self.prices = (api_cfg["input_usd_per_mtok"], api_cfg["output_usd_per_mtok"])
        self.usage = usage if usage is not None else Usage()

    def complete(self, requests: Sequence[dict], desc: str = "api") -> list[dict]:
        """One parsed completion per request (a dict of chat.completions.create arguments besides `model`)."""
        return asyncio.run(self._complete_all(list(requests), desc))

    async def _complete_all(self, requests: list[dict], desc: str) -> list[dict]:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient  # deferred: the SDK takes ~1 s to import

        sem = asyncio.Semaphore(self.cfg["max_concurrency"])
        limiter = RateLimiter(self.cfg.get("requests_per_minute"), self.cfg.get("tokens_per_minute"))

        async def observe(response) -> None:  # every HTTP answer, the SDK's retried attempts included
            tokens = 0
            if response.status_code >= 400:  # a retry will follow: what it costs
                try:
                    tokens = estimate_tokens(json.loads(response.request.content or b"{}"))
                except (ValueError, AttributeError):
                    pass
            limiter.observe(response.status_code, response.headers, tokens)

        http = DefaultAsyncHttpxClient(event_hooks={"response": [observe]})
        try:
            with tqdm(total=len(requests), desc=desc, unit="call") as bar:
                async with AsyncOpenAI(
                    api_key=self.key,
                    base_url=self.base_url,
                    max_retries=self.cfg["max_retries"],
                    timeout=self.cfg["timeout_s"],
                    http_client=http,
                ) as client:
                    return await asyncio.gather(*(self._complete_one(client, r, sem, limiter, bar) for r in requests))
        finally:
            self.usage.rate_limited += limiter.rate_limited
            self.usage.rate_wait_s += limiter.waited_s
            if limiter.rate_limited:
                log.info("%s: %d answers were 429 (rate limited)", desc, limiter.rate_limited)

    async def _complete_one(self, client, request: dict, sem: asyncio.Semaphore, limiter: RateLimiter, bar) -> dict:
        key = DiskCache.key({"base_url": self.base_url, "model": self.model, **request})
        if (hit := self.cache.get(key)) is not None:
            self.usage.cache_hits += 1
            bar.update()
            return hit
        async with sem:
            await limiter.acquire(estimate_tokens(request))
            try:
                resp = await client.chat.completions.create(model=self.model, **request)
            except Exception as e:  # the SDK has retried already
                raise RuntimeError(
                    f"{self.base_url or OPENAI_URL}: chat completion for model {self.model!r} failed "
                    f"after {self.cfg['max_retries']} retries: {e}"
                ) from e
            finally:
                limiter.done_probing()
        out = parse_completion(resp)
        self.usage.add_call(out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"], self.prices)
        self.cache.put(key, out)
        bar.update()
        return out


def first_token_probs(parsed: dict) -> Optional[dict[str, float]]:
    """{token text: probability} of the first answer token's top logprobs (None when the server gave none)."""
    positions = parsed.get("top_logprobs")
    if not positions:
        return None
    probs: dict[str, Any] = {}
    for t in positions[0]:
        probs[t["token"]] = probs.get(t["token"], 0.0) + math.exp(t["logprob"])
    return probs
