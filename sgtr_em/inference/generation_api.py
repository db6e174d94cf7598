"""The `openai` generation backend: the model under test behind an OpenAI-compatible endpoint (GPT-4.1, an
`ft:` model, a vLLM server). Calls are cached on disk like the judge's, so a rerun makes none."""

from __future__ import annotations

from typing import Optional, Sequence

from .api import ChatAPI, first_token_probs
from .sampling import sampled_from_top_probs


class OpenAIGenerator:
    def __init__(self, model: str, api_cfg: dict, *, top_logprobs: int = 20, cache_dir=None, usage=None):
        self.api = ChatAPI(model, api_cfg, cache_dir, usage)
        self.usage = self.api.usage
        self.top_logprobs = top_logprobs

    def generate(
        self,
        conversations: Sequence[Sequence[dict]],
        *,
        max_new_tokens: Optional[int],
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: Optional[int] = None,
        seed: int = 0,
        desc: str = "generate",
    ) -> list[str]:
        """One answer per conversation; each request carries its own seed, so repeated prompts are distinct samples.
        (The OpenAI API has no top_k: a protocol's top-k applies to open models only.) `max_new_tokens` None: no
        `max_tokens` in the request (the API's own limit)."""
        cap = {} if max_new_tokens is None else {"max_tokens": max_new_tokens}
        requests = [
            {
                "messages": list(c),
                **cap,
                "temperature": temperature,
                "top_p": top_p,
                "seed": seed * 100_003 + i,
            }
            for i, c in enumerate(conversations)
        ]
        return [(r["content"] or "").strip() for r in self.api.complete(requests, desc=desc)]

    def option_probs(
        self,
        conversations: Sequence[Sequence[dict]],
        options: Sequence[str],
        desc: str = "score options",
        max_new_tokens: int = 1,
        sampling: Optional[dict] = None,
    ) -> list[dict]:
        """Option probabilities from the first token's top logprobs (an option outside them gets 0; " A" counts
        as "A"); where the server gives no logprobs, `probs` is None and `text` is the greedy answer."""
        requests = [
            {
                "messages": list(c),
                "max_tokens": max_new_tokens,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
                "seed": 0,
            }
            for c in conversations
        ]
        out = []
        for r in self.api.complete(requests, desc=desc):
            token_probs: Optional[dict] = first_token_probs(r)
            if token_probs is None:
                out.append({"probs": None, "top_token": None, "text": (r["content"] or "").strip()})
                continue
            probs = {o: sum(p for t, p in token_probs.items() if t.strip() == o) for o in options}
            out.append(
                {
                    "probs": probs,
                    "top_token": max(token_probs, key=token_probs.get),
                    "text": (r["content"] or "").strip(),
                }
            )
            if sampling:
                out[-1]["sampled_probs"] = sampled_from_top_probs(token_probs, options, **sampling)
        return out
