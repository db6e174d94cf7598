"""Sampling distributions: what `generate` draws the next token from, over the whole vocabulary (Hugging Face) or
over the first token's top logprobs only (the API and vLLM backends)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    import torch


def sampling_probs(
    logits: torch.Tensor, *, temperature: float, top_p: float = 1.0, top_k: Optional[int] = 0
) -> torch.Tensor:
    """The distribution of the token `generate` samples from these logits with these parameters, over the whole
    vocabulary: transformers' own warpers in its order (temperature, top-k, top-p); temperature 0 = the argmax."""
    import torch  # deferred, as transformers below: the API backend imports this module and rarely needs either

    logits = logits.float()
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


def sampled_from_top_probs(
    token_probs: dict, options: Sequence[str], *, temperature: float, top_p: float = 1.0, top_k: Optional[int] = 0
) -> dict:
    """API backends: the same from the first token's top logprobs only (the mass outside them is unknown, so this
    renormalises over them: an approximation, exact at temperature 0)."""
    import torch  # deferred (see sampling_probs)

    toks = sorted(token_probs.items(), key=lambda kv: -kv[1])
    if not toks:
        return {o: 0.0 for o in options}
    logits = torch.tensor([[math.log(max(p, 1e-300)) for _, p in toks]])
    p = sampling_probs(logits, temperature=temperature, top_p=top_p, top_k=top_k)[0]
    return {o: float(sum(p[j] for j, (t, _) in enumerate(toks) if t.strip() == o)) for o in options}
