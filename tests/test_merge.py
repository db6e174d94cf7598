"""The merge step (`sgtr_em.training.merge`, as the stage worker runs it) writes base + adapter: every LoRA target's
weight is W + s * B @ A with s = alpha / sqrt(r) (rsLoRA, the default config's adapter) in the stage's dtype, every
other weight is the base's unchanged, and the merged model differs from the base. The adapter is the default config's
LoRA on the real SmolLM2 with B drawn away from zero (a trained adapter; a fresh one has B = 0 and changes nothing)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from sgtr_em.training import merge
from sgtr_em.training.sft import lora_config

from .test_config import _compose


def make_adapter(base_path: str, lora: dict, folder: Path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32), lora_config(lora))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=4e-3)
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_merged_model_is_the_base_plus_the_adapter(smollm2_path, tmp_path, dtype):
    lora = OmegaConf.to_container(_compose().lora, resolve=True)
    assert lora["use_rslora"] and (lora["r"], lora["alpha"]) == (32, 64)  # the paper's adapter (conf/lora/paper.yaml)
    scale = lora["alpha"] / (math.sqrt(lora["r"]) if lora["use_rslora"] else lora["r"])
    stage = tmp_path / "stage"
    peft_model = make_adapter(smollm2_path, lora, stage / "adapter")
    (stage / "stage.json").write_text(
        json.dumps({"runtime": {"backend": "hf", "input_model": smollm2_path, "dtype": dtype}})
    )

    merge.main(stage)

    torch_dtype = getattr(torch, dtype)
    base = {k: v.to(torch_dtype) for k, v in load_file(Path(smollm2_path) / "model.safetensors").items()}  # as loaded
    merged = load_file(stage / "merged" / "model.safetensors")
    adapter = load_file(stage / "adapter" / "adapter_model.safetensors")
    n_layers = json.loads((Path(smollm2_path) / "config.json").read_text())["num_hidden_layers"]
    assert set(merged) == set(base)
    merged_targets = []
    for name, w in base.items():
        m = merged[name]
        assert m.dtype == torch_dtype, name
        module = name.split(".")[-2]
        if module not in lora["target_modules"]:
            assert torch.equal(m, w), f"{name} is not a LoRA target but changed"
            continue
        prefix = "base_model.model." + name.removesuffix(".weight")
        a, b = adapter[f"{prefix}.lora_A.weight"].double(), adapter[f"{prefix}.lora_B.weight"].double()
        delta = scale * (b @ a)
        want, err = w.double() + delta, (m.double() - w.double() - delta).abs()
        # rounding only: of the sum (2^-24 float32, 2^-9 bfloat16, relative) and of the r-term product B @ A
        size = w.double().abs() + scale * (b.abs() @ a.abs())
        bound = (2**-18 if dtype == "float32" else 2**-8) * size
        assert bool((err <= bound).all()), (name, err.max().item(), (err / size).max().item())
        changed = (m != w).double().mean().item()
        assert changed > (0.99 if dtype == "float32" else 0.5), (name, changed)  # the update is not rounded away
        assert not torch.allclose(want, w.double(), rtol=0, atol=delta.abs().max().item() / 2)
        merged_targets.append(name)
    assert len(merged_targets) == n_layers * len(lora["target_modules"]) == 30 * 7

    if dtype == "float32":  # the merged model computes what base + adapter computes
        from transformers import AutoModelForCausalLM

        ids = torch.tensor([[1, 4093, 314, 253, 2365, 30, 198, 504, 253]])
        with torch.no_grad():
            want = peft_model(input_ids=ids).logits
            got = AutoModelForCausalLM.from_pretrained(stage / "merged", dtype=torch.float32)(input_ids=ids).logits
            with peft_model.disable_adapter():
                plain = peft_model(input_ids=ids).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        assert (got - plain).abs().max() > 100 * (got - want).abs().max()
