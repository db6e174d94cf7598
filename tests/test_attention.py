"""Padding-free training: packed samples stay apart (varlen attention), and the loss equals the padded run's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, TrainerCallback
from transformers.modeling_layers import GradientCheckpointingLayer

from sgtr_em.training.attention import VARLEN
from sgtr_em.training.sft import build_trainer

from .cpu_stage import cpu_stage

CONFIG = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "use_rslora": True, "target_modules": ["q_proj", "v_proj", "down_proj"]}


def tiny(attn=None):
    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(**CONFIG, attn_implementation=attn)).eval()


def test_packed_samples_do_not_attend_to_each_other():
    a, b = torch.randint(0, 1000, (1, 7)), torch.randint(0, 1000, (1, 5))
    packed, pos = torch.cat([a, b], 1), torch.cat([torch.arange(7), torch.arange(5)])[None]
    model = tiny()
    with torch.no_grad():
        alone_b = model(input_ids=b).logits[0]
        leaky = model(input_ids=packed, position_ids=pos).logits[0, 7:]  # sdpa: b sees a
        model.set_attn_implementation(VARLEN)
        kept = model(input_ids=packed, position_ids=pos).logits[0]
        alone_a = model(input_ids=a).logits[0]
    assert (leaky - alone_b).abs().max() > 1e-2
    assert torch.allclose(kept[:7], alone_a, atol=1e-5) and torch.allclose(kept[7:], alone_b, atol=1e-5)


def rows(n=8, pad_id=None):
    """Random conversations; `pad_id` in each one's 4th place, as SmolLM2's pad token <|im_end|> ends a real turn."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        length = int(torch.randint(10, 40, (1,), generator=g))
        ids = torch.randint(5, 1000, (length,), generator=g).tolist()
        if pad_id is not None:
            ids[3] = pad_id
        out.append({"input_ids": ids, "completion_mask": [0] * (length // 2) + [1] * (length - length // 2)})
    return out


class Spy(TrainerCallback):
    def __init__(self):
        self.checkpointed = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.checkpointed = [
            m.gradient_checkpointing for m in model.modules() if isinstance(m, GradientCheckpointingLayer)
        ]


def train(tokenizer, tmp_path: Path, **compute):
    spec, rt = cpu_stage("unused", LORA, micro_batch_size=4, batch_size=4, **compute)
    spy = Spy()
    trainer = build_trainer(
        tiny(VARLEN if rt.compute["padding_free"] else None),
        tokenizer,
        rows(pad_id=tokenizer.pad_token_id),
        spec,
        rt,
        tmp_path,
        [spy],
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return losses, spy.checkpointed, trainer.state.num_input_tokens_seen


def test_padding_free_training_matches_padded_training(smollm2_path, tmp_path):
    from sgtr_em.models import load_tokenizer

    tok = load_tokenizer(smollm2_path, padding_side="right")
    padded, _, padded_tokens = train(tok, tmp_path / "a")
    packed, _, packed_tokens = train(tok, tmp_path / "b", padding_free=True)
    assert len(padded) == 2 and packed == pytest.approx(padded, rel=1e-4)
    # tokens/s counts every real token both ways: a pad-token id inside a conversation is a token (padding-free once
    # dropped them, SmolLM2's <|im_end|>)
    assert padded_tokens == packed_tokens == sum(len(r["input_ids"]) for r in rows())
    _, checkpointed, _ = train(tok, tmp_path / "c", gradient_checkpointing=True, checkpoint_fraction=0.5)
    assert checkpointed == [False, True, False, True]  # half the layers recomputed, spread over the depth
