"""Hugging Face generation backend: batched, left-padded, through the model's chat template."""
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
                     desc: str = "score options") -> list[dict]:
        """Next-token probability of each single-token option, and the most likely token overall."""
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
                }
        return out
