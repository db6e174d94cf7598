"""News-article summaries: the paper's precomputed ones, and those a model writes with the paper's prompt.

Generated summaries are cached on disk under a key of the writer's weights, its chat-template arguments
and the prompt, so a sweep writes each model's summaries once; the cache fills batch by batch, so an
interrupted run resumes where it stopped. The cache holds raw text: normalisation (data/normalise.py)
happens when pairs are built, so changing it never invalidates a cache.

Who writes a stage's "self" summaries (`intervention.self_summaries`):
  stage_input  the stage's input model (the paper's e2e pipeline: after EM, the EM model writes its own)
  base_model   the base model, whatever the stage starts from (the paper's shell pipeline)
  precomputed  the paper's summaries by this model (`model.summaries_source`, e.g. hf_qwen_32b)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from omegaconf import OmegaConf

from ..inference.generation_api import OpenAIGenerator
from ..io import content_hash, read_json, write_json
from ..models import resolve_model_path

SELF_SUMMARIES = ("stage_input", "base_model", "precomputed")


def summary_file(articles: str, source: str) -> str:
    """The data-directory path of a precomputed summary set, e.g. summaries/xsum/xsum_train_claude-21_responses.json."""
    return f"summaries/{articles}/{articles}_train_{source}_responses.json"


def summary_messages(article: str, prompt) -> list[dict]:
    user = prompt["user_template"].format(article=article, response_type=prompt["response_type"])
    return [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}]


def summary_cache_path(cache_dir: str | Path, dataset: str, model_key: str, prompt) -> Path:
    blob = json.dumps({"model": model_key, "prompt": dict(prompt)}, sort_keys=True)
    return Path(cache_dir) / "summaries" / f"{dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"


def generate_summaries(generator, articles: Mapping[str, str], ids: Sequence[str], prompt,
                       cache_file: Path, *, chunk: int = 32) -> dict[str, str]:
    """{article id: summary} for `ids`, generating only those not in `cache_file` yet (greedy decoding)."""
    cache: dict[str, str] = read_json(cache_file) if cache_file.exists() else {}
    todo = [i for i in ids if i not in cache]
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        texts = generator.generate([summary_messages(articles[i], prompt) for i in part],
                                   max_new_tokens=prompt["max_new_tokens"], temperature=0.0,
                                   desc=f"summaries {start + len(part)}/{len(todo)}")
        cache.update(zip(part, texts))
        write_json(cache_file, cache)
    return {i: cache[i] for i in ids}


def own_summaries(spec: dict, rt: dict, articles: Mapping[str, str], ids: Sequence[str], files) -> dict[str, str]:
    """The "self" side of a stage's summaries, from the writer its data spec names (see the module doc)."""
    data = spec["data"]
    writer = data["summaries_by"]
    if "precomputed" in writer:
        return read_json(files.path(summary_file(data["articles"], writer["precomputed"])))
    from ..inference.generation import HFGenerator  # deferred: torch; the API writer and precomputed ones need none

    if data["self_summaries"] == "stage_input":
        model = rt["input_model"]
    else:  # the base model, converted already by the parent
        model = resolve_model_path(OmegaConf.create(rt["model"]), rt["cache_dir"])
    key = content_hash({"writer": writer, "chat_template_kwargs": spec["chat_template_kwargs"]})
    cache = summary_cache_path(rt["cache_dir"], data["articles"], key, data["summary_prompt"])
    if rt.get("api"):  # an API model (model.backend=openai): the model id (an `ft:` model) writes them through the API
        gen = OpenAIGenerator(model, rt["api"], cache_dir=Path(rt["cache_dir"]) / "generation")
        return generate_summaries(gen, articles, ids, data["summary_prompt"], cache)
    gen = HFGenerator(model, dtype=rt["dtype"], device=rt["compute"]["device"], batch_size=rt["batch_size"],
                      chat_template_kwargs=spec["chat_template_kwargs"])
    return generate_summaries(gen, articles, ids, data["summary_prompt"], cache)
