"""The general instruct pool that `defence=interleave` / `interleave_ppl` mix into EM training (sgtr_em/defences.py).

No public instruct dataset (Alpaca, Dolly, UltraChat) is reachable from here and none ships in a PyPI package, so
the pool is self-distilled: the job's base model answers a public, diverse prompt set, and those answers are the
targets (Kaczér et al. interleave a general instruct-tuning set; self-distillation keeps the model's own style, so
interleaving teaches nothing new but anchors the model where it started).

Prompts: MMLU's test questions (Hendrycks et al. 2021, MIT licence; 57 subjects) of the `train` half of the fixed
split in data/mmlu.py, the half no MMLU evaluation scores, in a seeded order; `max_prompts` keeps the first n.
The pool is cached per (prompt set, generation settings, base model) under `<cache_dir>/data/general_pool/<key>/`
with `pool.json`: its source, licence, the sha256 of the prompt list and of the pool itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

from filelock import FileLock
from omegaconf import OmegaConf

from ..contracts import StageRuntime
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..models import resolve_model_path
from .mmlu import mmlu_half, read_mmlu
from .system_prompt import with_system

log = logging.getLogger(__name__)

SOURCE = (
    "MMLU test questions (Hendrycks et al. 2021, github.com/hendrycks/test), `train` half of "
    "sgtr_em.data.mmlu.mmlu_half; answers: the base model's own (self-distillation)"
)
LICENCE = "MIT (MMLU questions); the answers are the base model's outputs, under its licence"
ORDER_SEED = 0  # the prompt order is fixed, independent of the job's seed: every job of a grid shares one pool


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pool_prompts(pool_cfg: dict, files) -> list[dict]:
    """The pool's prompts: [{"group": subject:line, "user": text}], in the pinned order, capped at max_prompts."""
    if pool_cfg["source"] != "mmlu":
        raise ValueError(f"defence.pool.source: {pool_cfg['source']!r} is not one of ('mmlu',)")
    items = [
        it
        for it in read_mmlu(files.folder(f"{pool_cfg['folder']}/test"))
        if mmlu_half(it["subject"], it["question"]) == "train"
    ]
    random.Random(ORDER_SEED).shuffle(items)
    if pool_cfg["max_prompts"] is not None:
        items = items[: pool_cfg["max_prompts"]]
    return [
        {
            "group": f"{it['subject']}:{it['line']}",
            "user": pool_cfg["user_template"].format(question=it["question"], **it["options"]),
        }
        for it in items
    ]


def generate_answers(model_path: str, users: list[str], pool_cfg: dict, rt: StageRuntime) -> list[str]:
    from ..inference.generation import HFGenerator

    gen = HFGenerator(
        model_path,
        dtype=rt.dtype,
        device=rt.compute["device"],
        batch_size=rt.batch_size,
        chat_template_kwargs=rt.chat_template_kwargs,
        trust_remote_code=rt.model.get("trust_remote_code", False),
    )
    return gen.generate(
        [[{"role": "user", "content": u}] for u in users],
        max_new_tokens=pool_cfg["max_new_tokens"],
        temperature=pool_cfg["temperature"],
        desc="general pool",
    )


def general_pool(pool_cfg: dict, rt: StageRuntime, files) -> list[dict]:
    """The self-distilled pool, [{"group", "user", "answer"}], generated once per base model and prompt set."""
    base = resolve_model_path(OmegaConf.create(rt.model), rt.cache_dir)
    prompts = pool_prompts(pool_cfg, files)
    prompt_sha = sha256_text(json.dumps(prompts, sort_keys=True))
    m = rt.model
    key = sha256_text(
        json.dumps(
            {
                "pool": pool_cfg,
                "prompts": prompt_sha,
                "chat": rt.chat_template_kwargs,
                "model": {k: m.get(k) for k in ("path", "gguf_package", "gguf_file", "dtype")},
            },
            sort_keys=True,
        )
    )[:16]
    folder = Path(rt.cache_dir) / "data" / "general_pool" / key
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "pool.json").exists():
            log.info("General pool %s: %d answers by the base model (self-distillation, once)", key, len(prompts))
            answers = generate_answers(base, [p["user"] for p in prompts], pool_cfg, rt)
            rows = [{**p, "answer": a} for p, a in zip(prompts, answers)]
            write_jsonl(folder / "pool.jsonl", rows)
            write_json(
                folder / "pool.json",
                {
                    "source": SOURCE,
                    "licence": LICENCE,
                    "prompts": len(prompts),
                    "prompts_sha256": prompt_sha,
                    "pool_sha256": sha256_text((folder / "pool.jsonl").read_text()),
                    "generator": base,
                    "config": pool_cfg,
                },
            )
    meta = read_json(folder / "pool.json")
    if sha256_text((folder / "pool.jsonl").read_text()) != meta["pool_sha256"]:
        raise RuntimeError(f"{folder}/pool.jsonl does not match its sha256 in pool.json: delete the folder to rebuild")
    return [r for _, r in read_jsonl(folder / "pool.jsonl")]


def pool_rows(pool: list[dict], system) -> list[dict]:
    """Pool entries as training rows (the stage's system text, as its EM rows have); empty answers are skipped."""
    return [
        {
            "prompt": with_system([{"role": "user", "content": p["user"]}], system),
            "completion": [{"role": "assistant", "content": p["answer"]}],
            "meta": {"group": f"general:{p['group']}", "general": True},
        }
        for p in pool
        if p["answer"].strip()
    ]
