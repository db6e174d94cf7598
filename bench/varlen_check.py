"""Padding-free training's attention on the GPU: a packed row through `sgtr_varlen` (the product's attention for
compute=auto) gives each sequence the logits it gets alone, for the transformers installed here.

    python bench/varlen_check.py --shape qwen2.5-1.5b --out $OUT/varlen_check.json

A Qwen2.5 shape random-initialised in bf16 on the GPU; sequences of the SGTR mix's lengths (460-2,026 tokens) packed
by TRL's padding-free collator, as the stage worker packs them. For eval mode, train mode, and train mode with
gradient checkpointing it records: the largest logit difference between each sequence packed and alone (SDPA), the
same for one causal attention over the whole row (what leaking across sequence boundaries looks like), and which
varlen keyword arguments reached the attention function. The CPU tests check this path on the CPU
(tests/test_attention.py); this checks the CUDA kernel and the kwargs transformers passes on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import command  # noqa: E402
from bench.shapes import shape_config  # noqa: E402

LENGTHS = [2026, 1500, 900, 460]


def worst(row: torch.Tensor, alone: list[torch.Tensor], bounds: list[int]) -> float:
    """The largest |logit difference| between each sequence's span of `row` and the sequence alone, relative to the
    largest |logit| alone."""
    scale = max(float(x.abs().max()) for x in alone)
    return max(float((row[s:e] - x).abs().max()) for x, s, e in zip(alone, bounds[:-1], bounds[1:])) / scale


def main() -> None:
    import transformers
    from transformers import AttentionInterface, AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from sgtr_em.training import attention

    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen2.5-1.5b")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    seen: list[dict] = []

    def recording(module, query, key, value, attention_mask, **kwargs):
        seen.append({k: kwargs.get(k) is not None for k in ("cu_seq_lens_q", "max_length_q", "position_ids")})
        return attention.varlen_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("varlen_check", recording)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(
            shape_config(a.shape), dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    seqs = [torch.randint(10, vocab, (n,), generator=g).tolist() for n in LENGTHS]
    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, return_position_ids=True)
    batch = {
        k: v.to(dev) if torch.is_tensor(v) else v
        for k, v in collate([{"input_ids": s} for s in seqs]).items()
        if k != "labels"
    }
    bounds = [0] + torch.tensor(LENGTHS).cumsum(0).tolist()
    results = {
        "shape": a.shape,
        "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "command": command(),
        "batch_keys": sorted(batch),
        "modes": {},
    }
    for mode in ("eval", "train", "train_checkpointed"):
        model.train(mode != "eval")
        if mode == "train_checkpointed":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        with torch.no_grad() if mode == "eval" else torch.enable_grad():
            model.set_attn_implementation("sdpa")
            alone = [model(input_ids=torch.tensor([s], device=dev)).logits[0].float() for s in seqs]
            whole = model(input_ids=batch["input_ids"]).logits[0].float()  # one causal attention over the row
            model.set_attn_implementation("varlen_check")
            seen.clear()
            packed = model(**batch).logits[0].float()
        results["modes"][mode] = {
            "packed_vs_alone": worst(packed, alone, bounds),
            "one_attention_vs_alone": worst(whole, alone, bounds),
            "attention_calls": len(seen),
            "kwargs_seen": seen[0] if seen else None,
        }
        print(mode, json.dumps(results["modes"][mode]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
