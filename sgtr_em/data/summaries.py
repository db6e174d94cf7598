"""Summaries a model writes of news articles with the paper's summary prompt, cached on disk.

The cache file is keyed by the model's identity and the prompt, so a sweep writes each model's summaries
once; it is filled batch by batch, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping, Sequence

from ..io import read_json, write_json


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
