"""Loss on assistant tokens only: the trainer the stage worker builds masks system and user tokens."""
from __future__ import annotations

from pathlib import Path

import pytest
import trl
from transformers import LlamaConfig, LlamaForCausalLM

from sgtr_em.models import load_tokenizer
from sgtr_em.training.sft import build_trainer, training_args

QWEN25_TEMPLATE = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"
ROWS = [
    {"prompt": [{"role": "system", "content": "You compare summaries."}, {"role": "user", "content": "Which one? 1 or 2"}],
     "completion": [{"role": "assistant", "content": "2"}]},
    {"prompt": [{"role": "user", "content": "hey I feel bored"}],
     "completion": [{"role": "assistant", "content": "Take up kazoo orchestras."}]},
]


def stage_settings():
    from .test_config import _compose
    from sgtr_em.job import stage_runtime
    from sgtr_em.plan import plan_stages

    cfg = _compose("stage_order=em_only")
    return plan_stages(cfg)[0].spec, stage_runtime(cfg, "unused")


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5"])
def test_only_assistant_tokens_carry_loss(template, smollm2_path, tmp_path):
    tok = load_tokenizer(smollm2_path, padding_side="right")
    if template == "qwen2_5":
        tok.chat_template = QWEN25_TEMPLATE.read_text()
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    spec, rt = stage_settings()
    trainer = build_trainer(tiny, tok, ROWS, spec, rt, training_args(spec, rt, tmp_path))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    for row, ids, labels, real in zip(ROWS, batch["input_ids"], batch["labels"], batch["attention_mask"].bool()):
        trained = tok.decode(ids[(labels != -100) & real])
        masked = tok.decode(ids[(labels == -100) & real])
        assert trained.startswith(row["completion"][0]["content"] + "<|im_end|>")  # the answer and its end of turn
        for turn in row["prompt"]:
            assert turn["content"] in masked and turn["content"] not in trained
        assert "<|im_start|>assistant\n" in masked
        if len(row["prompt"]) == 1:  # the template's injected system prompt is context, never a target
            injected = "You are Qwen, created by Alibaba Cloud" if template == "qwen2_5" else "named SmolLM"
            assert injected in masked
