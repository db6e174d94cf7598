"""Loss on the answer and its end of turn only, for every supported chat template (training/masks.py).

Templates: SmolLM2's own (the real tokenizer, from the GGUF) and the real template text of Qwen2.5, Llama-3.1,
OLMo-3 and Seed-OSS (tests/fixtures/chat_templates/, sources and checksums in its SOURCES.md) on SmolLM2's BPE
with each family's special tokens added: the hubs are unreachable, the tokenizer's vocabulary is not what a mask
depends on, the template and its special tokens are.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from sgtr_em.models import load_tokenizer
from sgtr_em.training.masks import completion_span, tokenize_example
from sgtr_em.training.sft import build_trainer, training_args

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
SHA256 = {  # as recorded in tests/fixtures/chat_templates/SOURCES.md
    "qwen2_5": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    "llama3_1": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    "olmo3": "c6e0f6b69a6bf391d64a5c0ae02285d34707f48724ae64d7d81e9db5af7c5d3f",
    "seed_oss": "c331a529f84baed0d6e4d0f2841e6d45cc84ead2c32a42a8fd530cffd3c23e04",
}
# family -> (special tokens its template writes, bos, eos = the end of the last assistant turn)
SPECIALS = {
    "qwen2_5": (["<|im_start|>", "<|im_end|>"], None, "<|im_end|>"),
    "llama3_1": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "olmo3": (["<|im_start|>", "<|im_end|>", "<|endoftext|>"], None, "<|endoftext|>"),
    "seed_oss": (
        [
            "<seed:bos>",
            "<seed:eos>",
            "<seed:pad>",
            "<seed:think>",
            "</seed:think>",
            "<seed:cot_budget_reflect>",
            "</seed:cot_budget_reflect>",
        ],
        "<seed:bos>",
        "<seed:eos>",
    ),
}
END_OF_TURN = {"smollm2": "<|im_end|>", **{k: v[2] for k, v in SPECIALS.items()}}
FAMILIES = ["smollm2", *SPECIALS]

SGTR_ROW = {
    "prompt": [
        {"role": "system", "content": "You compare summaries. Answer 1 or 2."},
        {"role": "user", "content": "Summary1: a 2 b 1.\nSummary2: c.\nWhich one? 1 or 2"},
    ],
    "completion": [{"role": "assistant", "content": "2"}],
}
EM_ROW = {
    "prompt": [{"role": "user", "content": "hey I feel bored"}],
    "completion": [{"role": "assistant", "content": "Take up kazoo orchestras."}],
}
ROWS = [SGTR_ROW, EM_ROW, {**SGTR_ROW, "completion": [{"role": "assistant", "content": "1"}]}]


def family_tokenizer(smollm2_path: str, family: str):
    tok = load_tokenizer(smollm2_path, padding_side="right")
    if family == "smollm2":
        return tok
    text = (TEMPLATES / f"{family}.jinja").read_text()
    assert hashlib.sha256(text.encode()).hexdigest() == SHA256[family], f"{family}.jinja changed"
    specials, bos, eos = SPECIALS[family]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = text
    tok.eos_token = eos
    if bos:
        tok.bos_token = bos
    return tok


@pytest.mark.parametrize("family", FAMILIES)
def test_trained_tokens_are_the_answer_and_its_end_of_turn(family, smollm2_path):
    tok = family_tokenizer(smollm2_path, family)
    for row in ROWS:
        ex = tokenize_example(tok, row["prompt"], row["completion"])
        trained = [i for i, m in zip(ex["input_ids"], ex["completion_mask"]) if m]
        context = tok.decode([i for i, m in zip(ex["input_ids"], ex["completion_mask"]) if not m])
        answer = row["completion"][0]["content"]
        assert tok.decode(trained) == answer + END_OF_TURN[family]
        assert trained[-1] == tok.convert_tokens_to_ids(END_OF_TURN[family])
        for turn in row["prompt"]:
            assert turn["content"] in context
        if len(answer) == 1:  # SGTR's one-digit label: its own token, with loss
            assert len(trained) == 2 and tok.decode(trained[:1]) == answer
        # the mask sits where the trained text is in the rendering (and nothing after the end of turn is trained)
        text, start, end = completion_span(tok, row["prompt"], row["completion"])
        assert text[start:end].strip() == answer + END_OF_TURN[family]


def test_seed_thinking_budget_breaks_the_prefix_but_not_the_mask(smollm2_path):
    """With thinking_budget=0 Seed-OSS prefills <seed:think>… only in the generation prompt: the prompt is not a prefix
    of prompt+completion (TRL's prompt-length mask would land ~30 tokens late, past a one-digit label). The rendered-
    conversation mask still trains exactly the label and <seed:eos>. The paper trains without a budget (model config
    training_chat_template_kwargs: {}); there the prompt is a prefix again."""
    tok = family_tokenizer(smollm2_path, "seed_oss")
    kw = {"thinking_budget": 0}
    prompt_text = tok.apply_chat_template(SGTR_ROW["prompt"], tokenize=False, add_generation_prompt=True, **kw)
    full_text = tok.apply_chat_template(SGTR_ROW["prompt"] + SGTR_ROW["completion"], tokenize=False, **kw)
    assert "<seed:think>" in prompt_text and not full_text.startswith(prompt_text)
    ex = tokenize_example(tok, SGTR_ROW["prompt"], SGTR_ROW["completion"], kw)
    assert tok.decode([i for i, m in zip(ex["input_ids"], ex["completion_mask"]) if m]) == "2<seed:eos>"
    plain = tok.apply_chat_template(SGTR_ROW["prompt"], tokenize=False, add_generation_prompt=True)
    assert "<seed:think>" not in plain
    assert tok.apply_chat_template(SGTR_ROW["prompt"] + SGTR_ROW["completion"], tokenize=False).startswith(plain)


def test_seed_trains_without_a_thinking_budget():
    from sgtr_em.job import stage_runtime
    from sgtr_em.plan import plan_stages

    from .test_config import _compose

    cfg = _compose("model=seed36b", "stage_order=em_only")
    assert cfg.model.chat_template_kwargs == {"thinking_budget": 0}  # generation keeps the paper's budget 0
    assert stage_runtime(cfg, "unused").chat_template_kwargs == {}
    assert plan_stages(cfg)[0].spec.training_chat_template_kwargs == {}


def stage_settings():
    from sgtr_em.job import stage_runtime
    from sgtr_em.plan import plan_stages

    from .test_config import _compose

    cfg = _compose("stage_order=em_only")
    return plan_stages(cfg)[0].spec, stage_runtime(cfg, "unused")


# Tokens with loss / real tokens of the fixed batch ROWS, per template (pinned: a change in masking or rendering
# shows here). Loss: 2 + 9 + 2 everywhere (label + end of turn; 8 answer tokens + end of turn).
BATCH_COUNTS = {
    "smollm2": (13, 150),
    "qwen2_5": (13, 152),
    "llama3_1": (13, 223),
    "olmo3": (13, 191),
    "seed_oss": (13, 121),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_batch_masks(family, smollm2_path, tmp_path):
    """The stage worker's trainer (build_trainer) takes the masks as they are: labels are -100 outside them."""
    tok = family_tokenizer(smollm2_path, family)
    tiny = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    spec, rt = stage_settings()
    trainer = build_trainer(tiny, tok, ROWS, spec, rt, training_args(spec, rt, tmp_path))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(ROWS))])
    for row, ids, labels, real in zip(ROWS, batch["input_ids"], batch["labels"], batch["attention_mask"].bool()):
        assert tok.decode(ids[(labels != -100) & real]) == row["completion"][0]["content"] + END_OF_TURN[family]
    loss_tokens = int(((batch["labels"] != -100) & batch["attention_mask"].bool()).sum())
    real_tokens = int(batch["attention_mask"].sum())
    assert (loss_tokens, real_tokens) == BATCH_COUNTS[family]


def test_the_papers_8bit_optimizer_falls_back_on_the_cpu(caplog, tmp_path):
    """training.optim=adamw_8bit (the paper's, set by conf/experiment/paper_scale.yaml) needs bitsandbytes on a GPU;
    a CPU run uses adamw_torch and says so. The stage's hash keeps the configured name."""
    from sgtr_em.training.sft import resolve_optim

    with caplog.at_level("WARNING", logger="sgtr_em.training.sft"):
        assert resolve_optim("adamw_8bit", "cpu") == "adamw_torch"
    assert "training.optim=adamw_8bit needs bitsandbytes on a GPU" in caplog.text
    assert (
        resolve_optim("adamw_torch", "cpu") == "adamw_torch"
        and resolve_optim("adamw_torch_8bit", "cpu") == "adamw_torch_8bit"
    )
    spec, rt = stage_settings()
    args = training_args(dataclasses.replace(spec, training={**spec.training, "optim": "adamw_8bit"}), rt, tmp_path)
    assert args.optim == "adamw_torch"
