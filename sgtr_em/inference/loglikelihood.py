"""Log-likelihood of a continuation given a raw-text context, as lm-evaluation-harness's `hf` model computes it.

`loglikelihoods(model, tokenizer, [(context, continuation), ...])` mirrors the harness (lm_eval/models/
huggingface.py, 0.4.x, `HFLM._encode_pair` and `_loglikelihood_tokens`):
  - trailing whitespace of the context moves to the front of the continuation;
  - the continuation's tokens are those of tokenize(context + continuation) after the tokens of tokenize(context),
    with the tokenizer's own default special tokens (the harness's add_bos_token=None), none where the text already
    starts with the BOS (else EOS) token's text;
  - the input is (context + continuation)[-(max_length + 1):][:-1], max_length from the model config as the harness
    finds it (n_positions, max_position_embeddings, n_ctx; else the tokenizer's; else 2048);
  - the result is the sum of the continuation tokens' log-softmax, and whether each is the argmax (is_greedy).
Differences, none of which changes a value beyond floating-point noise: the log-softmax is taken in fp32 whatever the
model's dtype (the harness takes it in the model's dtype); each input is its own unpadded forward pass (the harness
pads batches on the right: in bf16 padding and batch shape move the numbers; issue 15), so a log-likelihood never
depends on the other requests; identical inputs are computed once (the harness caches one-token continuations of
one context the same way). bench/lm_eval_mmlu.py checks it against the harness itself.

`mean_nll(model_path, rows, rt)`: each chat row's mean negative log-likelihood of its completion tokens (its
log-perplexity), Interleaving++'s score (defence=interleave_ppl, sgtr_em/data/defences.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..contracts import StageRuntime
from ..models import load_model, load_tokenizer, resolve_device

_HF_NO_MAX = 1000000000000000019884624838656  # transformers' "no limit" tokenizer.model_max_length


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) exactly as the harness splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole, ctx = tok_encode(tokenizer, context + continuation), tok_encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def tok_encode(tokenizer, text: str) -> list[int]:
    """The harness's HFLM.tok_encode with add_bos_token=None (its default)."""
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is not None and text.startswith(tokenizer.decode([prefix])):
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(text)


def max_length(model, tokenizer) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if hasattr(model.config, attr):
            return getattr(model.config, attr)
    limit = getattr(tokenizer, "model_max_length", _HF_NO_MAX)
    return 2048 if limit == _HF_NO_MAX else limit


@torch.no_grad()
def loglikelihoods(
    model, tokenizer, requests: Sequence[tuple[str, str]], *, desc: str = "log-likelihoods"
) -> list[dict]:
    """Per (context, continuation): {"loglik": sum of log-probs, "is_greedy": bool, "top_token": the most likely
    token at the continuation's first position, decoded}."""
    limit = max_length(model, tokenizer)
    device = next(model.parameters()).device
    prepared, inputs = [], {}
    for context, continuation in requests:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} is empty after tokenisation")
        if not ctx:
            raise ValueError("an empty context is not supported (the harness starts it with the end-of-text token)")
        inp = tuple((ctx + cont)[-(limit + 1) :][:-1])
        prepared.append((inp, cont))
        inputs.setdefault(inp, max(len(cont), 1))
        inputs[inp] = max(inputs[inp], len(cont))
    rows: dict[tuple, torch.Tensor] = {}  # input -> log-softmax of its last `keep` positions
    for inp, keep in tqdm(inputs.items(), desc=desc, unit="input"):  # one unpadded forward pass each (see above)
        logits = model(input_ids=torch.tensor([inp], device=device), logits_to_keep=keep).logits[0, -keep:, :]
        rows[inp] = torch.log_softmax(logits.float(), dim=-1).cpu()
    out = []
    for inp, cont in prepared:
        r = rows[inp][-len(cont) :]
        target = torch.tensor(cont)
        picked = r.gather(-1, target[:, None])[:, 0]
        out.append(
            {
                "loglik": picked.sum().item(),
                "is_greedy": bool((r.argmax(-1) == target).all()),
                "top_token": tokenizer.decode([r[0].argmax().item()]),
            }
        )
    return out


@torch.no_grad()
def mean_nll(model_path: str, rows: list[dict], rt: StageRuntime) -> list[float]:
    """Each row's mean negative log-likelihood of its completion tokens under the model at `model_path` (its
    log-perplexity): Interleaving++'s score (sgtr_em/data/defences.py)."""
    tok = load_tokenizer(model_path, padding_side="right")
    model = load_model(model_path, dtype=rt.dtype, device=resolve_device(rt.compute["device"]))
    kw = rt.chat_template_kwargs
    out = []
    for r in rows:
        prompt = tok.apply_chat_template(
            r["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True, **kw
        )["input_ids"]
        full = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True, **kw)[
            "input_ids"
        ]
        ids = torch.tensor([full], device=model.device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")[len(prompt) - 1 :]
        out.append(nll.mean().item())
    del model
    return out
