"""What an evaluation step sees: the resolved config, the data files, the models, and one loaded model at a time.

`generator(path)` loads the model at `path` with the configured backend, freeing the one loaded before (a
32B model under test and a 32B judge never share a GPU); asking again for the loaded one costs nothing.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..data.files import DataFiles
from ..data.system_prompt import system_text, with_system
from ..inference.cache import Usage


@dataclass
class EvalContext:
    cfg: dict  # the job's resolved config
    inp: dict  # eval_input.json: model_path, model_key, base_model_path, base_model_key, judge_model_path
    files: DataFiles
    generation_usage: Usage = field(default_factory=Usage)  # API calls of the generation backend
    _loaded: tuple = (None, None)
    _model: Any = None

    @classmethod
    def from_input(cls, inp: dict) -> EvalContext:
        cfg = inp["config"]
        files = DataFiles(Path(cfg["paths"]["data_dir"]), Path(cfg["paths"]["cache_dir"]) / "data", download=False)
        return cls(cfg, inp, files)

    @property
    def seed(self) -> int:
        return self.cfg["seed"]

    @property
    def model_path(self) -> str:
        return self.inp["model_path"]

    @property
    def model_key(self) -> str:
        return self.inp["model_key"]

    @property
    def base_model_path(self) -> str:
        return self.inp["base_model_path"]

    @property
    def base_model_key(self) -> str:
        return self.inp["base_model_key"]

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg["paths"]["cache_dir"])

    def ecfg(self, name: str) -> dict:
        """eval.<name>: the evaluation's settings (a plugin's: eval.plugins.<name>)."""
        ev = self.cfg["eval"]
        return ev[name] if name in ev else ev["plugins"][name]

    def eval_system_prompt(self) -> Optional[str]:
        sp, m = self.cfg["system_prompt"], self.cfg["model"]
        return system_text(sp["eval"], identity=m["identity_prompt"], custom=sp["custom"])

    def conversations(self, user_texts, system: Optional[str] = None) -> list[list[dict]]:
        """One user turn each, after the evaluation's system prompt (`system` when given)."""
        sys_text = self.eval_system_prompt() if system is None else system
        return [with_system([{"role": "user", "content": t}], sys_text) for t in user_texts]

    def sample_answers(self, meta: list[dict], e: dict, desc: str) -> list[dict]:
        """`meta`'s rows, each with `answer`: the model's reply to its `question`, sampled with the evaluation's
        settings `e` (max_new_tokens, temperature, top_p) and the job's seed."""
        convs = self.conversations(m["question"] for m in meta)
        answers = self.generator().generate(
            convs,
            max_new_tokens=e["max_new_tokens"],
            temperature=e["temperature"],
            top_p=e["top_p"],
            seed=self.seed,
            desc=desc,
        )
        return [{**m, "answer": a} for m, a in zip(meta, answers)]

    def generator(self, path: Optional[str] = None, backend: Optional[str] = None):
        """The model at `path` (default: the model under test) on `backend` (default: eval.generation.backend)."""
        from ..inference.generation import make_generator

        gen_cfg = dict(self.cfg["eval"]["generation"])
        key = (backend or gen_cfg["backend"], path or self.model_path)
        if self._loaded != key:
            self.free()
            gen_cfg["backend"] = key[0]
            self._model = make_generator(
                gen_cfg,
                key[1],
                dtype=self.cfg["model"]["dtype"],
                device=self.cfg["compute"]["device"],
                batch_size=self.cfg["eval"]["batch_size"],
                chat_template_kwargs=self.cfg["model"]["chat_template_kwargs"],
                cache_dir=self.cache_dir / "generation",
                usage=self.generation_usage,
            )
            self._loaded = key
        return self._model

    def hf_generator(self, path: str):
        """A Hugging Face model (the local judge), sharing the slot with the model under test."""
        return self.generator(path, "hf")

    def free(self) -> None:
        self._model, self._loaded = None, (None, None)
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
