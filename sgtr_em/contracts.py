"""The worker contracts, typed: what the parent writes for its workers and they read.

    <stage>/stage.json        {"spec": StageSpec, "runtime": StageRuntime,   (data, sft, merge, openai_ft workers)
                               "base_fingerprint": the base weights' content, checked when the stage is reused}
    <point>/eval_input.json   EvalInput                                      (the eval worker)

Each is made once, by the resolve step (sgtr_em/backend.py: `Backend.stage_runtime`, `Backend.eval_input`;
sgtr_em/plan.py: the StageSpec), and read through `from_json`, so a worker reads typed fields, never
`.get("key", default)`. The JSON is what it always was: a field that is None and marked optional is left out, so
existing stage folders and stage hashes stay valid (the hash is the content hash of `StageSpec.to_json()`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from .io import read_json, write_json


def _from_json(cls, d: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown} (known: {sorted(names)}); it was written by another "
            "version of sgtr_em: rerun the job with this one"
        )
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


def _to_json(obj, optional: tuple) -> dict:
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return {k: v for k, v in out.items() if not (k in optional and v is None)}


@dataclass(frozen=True)
class StageSpec:
    """Everything that determines a stage's trained weights; its content hash names the stage folder."""

    kind: str  # em | intervention (openai_job: a job of the local server)
    input: dict  # {"base": base model identity} | {"stage": hash of the stage before} | {"model": a served model}
    data: dict  # the training data's identity (data/interventions.py: per data kind)
    system_prompt: dict  # {"mode", "text"}
    chat_template_kwargs: dict  # how text renders
    training: dict  # training hyperparameters (hf), or the API job's (backend openai)
    lora: Optional[dict]  # the adapter (None: an API model trains its own)
    seed: int
    training_chat_template_kwargs: Optional[dict] = None  # how training text renders, when it differs
    defence: Optional[dict] = None  # the EM stage's in-training defence (sgtr_em/defences.py)

    OPTIONAL: ClassVar[tuple] = ("training_chat_template_kwargs", "defence")

    def to_json(self) -> dict:
        return _to_json(self, self.OPTIONAL)

    @classmethod
    def from_json(cls, d: dict) -> StageSpec:
        return _from_json(cls, d, "stage.json spec")


@dataclass(frozen=True)
class StageRuntime:
    """What a stage's workers need besides its identity: where things are and how to run (never hashed)."""

    backend: str  # hf | openai (sgtr_em/backend.py): who trains, writes summaries, measures examples
    input_model: str  # the stage's input weights (a folder), or an API model id
    dtype: Optional[str] = None  # hf: the weights' dtype
    compute: Optional[dict] = None  # hf: the compute block, resolved once per job (sgtr_em/compute.py)
    chat_template_kwargs: Optional[dict] = None  # hf: how training text renders
    training_extra: Optional[dict] = None  # hf: logging_steps, save_steps, save_total_limit
    model: Optional[dict] = None  # the base model's config (who writes base_model summaries, the general pool)
    data_dir: Optional[str] = None
    cache_dir: Optional[str] = None
    batch_size: Any = None  # generation batch (summaries, the general pool): an integer or auto (eval.batch_size)
    openai: Optional[dict] = None  # openai: the `openai` block (fine-tuning job settings)
    api: Optional[dict] = None  # openai: the endpoint (eval.generation.api's shape) that writes summaries
    random_init: Optional[bool] = None  # benchmarks only (bench/): the model from its config, without weights

    OPTIONAL: ClassVar[tuple] = (
        "dtype",
        "compute",
        "chat_template_kwargs",
        "training_extra",
        "model",
        "data_dir",
        "cache_dir",
        "batch_size",
        "openai",
        "api",
        "random_init",
    )

    def to_json(self) -> dict:
        return _to_json(self, self.OPTIONAL)

    @classmethod
    def from_json(cls, d: dict) -> StageRuntime:
        return _from_json(cls, d, "stage.json runtime")

    def replace(self, **changes) -> StageRuntime:
        return dataclasses.replace(self, **changes)


def write_stage(stage_dir: Path, spec: StageSpec, runtime: StageRuntime, base_fingerprint: str | None = None) -> None:
    """stage.json; `base_fingerprint`: the base weights' content (models.model_fingerprint), which reusing the stage
    checks (job.check_base_fingerprint)."""
    st = {"spec": spec.to_json(), "runtime": runtime.to_json()}
    if base_fingerprint:
        st["base_fingerprint"] = base_fingerprint
    write_json(Path(stage_dir) / "stage.json", st)


def read_stage(stage_dir: Path) -> tuple[StageSpec, StageRuntime]:
    """The typed spec (its `to_json()` is what the stage's hash names) and runtime of a stage folder."""
    st = read_json(Path(stage_dir) / "stage.json")
    return StageSpec.from_json(st["spec"]), StageRuntime.from_json(st["runtime"])


def read_runtime(stage_dir: Path) -> StageRuntime:
    return StageRuntime.from_json(read_json(Path(stage_dir) / "stage.json")["runtime"])


@dataclass(frozen=True)
class EvalInput:
    """One evaluation point: the resolved config the evaluations read, the model under test, the base model, the
    judge's model (decided once: sgtr_em/backend.py `Backend.eval_input`)."""

    config: dict  # the job's resolved config, as the backend evaluates (eval.generation, judge)
    model_path: str
    model_identity: dict
    model_key: str
    base_model_path: str
    base_model_key: str
    judge_model_path: str  # the judge's model: judge.model, else the base model (both judge backends read this)
    after_stages: int

    def to_json(self) -> dict:
        return _to_json(self, ())

    @classmethod
    def from_json(cls, d: dict) -> EvalInput:
        return _from_json(cls, d, "eval_input.json")

    def write(self, point_dir: Path) -> None:
        write_json(Path(point_dir) / "eval_input.json", self.to_json())

    @classmethod
    def read(cls, point_dir: Path) -> EvalInput:
        return cls.from_json(read_json(Path(point_dir) / "eval_input.json"))
