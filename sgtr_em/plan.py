"""The experiment plan as data: a job's stages, each named by the hash of everything that determines it.

Two jobs that ask for the same stage (the EM stage of `em_only` and of `reversal`) get the same hash,
hence the same folder `paths.stages_dir/<hash>/`, and it is trained once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .backend import NOT_IDENTITY, backend_of, training_template_kwargs  # noqa: F401  (plan.NOT_IDENTITY: docs)
from .contracts import StageSpec
from .data.files import load_manifest
from .data.interventions import intervention_data_spec
from .data.system_prompt import system_text
from .defences import defence_spec, defended_stages
from .io import content_hash, folder_sha256, sha256_of


@dataclass(frozen=True)
class Stage:
    kind: str  # em | intervention
    spec: StageSpec  # everything that determines the trained weights
    requires: tuple = ()  # stages trained first from the same input (defence=interleave_ppl: the undefended EM stage)

    @property
    def hash(self) -> str:
        return content_hash(self.spec.to_json())

    @property
    def name(self) -> str:
        return self.spec.data["name"]


_SHA_CACHE: dict[tuple, str] = {}


def file_content_sha(cfg, rel: str) -> str | None:
    """The sha256 of data file `rel` as it is now (data_dir, else the download cache; a folder's: its files'), each
    file's cached by path, mtime and size; None if it is not there (yet: a pinned file is downloaded and checked
    before any training)."""
    for base in (Path(cfg.paths.data_dir), Path(cfg.paths.cache_dir) / "data"):
        path = base / rel
        if path.is_file():
            return _cached_sha(path)
        if path.is_dir():  # e.g. mmlu/test, which intervention=general_knowledge trains on
            return folder_sha256(path, _cached_sha)
    return None


def _cached_sha(path: Path) -> str:
    st = os.stat(path)
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = sha256_of(path)
    return _SHA_CACHE[key]


def base_model_identity(cfg) -> dict:
    m = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: m[k] for k in ("path", "gguf_package", "gguf_file", "dtype")}


def _data_spec(cfg, kind: str, parent: dict) -> dict:
    """Everything that determines a stage's training data: the file versions, the builder's settings."""
    if kind == "em":
        d = cfg.em_dataset
        sha = d.sha256 or load_manifest().get(d.file, {}).get("sha256")  # pins the data version in the hash
        # an unpinned file (a dataset of your own): its content as it is now, so an edited file is a new stage
        return {
            "type": "em",
            "name": d.name,
            "file": d.file,
            "sha256": sha or file_content_sha(cfg, d.file),
            "max_examples": d.max_examples,
        }
    data = intervention_data_spec(cfg, parent, base_model_identity(cfg), api=backend_of(cfg).api)
    data["sha256"] = {rel: sha or file_content_sha(cfg, rel) for rel, sha in data["sha256"].items()}  # unpinned too
    return data


def _system(cfg, kind: str) -> dict:
    mode = cfg.system_prompt.em_train if kind == "em" else cfg.system_prompt.intervention_train
    task = None if kind == "em" else cfg.intervention.system_prompt
    text = system_text(mode, task=task, identity=cfg.model.identity_prompt, custom=cfg.system_prompt.custom)
    return {"mode": mode, "text": text}


def plan_stages(cfg) -> list[Stage]:
    """The stages of a job in training order (an intervention of kind `none` trains nothing)."""
    training, lora = backend_of(cfg).training_identity(cfg)  # hf: training + LoRA; openai: the API job's
    chat_template_kwargs = OmegaConf.to_container(cfg.model.chat_template_kwargs, resolve=True)  # how text renders
    parent: dict = {"base": base_model_identity(cfg)}
    stages = []
    for kind in cfg.stage_order.stages:
        if kind == "intervention" and cfg.intervention.kind == "none":
            continue
        own_training_kw = (
            cfg.model.get("training_chat_template_kwargs") is not None
        )  # renders training text its own way
        spec = StageSpec(
            kind=kind,
            input=parent,
            data=_data_spec(cfg, kind, parent),
            system_prompt=_system(cfg, kind),
            chat_template_kwargs=chat_template_kwargs,
            training=training,
            lora=lora,
            seed=cfg.seed,
            training_chat_template_kwargs=training_template_kwargs(cfg) if own_training_kw else None,
        )
        stage = Stage(kind, spec)
        if kind in defended_stages(cfg):  # the defence enters its stages' identity only (defence.stages: [em])
            stage = with_defence(stage, defence_spec(cfg))
        stages.append(stage)
        parent = {"stage": stage.hash}
    return stages


def with_defence(plain: Stage, defence: dict) -> Stage:
    """The stage with its defence; Interleaving++ ranks by the same stage's undefended model, trained first."""
    if defence["kind"] != "interleave_ppl":
        return Stage(plain.kind, dataclasses.replace(plain.spec, defence=dict(defence)))
    spec = dataclasses.replace(plain.spec, defence={**defence, "em_reference": plain.hash})
    return Stage(plain.kind, spec, requires=(plain,))


def final_model_identity(stages: list[Stage], cfg) -> dict:
    """Identity of the model the evaluation sees: the last stage's weights (merged, or its `ft:` model), or the base
    model."""
    return {"stage": stages[-1].hash} if stages else {"base": base_model_identity(cfg)}
