"""The data worker's half of the model backend (sgtr_em/backend.py holds the parent's, built on these): who writes a
stage's summaries, and an example's length as its trainer counts it, for the backend the stage's runtime records
(`StageRuntime.backend`, written by the parent from `model.backend`)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..contracts import StageRuntime
from ..inference.generation_api import OpenAIGenerator
from ..models import load_tokenizer
from .openai_format import row_tokens


def token_length(tokenizer, chat_template_kwargs: dict) -> Callable[[dict], int]:
    """A function giving an example's length in tokens, as the trainer will see it."""

    def length(row: dict) -> int:
        return len(
            tokenizer.apply_chat_template(
                row["prompt"] + row["completion"], tokenize=True, return_dict=True, **chat_template_kwargs
            )["input_ids"]
        )

    return length


class HFData:
    def summary_writer(self, model: str, rt: StageRuntime, chat_template_kwargs: dict):
        """A generator that writes summaries as `model` (SGTR's own summaries)."""
        from ..inference.generation import HFGenerator  # deferred: torch

        return HFGenerator(
            model,
            dtype=rt.dtype,
            device=rt.compute["device"],
            batch_size=rt.batch_size,
            chat_template_kwargs=chat_template_kwargs,
        )

    def example_length(self, rt: StageRuntime) -> Callable[[dict], int]:
        """An example's length as the trainer counts it (examples over training.max_length are dropped)."""
        return token_length(load_tokenizer(rt.input_model), rt.chat_template_kwargs)  # as training renders


class OpenAIData:
    def summary_writer(self, model: str, rt: StageRuntime, chat_template_kwargs: dict):
        """The model id (an `ft:` model) writes them through the API."""
        return OpenAIGenerator(model, rt.api, cache_dir=Path(rt.cache_dir) / "generation")

    def example_length(self, rt: StageRuntime) -> Callable[[dict], int]:
        return row_tokens  # the API's per-example limit, on an estimate of the token count


DATA_BACKENDS = {"hf": HFData, "openai": OpenAIData}


def worker_backend(rt: StageRuntime) -> HFData | OpenAIData:
    """A stage worker's backend: the one its stage.json records."""
    return DATA_BACKENDS[rt.backend]()
