"""A model stand-in for load tests of the HTTP path (rate limits, retries, concurrency): `python -m
sgtr_em.openai_server --load-test`. A real model's cost per call (SmolLM2 judges one answer in ~0.5 s on two CPU
cores) would hide what a client does at hundreds of calls a second; this engine answers at once.

Every chat request gets one answer token, a number 0..100, with `top_logprobs` numbers around it whose
probabilities come from a hash of the messages: the same request, the same answer, as a temperature-0 judge.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time

from .chat import MAX_TOP_LOGPROBS


class LoadTestEngine:
    def __init__(self, name: str = "load-test"):
        self.name, self.path = name, None
        self._ids = itertools.count(1)

    def complete(self, body: dict) -> dict:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list of {role, content} objects")
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
        centre, top = digest[0] * 100 // 255, min(int(body.get("top_logprobs") or 0), MAX_TOP_LOGPROBS)
        # numbers nearest the centre first, probability falling by half a nat a step
        numbers = sorted(range(101), key=lambda k: (abs(k - centre), k))[: max(top, 1)]
        weights = [math.exp(-0.5 * abs(k - centre)) for k in numbers]
        log_z = math.log(sum(math.exp(-0.5 * abs(k - centre)) for k in range(101)))
        entries = [
            {"token": str(k), "logprob": math.log(w) - log_z, "bytes": list(str(k).encode())}
            for k, w in zip(numbers, weights)
        ]
        logprobs = None
        if body.get("logprobs"):
            logprobs = {"content": [{**entries[0], "top_logprobs": entries[:top]}], "refusal": None}
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": str(centre), "refusal": None},
                    "logprobs": logprobs,
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
        }
