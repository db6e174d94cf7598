"""Generation backends for the model under test; the Hugging Face one: batched, left-padded, chat template.

Every backend has `generate(conversations, ...)` (one answer each) and `option_probs(conversations, options)`
(the next-token probability of each single-token option, the most likely token, and a greedy answer where a
backend gives no probabilities). `make_generator` builds the one `eval.generation.backend` names.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from tqdm import tqdm

from ..models import load_model, load_tokenizer, resolve_device


class HFGenerator:
    def __init__(self, path: str, *, dtype: str = "float32", device: str = "auto", batch_size: int = 8,
                 chat_template_kwargs: Optional[dict[str, Any]] = None, trust_remote_code: bool = False):
        device = resolve_device(device)
        self._init(load_model(path, dtype=dtype, device=device, trust_remote_code=trust_remote_code),
                   load_tokenizer(path, padding_side="left", trust_remote_code=trust_remote_code),
                   batch_size, chat_template_kwargs)

    @classmethod
    def from_model(cls, model, tokenizer, *, batch_size: int = 8, chat_template_kwargs=None) -> "HFGenerator":
        """Wraps a model already in memory (benchmarks, tests)."""
        gen = cls.__new__(cls)
        tokenizer.padding_side = "left"
        gen._init(model.eval(), tokenizer, batch_size, chat_template_kwargs)
        return gen

    def _init(self, model, tokenizer, batch_size: int, chat_template_kwargs) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.device = str(next(model.parameters()).device.type)
        self.chat_template_kwargs = dict(chat_template_kwargs or {})

    def render(self, messages: Sequence[dict]) -> str:
        """The prompt text the model sees, ending where the assistant's answer starts."""
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )

    def _batches(self, conversations: Sequence[Sequence[dict]], desc: str):
        """(indices, tokenised batch) in order of length, so batches carry little padding."""
        texts = [self.render(c) for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch"):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            yield idx, enc.to(self.device)

    @torch.no_grad()
    def generate(self, conversations: Sequence[Sequence[dict]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, desc: str = "generate") -> list[str]:
        """One answer per conversation; greedy when temperature is 0, else sampled (seeded per batch)."""
        out: list[str] = [""] * len(conversations)
        sample = temperature > 0
        for b, (idx, enc) in enumerate(self._batches(conversations, desc)):
            torch.manual_seed(seed * 100_003 + b)
            kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p) if sample else dict(do_sample=False)
            ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      top_k=None, **kwargs)
            texts = self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = text.strip()
        return out

    def single_token_ids(self, options: Sequence[str]) -> list[int]:
        ids = []
        for o in options:
            tok = self.tokenizer.encode(o, add_special_tokens=False)
            if len(tok) != 1:
                raise ValueError(f"option {o!r} is {len(tok)} tokens for this tokenizer; it must be one")
            ids.append(tok[0])
        return ids

    @torch.no_grad()
    def option_probs(self, conversations: Sequence[Sequence[dict]], options: Sequence[str],
                     desc: str = "score options", max_new_tokens: int = 1) -> list[dict]:
        """Next-token probability of each single-token option, and the most likely token overall.

        (`max_new_tokens` is for backends that fall back to a greedy answer; this one always has probabilities.)
        """
        option_ids = self.single_token_ids(options)
        out: list[dict] = [{}] * len(conversations)
        for idx, enc in self._batches(conversations, desc):
            logits = self.model(**enc).logits[:, -1, :].float()  # left padding: the last position is the next token
            probs = torch.softmax(logits, dim=-1)
            top = probs.argmax(dim=-1)
            for row, i in enumerate(idx):
                out[i] = {
                    "probs": {o: probs[row, t].item() for o, t in zip(options, option_ids)},
                    "top_token": self.tokenizer.decode([top[row].item()]),
                    "text": None,
                }
        return out


class ContinuousBatchGenerator(HFGenerator):
    """The HF backend's model and prompts, generating through transformers' continuous batching (`generate_batch`:
    paged KV cache, requests join and leave the running batch as they start and finish, CUDA graphs on a GPU)
    instead of padded batches that wait for their longest answer. Greedy answers equal HFGenerator's; sampled ones
    follow the same distribution (not the same draws). `option_probs` is HFGenerator's (one forward pass)."""

    @torch.no_grad()
    def generate(self, conversations: Sequence[Sequence[dict]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, desc: str = "generate") -> list[str]:
        from transformers import GenerationConfig

        if not conversations:
            return []
        prompts = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in conversations]
        sample = temperature > 0
        eos = self.model.generation_config.eos_token_id
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, eos_token_id=eos,
                                  pad_token_id=self.tokenizer.pad_token_id, top_k=None,
                                  **(dict(temperature=temperature, top_p=top_p) if sample else {}))
        torch.manual_seed(seed * 100_003)
        results = self.model.generate_batch(inputs=prompts, generation_config=config, progress_bar=False)
        by_prompt: dict[tuple, list] = {}
        for r in results.values():  # matched to the inputs by their prompt (identical prompts: any order is fine)
            by_prompt.setdefault(tuple(r.prompt_ids), []).append(r)
        out = []
        self.last_generated_tokens = sum(len(r.generated_tokens) for r in results.values())
        for ids in prompts:
            r = by_prompt[tuple(ids)].pop(0)
            if getattr(r, "error", None):
                raise RuntimeError(f"continuous batching failed on a request: {r.error}")
            out.append(self.tokenizer.decode(r.generated_tokens, skip_special_tokens=True).strip())
        return out


def resolve_backend(backend: str, device: str) -> str:
    """`auto`: vLLM where it is installed and a GPU is there, else transformers' continuous batching on a GPU, else
    the padded HF engine (the CPU path, unchanged)."""
    if backend != "auto":
        return backend
    import importlib.util

    if resolve_device(device) != "cuda":
        return "hf"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf_continuous"


def make_generator(gen_cfg: dict, path: str, *, dtype: str, device: str, batch_size: int,
                   chat_template_kwargs: Optional[dict] = None, cache_dir=None, usage=None):
    """The backend `eval.generation.backend` names, for the model at `path` (an API model's name for openai)."""
    backend = resolve_backend(gen_cfg["backend"], device)
    if backend == "openai":
        from .generation_api import OpenAIGenerator

        return OpenAIGenerator(path, gen_cfg["api"], top_logprobs=gen_cfg["top_logprobs"], cache_dir=cache_dir,
                               usage=usage)
    if backend == "vllm":
        from .generation_vllm import VLLMGenerator

        return VLLMGenerator(path, dtype=dtype, chat_template_kwargs=chat_template_kwargs)
    engine = ContinuousBatchGenerator if backend == "hf_continuous" else HFGenerator
    return engine(path, dtype=dtype, device=device, batch_size=batch_size, chat_template_kwargs=chat_template_kwargs)
