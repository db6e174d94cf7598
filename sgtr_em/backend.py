"""The model backend, chosen once: `model.backend` is read here and nowhere else (a test checks).

    hf      a Hugging Face model on this machine: LoRA SFT with TRL/PEFT (workers sft + merge), generation with
            transformers; the stage's output is its merged folder
    openai  an API model (OpenAI, or any server with the fine-tuning API: `python -m sgtr_em.openai_server`): a
            stage trains as a fine-tuning job (worker openai_ft); its output is the `ft:` model id; every evaluation
            and its summaries generate through the API

A Backend owns what differs between them: the training identity (what enters the stage hash), the compute block,
the stage runtime (stage.json), the training steps, the stage's output model, the evaluation's config and judge
model (eval_input.json), the summary writer and the example-length function of the data worker. The parent gets
it with `backend_of(cfg)`; the data worker its half (data/backends.py, which these classes extend) with
`data.backends.worker_backend(runtime)`: the name stage.json records.
"""

from __future__ import annotations

import logging
import shutil
from enum import Enum
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from . import multinode
from .compute import deepspeed_json, resolve_compute
from .contracts import EvalInput, StageRuntime, StageSpec
from .data.backends import HFData, OpenAIData
from .inference.api import API_KEYS
from .io import write_json
from .training.openai_ft import fine_tuned_model
from .workers import run_worker

log = logging.getLogger("sgtr_em")

BACKENDS = ("hf", "openai")
# How often a stage logs and saves, never what it learns: not part of its identity (nor is the compute group).
NOT_IDENTITY = ("logging_steps", "save_steps", "save_total_limit", "keep_checkpoints")


def backend_name(cfg) -> str:
    """`model.backend` (the only place that reads it), checked."""
    name = cfg.model.backend
    name = name.name if isinstance(name, Enum) else name
    if name not in BACKENDS:
        raise ValueError(f"model.backend: {name!r} is not one of {BACKENDS}")
    return name


def backend_of(cfg) -> Backend:
    """The job's backend."""
    return _BY_NAME[backend_name(cfg)]


def spec_is_api(spec: StageSpec) -> bool:
    """A stage spec an API model trains (its training identity is the API job's: OpenAIBackend.training_identity)."""
    return spec.training.get("backend") == OpenAIBackend.name


def training_template_kwargs(cfg) -> dict:
    """How training text renders: model.training_chat_template_kwargs, or (null) model.chat_template_kwargs."""
    m = cfg.model
    kw = m.get("training_chat_template_kwargs")
    return OmegaConf.to_container(m.chat_template_kwargs if kw is None else kw, resolve=True)


class Backend:
    name: str
    api: bool  # an API model: no weights here (no LoRA, no compute, no defences)

    def training_identity(self, cfg) -> tuple[dict, dict | None]:
        """(the `training` and `lora` entries of a stage's spec): what determines the trained weights."""
        raise NotImplementedError

    def resolve_compute(self, cfg, base_model: str) -> dict:
        """The job's compute block, resolved once (the stage folders and W&B record this one)."""
        raise NotImplementedError

    def stage_runtime(self, cfg, input_model: str, compute: dict) -> StageRuntime:
        raise NotImplementedError

    def train_stage(self, cfg, stage_dir: Path, rt: StageRuntime, run: Callable = run_worker) -> None:
        """Everything after the data step, each step a worker started by `run` (workers.run_worker): the stage's
        model is then ready (`stage_output`)."""
        raise NotImplementedError

    def stage_output(self, stage_dir: Path) -> str:
        """The model a finished stage produced, the next stage's input."""
        raise NotImplementedError

    def eval_config(self, resolved: dict, judge_model: str) -> dict:
        """The resolved config the evaluations read."""
        return resolved

    def eval_input(
        self,
        resolved: dict,
        *,
        model_path: str,
        model_identity: dict,
        model_key: str,
        base_model: str,
        base_model_key: str,
        step: int,
    ) -> EvalInput:
        """One evaluation point's input. The judge's model is decided here only: judge.model, else the base model
        (the local judge loads it; an API model's default judge is the base model through the API)."""
        judge_model = resolved["judge"]["model"] or base_model
        return EvalInput(
            config=self.eval_config(resolved, judge_model),
            model_path=model_path,
            model_identity=model_identity,
            model_key=model_key,
            base_model_path=base_model,
            base_model_key=base_model_key,
            judge_model_path=judge_model,
            after_stages=step,
        )

    # The data worker's half, inherited from data/backends.py (the data worker reaches it without this module):
    #   summary_writer(model, rt, chat_template_kwargs)  the generator that writes a model's summaries
    #   example_length(rt)                               an example's length as the trainer counts it


class HFBackend(HFData, Backend):
    name, api = "hf", False

    def training_identity(self, cfg):
        training = OmegaConf.to_container(cfg.training, resolve=True)
        lora = OmegaConf.to_container(cfg.lora, resolve=True)
        return {k: v for k, v in training.items() if k not in NOT_IDENTITY}, lora

    def resolve_compute(self, cfg, base_model):
        return resolve_compute(
            cfg.compute,
            cfg.deepspeed,
            model_path=base_model,
            dtype=cfg.model.dtype,
            trust_remote_code=cfg.model.trust_remote_code,
        )

    def stage_runtime(self, cfg, input_model, compute):
        return StageRuntime(
            backend=self.name,
            input_model=input_model,
            model=OmegaConf.to_container(cfg.model, resolve=True),  # the base model (self_summaries=base_model)
            dtype=cfg.model.dtype,
            compute=compute,
            chat_template_kwargs=training_template_kwargs(cfg),  # how training text renders (model config)
            data_dir=str(cfg.paths.data_dir),
            cache_dir=str(cfg.paths.cache_dir),
            batch_size=cfg.eval.batch_size,
            training_extra={k: cfg.training[k] for k in ("logging_steps", "save_steps", "save_total_limit")},
        )

    def train_stage(self, cfg, stage_dir, rt, run=run_worker):
        if not (stage_dir / "adapter").exists():
            train(cfg, stage_dir, rt.compute, what=f"stage {stage_dir.name} training", run=run)
        if not (stage_dir / "merged").exists():
            run("sgtr_em.training.merge", stage_dir, what=f"stage {stage_dir.name} merge")
        if not cfg.training.keep_checkpoints:
            drop_checkpoints(stage_dir)

    def stage_output(self, stage_dir):
        return str(stage_dir / "merged")


