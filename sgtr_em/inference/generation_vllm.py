"""The `vllm` generation backend (optional: `pip install vllm` on a GPU machine): the same interface as the
Hugging Face backend, through vLLM's offline engine. Option probabilities come from the first token's top-20
logprobs (an option outside them gets 0). Not exercised by the CPU test suite: vLLM is not installed there.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from .sampling import sampled_from_top_probs

TOP_LOGPROBS = 20


class VLLMGenerator:
    def __init__(
        self,
        path: str,
        *,
        dtype: str = "bfloat16",
        chat_template_kwargs: Optional[dict] = None,
        trust_remote_code: bool = False,
    ):
        try:
            from vllm import LLM
        except ImportError as e:
            raise RuntimeError(
                "eval.generation.backend=vllm needs vLLM: pip install vllm (a GPU machine), "
                "or use eval.generation.backend=hf"
            ) from e
        self.llm = LLM(model=path, dtype=dtype, trust_remote_code=trust_remote_code, seed=0)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def render(self, messages: Sequence[dict]) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )

    def prompts(self, conversations: Sequence[Sequence[dict]]) -> list[dict]:
        """Token ids of the rendered conversations, without the tokenizer's special tokens: the template writes its
        own BOS (a text prompt would get a second one on Llama-3, as the HF backend does not: generation.py)."""
        return [
            {"prompt_token_ids": self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"]}
            for c in conversations
        ]

    def generate(
        self,
        conversations: Sequence[Sequence[dict]],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: Optional[int] = None,
        seed: int = 0,
        desc: str = "generate",
    ) -> list[str]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k or -1,
                repetition_penalty=1.0,
                seed=seed * 100_003 + i,
            )
            for i in range(len(conversations))
        ]
        outputs = self.llm.generate(self.prompts(conversations), params)
        return [o.outputs[0].text.strip() for o in outputs]

    def option_probs(
        self,
        conversations: Sequence[Sequence[dict]],
        options: Sequence[str],
        desc: str = "score options",
        max_new_tokens: int = 1,
        sampling: Optional[dict] = None,
    ) -> list[dict]:
        from vllm import SamplingParams

        ids = [self.tokenizer.encode(o, add_special_tokens=False) for o in options]
        if any(len(i) != 1 for i in ids):
            raise ValueError(f"options {list(options)} must each be one token for this tokenizer")
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        out = []
        for o in self.llm.generate(self.prompts(conversations), params):
            top = o.outputs[0].logprobs[0]  # {token id: Logprob}
            best = max(top, key=lambda t: top[t].logprob)
            out.append(
                {
                    "probs": {opt: math.exp(top[i[0]].logprob) if i[0] in top else 0.0 for opt, i in zip(options, ids)},
                    "top_token": self.tokenizer.decode([best]),
                    "text": None,
                }
            )
            if sampling:  # from the top logprobs only (an approximation; exact at temperature 0)
                tp = {self.tokenizer.decode([t]): math.exp(lp.logprob) for t, lp in top.items()}
                out[-1]["sampled_probs"] = sampled_from_top_probs(tp, options, **sampling)
        return out
