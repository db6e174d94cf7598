"""The judge behind an OpenAI-compatible endpoint (GPT-4o by default; vLLM or the project's server by base URL).

0-100 scores: Betley et al.'s one-token call (max_tokens 1, temperature 0, logprobs, top_logprobs 20, seed 0);
the tokens that are integers 0..100 give p(k), score = sum k p(k) / sum p(k), none below the mass threshold.
This needs a judge whose tokenizer makes every integer 0..100 one token (OpenAI's do; check before switching).
Labels (identity, in-domain): a short greedy answer, matched to the closed label set.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from ..inference.api import ChatAPI, first_token_probs
from .judgement import Choice, Judgement, parse_text_score, score_from_number_probs

NUMBERS = list(range(101))


def number_probs_from_top_logprobs(token_probs: Optional[dict[str, float]]) -> list[float]:
    """p(k) for k = 0..100 from the first token's {token: probability}; tokens such as " 85" count as 85."""
    probs = [0.0] * len(NUMBERS)
    for token, p in (token_probs or {}).items():
        text = token.strip()
        if text.isascii() and text.isdigit() and int(text) <= 100:
            probs[int(text)] += p
    return probs


def match_label(text: Optional[str], labels: Sequence[str]) -> Optional[str]:
    """The label the answer names: equal ignoring case, spaces and punctuation, else the one label it starts with."""

    def norm(s: str) -> str:
        return re.sub(r"[^0-9a-z]+", " ", s.lower()).strip()

    t = norm(text or "")
    if not t:
        return None
    exact = [label for label in labels if norm(label) == t]
    if exact:
        return exact[0]
    starts = [label for label in labels if t.startswith(norm(label) + " ")]
    return starts[0] if len(starts) == 1 else None


class OpenAIJudge:
    def __init__(self, judge_cfg: dict, model: Optional[str] = None, cache_dir=None):
        """`model`: the judge's model (make_judge passes eval_input.json's judge_model_path); alone, judge.model."""
        self.cfg, self.model = judge_cfg, model or judge_cfg["model"]
        self.min_number_mass = judge_cfg["min_number_mass"]
        self.api = ChatAPI(self.model, judge_cfg["api"], cache_dir)
        self.usage = self.api.usage

    def describe(self) -> dict:
        return {
            "backend": "openai",
            "model": self.model,
            "base_url": self.api.base_url,
            "scoring": self.cfg.get("scoring", "logprob"),
            "temperature": self.cfg["temperature"],
            "min_number_mass": self.min_number_mass,
            "top_logprobs": self.cfg["top_logprobs"],
        }

    def _request(self, prompt: str, max_tokens: int) -> dict:
        req = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": self.cfg["temperature"],
            "logprobs": True,
            "top_logprobs": self.cfg["top_logprobs"],
        }
        if self.cfg["seed"] is not None:
            req["seed"] = self.cfg["seed"]
        return req

    def score(self, prompts: Sequence[str], desc: str = "judge") -> list[Judgement]:
        if self.cfg.get("scoring", "logprob") == "text":  # the paper's: a short answer, its first number
            requests = [
                {
                    "messages": [{"role": "user", "content": p}],
                    "max_tokens": self.cfg["max_score_tokens"],
                    "temperature": self.cfg["temperature"],
                    **({"seed": self.cfg["seed"]} if self.cfg["seed"] is not None else {}),
                }
                for p in prompts
            ]
            return [parse_text_score(r["content"]) for r in self.api.complete(requests, desc=desc)]
        responses = self.api.complete([self._request(p, 1) for p in prompts], desc=desc)
        return [
            score_from_number_probs(number_probs_from_top_logprobs(first_token_probs(r)), NUMBERS, self.min_number_mass)
            for r in responses
        ]

    def choose(self, prompts: Sequence[str], labels: Sequence[str], desc: str = "judge") -> list[Choice]:
        responses = self.api.complete([self._request(p, self.cfg["max_label_tokens"]) for p in prompts], desc=desc)
        return [Choice(match_label(r["content"], labels), None, r["content"]) for r in responses]
