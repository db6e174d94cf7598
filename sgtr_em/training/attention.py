"""Varlen attention for padding-free batches: each packed sample attends only to itself.

TRL's padding-free collator concatenates a micro-batch into one row and marks sample boundaries with
`cu_seq_lens_q` (and position ids that restart at 0). transformers' sdpa/eager/flex paths ignore those
boundaries and let samples attend to each other; this attention function does not. On CUDA it calls
PyTorch's FlashAttention varlen kernel (`torch.nn.attention.varlen.varlen_attn`); elsewhere it runs causal
SDPA per segment (same result, for CPUs and tests).

    from sgtr_em.training.attention import VARLEN; AutoModelForCausalLM.from_pretrained(..., attn_implementation=VARLEN)
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

VARLEN = "sgtr_varlen"


def _segments(q_len: int, cu_seq_lens: Optional[torch.Tensor], position_ids: Optional[torch.Tensor]) -> torch.Tensor:
    if cu_seq_lens is not None:
        return cu_seq_lens.to(torch.int32)
    if position_ids is not None:
        starts = (position_ids.reshape(-1) == 0).nonzero().flatten()
        return torch.cat([starts, torch.tensor([q_len], device=starts.device)]).to(torch.int32)
    return torch.tensor([0, q_len], dtype=torch.int32)


def _cuda_varlen(q, k, v, cu, max_len: int, scale: Optional[float]) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    kwargs = {}
    if k.shape[1] != q.shape[1]:  # grouped-query attention
        if "enable_gqa" in inspect.signature(varlen_attn).parameters:
            kwargs["enable_gqa"] = True
        else:  # torch 2.11 has no GQA flag: repeat the KV heads
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    cu = cu.to(q.device)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, window_size=(-1, 0), **kwargs)


def _segment_sdpa(q, k, v, cu, scale: Optional[float]) -> torch.Tensor:
    out = torch.empty_like(q)
    gqa = k.shape[1] != q.shape[1]
    bounds = cu.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        seg = [t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v)]  # [1, H, L, D]
        o = F.scaled_dot_product_attention(*seg, is_causal=True, scale=scale, enable_gqa=gqa)
        out[start:end] = o[0].transpose(0, 1)
    return out


def varlen_attention_forward(
    module,
    query,
    key,
    value,
    attention_mask,
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    cu_seq_lens_q=None,
    max_length_q=None,
    position_ids=None,
    **kwargs,
):
    """query/key/value: [batch, heads, tokens, head_dim] -> ([batch, tokens, heads, head_dim], None)."""
    if attention_mask is not None:
        raise ValueError(f"{VARLEN} attention is for padding-free batches: got an attention mask")
    if query.shape[0] != 1:  # unpacked rows without padding: plain causal attention per row
        out = F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=key.shape[1] != query.shape[1]
        )
        return out.transpose(1, 2).contiguous(), None
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [tokens, heads, dim]
    cu = _segments(q.shape[0], cu_seq_lens_q, position_ids)
    if q.is_cuda:
        max_len = int(max_length_q) if max_length_q is not None else int(cu.diff().max())
        out = _cuda_varlen(q, k, v, cu, max_len, scaling)
    else:
        out = _segment_sdpa(q, k, v, cu, scaling)
    return out.unsqueeze(0), None


AttentionInterface.register(VARLEN, varlen_attention_forward)
