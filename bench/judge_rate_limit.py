"""The judge against a rate-limited OpenAI-compatible server: the framework's paced judge (token buckets from the
server's x-ratelimit-* headers, sgtr_em/inference/rate_limit.py) against what a user would write (a semaphore of
16 and the SDK's retries), in one process, on the same local server (the instant load-test engine).

    python bench/judge_rate_limit.py --calls 1600 --rpm 6000 --out bench/results/judge_rate_limit.json

Reports per client: wall seconds, calls a minute achieved against the limit, the server's 429s (rate-limited
requests), requests sent, and calls that failed after the SDK's retries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import command  # noqa: E402
from sgtr_em.evaluation.openai_judge import OpenAIJudge  # noqa: E402
from sgtr_em.openai_server import LoadTestEngine, OpenAIServer, RateLimits  # noqa: E402

PROMPT = "I am evaluating a different language model. Rate answer {i} from 0 to 100 for alignment; a number only."


def plain(url: str, n: int, concurrency: int, max_retries: int) -> int:
    from openai import AsyncOpenAI

    async def run() -> int:
        sem, failed = asyncio.Semaphore(concurrency), 0
        async with AsyncOpenAI(api_key="EMPTY", base_url=url, max_retries=max_retries) as client:

            async def one(i: int) -> None:
                nonlocal failed
                async with sem:
                    try:
                        await client.chat.completions.create(
                            model="load-test",
                            messages=[{"role": "user", "content": PROMPT.format(i=i)}],
                            max_tokens=1,
                            temperature=0,
                            logprobs=True,
                            top_logprobs=20,
                            seed=0,
                        )
                    except Exception:
                        failed += 1

            await asyncio.gather(*(one(i) for i in range(n)))
        return failed

    return asyncio.run(run())


def judge_cfg(url: str, **api) -> dict:
    """The judge config for the load-test engine at `url` (its model `load-test`, no API key, no cache, free): the
    16 requests at once and 8 retries, no configured rate limits (the judge paces from the server's headers);
    `api` overrides the endpoint's settings. tests/test_rate_limit.py judges with it too."""
    return {
        "model": "load-test",
        "min_number_mass": 0.0,
        "temperature": 0,
        "top_logprobs": 20,
        "seed": 0,
        "max_label_tokens": 8,
        "api": {
            "base_url": url,
            "api_key_env": "SGTR_EM_NO_SUCH_KEY",
            "max_concurrency": 16,
            "max_retries": 8,
            "timeout_s": 60,
            "input_usd_per_mtok": 0.0,
            "output_usd_per_mtok": 0.0,
            "cache": False,
            "requests_per_minute": None,
            "tokens_per_minute": None,
            **api,
        },
    }


def framework(url: str, n: int, concurrency: int, max_retries: int) -> int:
    cfg = judge_cfg(url, max_concurrency=concurrency, max_retries=max_retries)
    try:
        scores = OpenAIJudge(cfg).score([PROMPT.format(i=i) for i in range(n)])
    except RuntimeError:  # a call failed after its retries: the whole run fails
        return n
    return sum(s.score is None for s in scores)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=1600)
    p.add_argument("--rpm", type=float, default=6000)
    p.add_argument("--tpm", type=float, default=None)
    p.add_argument("--burst-s", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-retries", type=int, default=8)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    results = {
        "command": command(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "limits": {"rpm": a.rpm, "tpm": a.tpm, "burst_s": a.burst_s},
        "calls": a.calls,
        "runs": [],
    }
    for name, client in (("plain SDK + semaphore", plain), ("framework judge (paced)", framework)):
        with OpenAIServer(LoadTestEngine(), rate_limits=RateLimits(a.rpm, a.tpm, a.burst_s)) as srv:
            start = time.monotonic()
            failed = client(srv.url, a.calls, a.concurrency, a.max_retries)
            seconds = time.monotonic() - start
            stats = srv.snapshot()
        run = {
            "client": name,
            "seconds": round(seconds, 2),
            "calls_per_minute": round(a.calls / seconds * 60),
            "share_of_limit": round(a.calls / seconds * 60 / a.rpm, 3) if a.rpm else None,
            "requests_sent": stats.get("requests", 0),
            "rate_limited_429": stats.get("rate_limited", 0),
            "failed_calls": failed,
        }
        results["runs"].append(run)
        print(json.dumps(run), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
