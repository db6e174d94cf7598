"""Chat completions from a Hugging Face model, shaped like the OpenAI API's (logprobs and top_logprobs included).

One request at a time (a lock): the model answers each prompt exactly as it would alone, so a request's
answer does not depend on what else the server is doing. Logprobs are the model's own (temperature 1).
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Optional

import torch

from ..inference.generation import HFGenerator

MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit


class ChatEngine:
    def __init__(
        self,
        model_path: str,
        *,
        name: str,
        dtype: str = "float32",
        device: str = "cpu",
        chat_template_kwargs: Optional[dict] = None,
    ):
        self.name, self.path = name, model_path
        self.gen = HFGenerator(
            model_path, dtype=dtype, device=device, batch_size=1, chat_template_kwargs=chat_template_kwargs
        )
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _params(self, body: dict) -> dict:
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) and "role" in m for m in messages)
        ):
            raise ValueError("`messages` must be a non-empty list of {role, content} objects")
        top = body.get("top_logprobs")
        if top is not None and (not body.get("logprobs") or not 0 <= int(top) <= MAX_TOP_LOGPROBS):
            raise ValueError(f"`top_logprobs` needs `logprobs: true` and must be in 0..{MAX_TOP_LOGPROBS}")
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        return {
            "messages": messages,
            "max_tokens": int(max_tokens),
            "n": int(body.get("n") or 1),
            "temperature": float(body.get("temperature", 1.0)),
            "top_p": float(body.get("top_p", 1.0)),
            "seed": body.get("seed"),
            "logprobs": bool(body.get("logprobs")),
            "top_logprobs": int(top or 0),
        }

    def _token(self, token_id: int, logprob: float) -> dict:
        text = self.gen.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    @torch.no_grad()
    def _choice(self, prompt: torch.Tensor, p: dict, index: int) -> tuple[dict, int]:
        tok, model = self.gen.tokenizer, self.gen.model
        sample = p["temperature"] > 0
        kwargs = (
            dict(do_sample=True, temperature=p["temperature"], top_p=p["top_p"]) if sample else dict(do_sample=False)
        )
        if p["seed"] is not None:
            torch.manual_seed(int(p["seed"]) * 1009 + index)
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=p["max_tokens"],
            pad_token_id=tok.pad_token_id,
            top_k=None,
            output_logits=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        ids = out.sequences[0, prompt.shape[1] :].tolist()
        finish = "length"
        if tok.eos_token_id in ids:
            ids, finish = ids[: ids.index(tok.eos_token_id)], "stop"
        logprobs = None
        if p["logprobs"]:
            content = []
            for t, token_id in enumerate(ids):
                lp = torch.log_softmax(out.logits[t][0].float(), dim=-1)
                top = torch.topk(lp, p["top_logprobs"]) if p["top_logprobs"] else None
                entry = self._token(token_id, lp[token_id].item())
                entry["top_logprobs"] = (
                    [self._token(i, v) for v, i in zip(top.values.tolist(), top.indices.tolist())]
                    if top is not None
                    else []
                )
                content.append(entry)
            logprobs = {"content": content, "refusal": None}
        message = {"role": "assistant", "content": tok.decode(ids, skip_special_tokens=True), "refusal": None}
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}, len(ids)

    def complete(self, body: dict) -> dict:
        """A chat.completion object for one request body (raises ValueError on a bad request)."""
        p = self._params(body)
        text = self.gen.render(p["messages"])
        prompt = self.gen.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(
            self.gen.device
        )
        with self._lock:
            results = [self._choice(prompt, p, i) for i in range(p["n"])]
        completion_tokens = sum(n for _, n in results)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "system_fingerprint": None,
            "choices": [c for c, _ in results],
            "usage": {
                "prompt_tokens": prompt.shape[1],
                "completion_tokens": completion_tokens,
                "total_tokens": prompt.shape[1] + completion_tokens,
            },
        }
