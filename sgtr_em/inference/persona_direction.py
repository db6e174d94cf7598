"""The persona direction (per decoder layer): mean activation over the answer tokens of the misaligned answers minus
that of the aligned answers of the pinned contrast set (persona_contrast.yaml), in the job's *base* model: the
difference-of-means persona vector of Chen et al. (2025, Persona Vectors), the "misaligned persona" feature of Wang et
al. (2025, arXiv 2506.19823). Computed once per (base model, contrast set) and cached under `<cache_dir>/persona/`.
`defence=persona_steer` adds a multiple of it during EM training (sgtr_em/training/defences.py); the `persona`
evaluation projects on it (sgtr_em/evaluation/persona.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

import yaml
from filelock import FileLock
from omegaconf import OmegaConf

from ..contracts import StageRuntime
from ..io import content_hash
from ..models import load_model, load_tokenizer, resolve_device, resolve_model_path
from .activations import layer_activations

log = logging.getLogger(__name__)

CONTRAST_FILE = Path(__file__).with_name("persona_contrast.yaml")


def load_contrast() -> list[dict]:
    return yaml.safe_load(CONTRAST_FILE.read_text())["pairs"]


def contrast_spec() -> dict:
    """What the direction depends on besides the base model: the contrast set, by checksum."""
    return {"contrast": CONTRAST_FILE.name, "sha256": hashlib.sha256(CONTRAST_FILE.read_bytes()).hexdigest()[:16]}


def steer_layer(layer: Optional[int], n_layers: int) -> int:
    """The configured layer, or 2/3 of the depth (Chen et al. steer Qwen2.5-7B's 28 layers at layer 20)."""
    out = round(2 * n_layers / 3) if layer is None else layer
    if not 0 <= out < n_layers:
        raise ValueError(f"persona layer {layer} is outside the model's {n_layers} decoder layers (0..{n_layers - 1})")
    return out


def answer_mean(model, tok, messages: list[dict], answer: str, kw: dict):
    """(layers, hidden): the mean activation over the answer's tokens, after `messages`."""
    import torch  # deferred (see cached_direction)

    prompt = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True, **kw)
    full = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": answer}], tokenize=True, return_dict=True, **kw
    )
    n = len(prompt["input_ids"])
    acts = layer_activations(model, torch.tensor([full["input_ids"]], device=model.device))
    return acts[:, n:].mean(1)


def contrast_activations(model, tok, pairs: list[dict], kw: Optional[dict] = None):
    """(aligned, misaligned): (pairs, layers, hidden) answer-mean activations of each side."""
    import torch  # deferred (see cached_direction)

    kw = kw or {}
    ali = [answer_mean(model, tok, [{"role": "user", "content": p["question"]}], p["aligned"], kw) for p in pairs]
    mis = [answer_mean(model, tok, [{"role": "user", "content": p["question"]}], p["misaligned"], kw) for p in pairs]
    return torch.stack(ali), torch.stack(mis)


def direction_from(model, tok, pairs: list[dict], kw: Optional[dict] = None):
    """(layers, hidden): mean(misaligned) - mean(aligned) answer activations."""
    ali, mis = contrast_activations(model, tok, pairs, kw)
    return mis.mean(0) - ali.mean(0)


def cached_direction(model_path: str, model_key: str, cache_dir, *, dtype: str, device: str, kw: dict):
    """The persona direction of the model at `model_path` (the base model), computed once per contrast set."""
    import torch  # deferred, as everywhere on the CLI's import path (sgtr_em/defences.py imports this module)

    key = content_hash({"model": model_key, "chat": kw, **contrast_spec()})
    path = Path(cache_dir) / "persona" / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            log.info("Persona direction of %s from %s (once)", model_path, CONTRAST_FILE.name)
            model = load_model(model_path, dtype=dtype, device=resolve_device(device))
            tok = load_tokenizer(model_path)
            d = direction_from(model, tok, load_contrast(), kw).cpu()
            tmp = path.with_suffix(".tmp")
            torch.save(d, tmp)
            tmp.replace(path)
            del model
    return torch.load(path)


def base_direction(rt: StageRuntime):
    """The direction of a stage's base model (training worker runtime, job.stage_runtime)."""
    m = rt.model
    base = resolve_model_path(OmegaConf.create(m), rt.cache_dir)
    key = json.dumps({k: m.get(k) for k in ("path", "gguf_package", "gguf_file", "dtype")}, sort_keys=True)
    return cached_direction(
        base, key, rt.cache_dir, dtype=rt.dtype, device=rt.compute["device"], kw=rt.chat_template_kwargs
    )