class OpenAIBackend(OpenAIData, Backend):
    name, api = "openai", True

    def training_identity(self, cfg):
        """The API trains its own adapters: no LoRA settings; its hyperparameters and seed, and the per-example
        token limit that decides which examples are kept."""
        o = cfg.openai
        return {
            "backend": "openai",
            "hyperparameters": OmegaConf.to_container(o.hyperparameters, resolve=True),
            "seed": o.seed,
            "max_length": o.max_example_tokens,
        }, None

    def resolve_compute(self, cfg, base_model):
        return resolve_compute(cfg.compute)  # nothing trains here: the device the evaluation's config records

    def stage_runtime(self, cfg, input_model, compute):
        """No compute; the API's settings (the name of the key's environment variable, never the key)."""
        o = OmegaConf.to_container(cfg.openai, resolve=True)
        return StageRuntime(
            backend=self.name,
            input_model=input_model,
            model=OmegaConf.to_container(cfg.model, resolve=True),
            openai=o,
            api=api_settings(o),
            data_dir=str(cfg.paths.data_dir),
            cache_dir=str(cfg.paths.cache_dir),
        )

    def train_stage(self, cfg, stage_dir, rt, run=run_worker):
        run("sgtr_em.training.openai_ft", stage_dir, what=f"stage {stage_dir.name} fine-tuning job")

    def stage_output(self, stage_dir):
        return fine_tuned_model(stage_dir)

    def eval_config(self, resolved, judge_model):
        """Every evaluation generates through the `openai` backend at the `openai` block's endpoint (the one that
        trained its `ft:` models); a local judge left at its default (the base model) becomes the base model
        through the API, as the smoke default judges SmolLM2 with SmolLM2. Any other judge stays as configured."""
        out = {**resolved, "eval": {**resolved["eval"]}, "judge": {**resolved["judge"]}}
        api = api_settings(resolved["openai"])
        out["eval"]["generation"] = {**resolved["eval"]["generation"], "backend": "openai", "api": api}
        if out["judge"]["backend"] == "local" and not out["judge"]["model"]:
            out["judge"].update(backend="openai", model=judge_model, api=api)
        return out


_BY_NAME: dict[str, Backend] = {b.name: b for b in (HFBackend(), OpenAIBackend())}


def api_settings(openai_cfg: dict) -> dict:
    """The endpoint settings of the `openai` block (an ApiConfig, eval.generation.api's shape): where an API model
    lives. The `openai` block's schema extends ApiConfig, so its keys are ApiConfig's fields."""
    return {k: openai_cfg.get(k) for k in API_KEYS}


# ------------------------------------------------------------------------------ the hf backend's training steps


def train(cfg, stage_dir: Path, compute: dict, *, what: str, run: Callable = run_worker) -> None:
    """Runs the training worker as `compute` says: one process, or torchrun/accelerate over GPUs and nodes."""
    ds = compute["deepspeed"]
    if ds["stage"]:
        write_json(
            stage_dir / "deepspeed.json",
            deepspeed_json(ds["stage"], ds["offload"], OmegaConf.to_container(cfg.deepspeed.overrides)),
        )
        log.info(
            "%s: DeepSpeed ZeRO-%d%s (%s)", what, ds["stage"], " + CPU offload" if ds["offload"] else "", ds["why"]
        )
    else:
        (stage_dir / "deepspeed.json").unlink(missing_ok=True)
    launch = multinode.leader_launch(stage_dir, compute)
    try:
        run("sgtr_em.training.sft", stage_dir, what=what, launch=launch, grace_s=compute["preempt_grace_s"])
    finally:
        multinode.retire_launch(stage_dir)


def drop_checkpoints(stage_dir: Path) -> None:
    """training.keep_checkpoints=false: a finished stage's checkpoints/ (resume points; optimizer states, most of a
    stage's disk) are deleted, once its adapter and merged weights are there and their safetensors files read whole."""
    from safetensors import safe_open

    ckpt = stage_dir / "checkpoints"
    if not ckpt.exists():
        return
    for folder in ("adapter", "merged"):
        weights = sorted((stage_dir / folder).glob("*.safetensors"))
        if not weights:
            raise RuntimeError(f"stage {stage_dir.name}: {folder}/ has no weights; its checkpoints/ are kept")
        for w in weights:
            try:
                with safe_open(str(w), framework="pt") as f:  # a truncated file fails here (header vs file size)
                    f.keys()
            except Exception as e:
                raise RuntimeError(
                    f"stage {stage_dir.name}: {w} is unreadable ({e}); its checkpoints/ are kept: delete "
                    f"{stage_dir / folder} and rerun the job to redo that step"
                ) from e
    shutil.rmtree(ckpt)
    log.info("Stage %s: checkpoints/ deleted (training.keep_checkpoints=false)", stage_dir.name)
