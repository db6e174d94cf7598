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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from omegaconf import OmegaConf

from ..contracts import StageRuntime, StageSpec
from ..inference.generation_api import OpenAIGenerator
from ..io import content_hash, read_json, write_json
from ..models import resolve_model_path
from .backends import worker_backend


def summary_file(articles: str, source: str) -> str:
    """The data-directory path of a precomputed summary set, e.g. summaries/xsum/xsum_train_claude-21_responses.json."""
    return f"summaries/{articles}/{articles}_train_{source}_responses.json"


def summary_messages(article: str, prompt) -> list[dict]:
    user = prompt["user_template"].format(article=article, response_type=prompt["response_type"])
    return [{"role": "system", "content": prompt["system"]}, {"role": "user", "content": user}]


def summary_cache_path(cache_dir: str | Path, dataset: str, model_key: str, prompt) -> Path:
    key = content_hash({"model": model_key, "prompt": dict(prompt)})
    return Path(cache_dir) / "summaries" / f"{dataset}-{key}.json"


SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed")  # how an open model samples its summaries


def summary_sampling(generator, prompt, ids: Sequence[str]) -> dict:
    """The decoding the paper used for this writer: an API model greedy (the requests as before, so its cached answers
    stay valid), an open model sampled with `prompt`'s settings, seeded by `prompt`'s seed and the articles `ids`."""
    if isinstance(generator, OpenAIGenerator):
        return {"temperature": 0.0}
    seed = int(content_hash({"seed": prompt["seed"], "ids": list(ids)}), 16) % 1_000_003
    return {
        "temperature": prompt["temperature"],
        "top_p": prompt["top_p"],
        "top_k": prompt["top_k"] or None,
        "seed": seed,
    }


def spec_prompt(prompt: dict, open_writer: bool) -> dict:
    """The summary prompt as a stage's data spec holds it: the sampling only where an open model writes (the paper's
    files and an API model's greedy answers read none of it, so their stages keep their hashes)."""
    return dict(prompt) if open_writer else {k: v for k, v in prompt.items() if k not in SAMPLING_KEYS}


def generate_summaries(
    generator, articles: Mapping[str, str], ids: Sequence[str], prompt, cache_file: Path, *, chunk: int = 32
) -> dict[str, str]:
    """{article id: summary} for `ids`, generating only those not in `cache_file` yet, `chunk` at a time, each chunk
    seeded by `prompt`'s seed and its articles: a run resumed from the cache draws what an uninterrupted one drew."""
    cache: dict[str, str] = read_json(cache_file) if cache_file.exists() else {}
    todo = [i for i in ids if i not in cache]
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        texts = generator.generate(
            [summary_messages(articles[i], prompt) for i in part],
            max_new_tokens=prompt["max_new_tokens"],
            **summary_sampling(generator, prompt, part),
            desc=f"summaries {start + len(part)}/{len(todo)}",
        )
        cache.update(zip(part, texts))
        write_json(cache_file, cache)
    return {i: cache[i] for i in ids}


@dataclass(frozen=True)
class SummaryWriter:
    """Who writes a set of "self" summaries: one vocabulary for the training pairs (`intervention.self_summaries`:
    stage_input | base_model | precomputed, `stage_writer`) and the self-recognition eval
    (`eval.self_recognition.summaries`: self | base | <source>, evaluation/self_recognition.py `eval_writer`)."""

    source: Optional[str] = None  # a summary set in the data (summary_file), e.g. the paper's hf_qwen_32b
    model: Optional[str] = None  # else the model that writes them: a folder, or an API model id
    key: Optional[str] = None  # the model's cache key (summary_cache_path)


def own_summaries(
    writer: SummaryWriter,
    dataset: str,
    articles: Mapping[str, str],
    ids: Sequence[str],
    prompt,
    *,
    files,
    cache_dir,
    make_generator: Callable[[str], Any],
) -> dict[str, str]:
    """The one summary pool: a summary set of the data, or `writer.model`'s summaries of `ids` (generated with
    `prompt` by `make_generator(model)`, cached per dataset, model key and prompt)."""
    if writer.source is not None:
        return read_json(files.path(summary_file(dataset, writer.source)))
    cache = summary_cache_path(cache_dir, dataset, writer.key, prompt)
    return generate_summaries(make_generator(writer.model), articles, ids, prompt, cache)


def stage_writer(spec: StageSpec, rt: StageRuntime) -> SummaryWriter:
    """The writer a stage's data spec names (`data.summaries_by`, see the module doc)."""
    data = spec.data
    writer = data["summaries_by"]
    if "precomputed" in writer:
        return SummaryWriter(source=writer["precomputed"])
    if data["self_summaries"] == "stage_input":
        model = rt.input_model
    else:  # the base model, converted already by the parent
        model = resolve_model_path(OmegaConf.create(rt.model), rt.cache_dir)
    key = content_hash({"writer": writer, "chat_template_kwargs": spec.chat_template_kwargs})
    return SummaryWriter(model=model, key=key)


def stage_own_summaries(
    spec: StageSpec, rt: StageRuntime, articles: Mapping[str, str], ids: Sequence[str], files
) -> dict[str, str]:
    """The "self" side of a stage's summaries; a model writes them through the job's backend (an API model, e.g. an
    `ft:` model, through the API)."""
    data = spec.data
    backend = worker_backend(rt)  # the data worker's half of the job's backend (data/backends.py)
    return own_summaries(
        stage_writer(spec, rt),
        data["articles"],
        articles,
        ids,
        data["summary_prompt"],
        files=files,
        cache_dir=rt.cache_dir,
        make_generator=lambda m: backend.summary_writer(m, rt, spec.chat_template_kwargs),
    )
