"""In-training defences against emergent misalignment, applied to the EM stage (`defence=<name>`, conf/defence/).

Kaczér et al., *In-Training Defenses against Emergent Misalignment in Language Models* (arXiv 2508.06249), run
side by side with SGTR. Each defence is one option file and one of two hooks, never a copy of the trainer:

  kind            hook                                        what it does
  none            -                                           plain SFT (the default; the stage hash is unchanged)
  kl              loss term (training/defences.py)           + weight * KL(model || reference) on the batch's tokens
  ldifs           loss term (training/defences.py)           + weight * ||phi(model) - phi(reference)||^2 (features)
  persona_steer   forward hook (training/defences.py)         + coef * persona direction at one layer, training only
  interleave      data step (data/defences.py)               general instruct examples mixed into the stage's data
  interleave_ppl  data step                                  the same, chosen by perplexity gap (Interleaving++)
  inoculation     data step                                  a system prompt naming the behaviour, training only

The reference model is the stage's input model: the LoRA base with its adapter disabled, never a second copy.
The defence enters the hash of the stages it applies to (sgtr_em/plan.py): `defence.stages`, [em] by default, so
intervention stages train as before. Kaczér et al.'s fourth axis (a benign task still learnt under the defence) is
`defence.stages=[intervention]`: the intervention stage (a benign task, e.g. SGTR) trains with the defence, and its
eval (self_recognition) says whether it was learnt (sweep=defences_benign).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import MISSING, OmegaConf

from .backend import backend_of
from .choices import DefenceKind, PplSelection, StageKind, values
from .data.defences import interleave_count
from .inference.persona_direction import contrast_spec

DEFENCE_KINDS = values(DefenceKind)
LOSS_KINDS = ("kl", "ldifs")  # a term added to the SFT loss (training/defences.py)
# The DefenceConfig fields each kind reads: its spec (the defended stage's hash) holds exactly these, and a job that
# sets another one is refused (it would change nothing). A new kind needs its entry here, its member in
# choices.DefenceKind, and its hook: make_defence (training/defences.py) or DATA_KINDS (data/defences.py).
KIND_KEYS = {
    "none": (),
    "kl": ("weight",),
    "ldifs": ("weight", "num_layers"),
    "interleave": ("ratio", "pool"),
    "interleave_ppl": ("ratio", "pool", "selection"),
    "inoculation": ("prompt",),
    "persona_steer": ("layer", "coef"),
}
ALWAYS_READ = ("name", "kind", "stages")
SWEEP_WIDE = ("pool",)  # the interleave kinds' general pool: a grid sets it once for all its arms (sweep=defences)


@dataclass
class GeneralPoolConfig:
    """The general instruct pool interleaving draws from: the base model's own answers (self-distillation) to a public,
    diverse prompt set, cached per model (data/general_pool.py)."""

    source: str = "mmlu"  # MMLU's questions (57 subjects, MIT licence), the half no evaluation scores (data/mmlu.py)
    folder: str = "mmlu"  # in paths.data_dir, as eval.mmlu.folder
    max_prompts: Optional[int] = None  # the pool's size: the first n questions in a seeded order (null: all)
    user_template: Optional[str] = (
        None  # {question}, {A}..{D}; the interleave kinds need it (conf/defence/interleave.yaml)
    )
    max_new_tokens: int = 200
    temperature: float = 0.0  # greedy: one fixed answer per prompt


@dataclass
class DefenceConfig:
    name: str = MISSING
    kind: DefenceKind = DefenceKind.none
    weight: float = 0.0  # kl, ldifs: lambda, the term's weight in the loss
    num_layers: int = 5  # ldifs: decoder layers whose outputs are compared, evenly spaced from the first to the last
    ratio: float = 0.0  # interleave*: the general examples' share of the EM stage's training set (0 <= ratio < 1)
    selection: PplSelection = PplSelection.em_minus_ref  # interleave_ppl: the perplexity gap that ranks the pool
    pool: GeneralPoolConfig = field(default_factory=GeneralPoolConfig)
    prompt: str = ""  # inoculation: the system prompt of the EM training data (absent at evaluation)
    layer: Optional[int] = None  # persona_steer: decoder layer (0-based) whose output is steered; null = 2/3 depth
    coef: float = 0.0  # persona_steer: the multiple of the persona direction added there
    # the stage kinds trained with the defence: [em] (the EM stage, the default), [intervention] (a benign task trained
    # with the defence: Kaczér et al.'s fourth axis, sweep=defences_benign), or both. Not part of a stage's identity
    # itself: a stage's hash has the defence's spec when the stage is defended, and only then.
    stages: List[StageKind] = field(default_factory=lambda: [StageKind.em])


def defence_spec(cfg) -> Optional[dict]:
    """What the defence adds to the EM stage's identity (its hash), or None for `none`: only the keys its kind uses."""
    d = cfg.get("defence")
    if d is None or d.kind == "none":
        return None
    values = OmegaConf.to_container(d, resolve=True)
    spec: dict = {"kind": d.kind, **{key: values[key] for key in KIND_KEYS[d.kind]}}
    if d.kind == "persona_steer":
        spec["direction"] = contrast_spec()  # how the persona direction is made: a new recipe is a new stage
    return spec


def defended_stages(cfg) -> tuple:
    """The stage kinds the defence applies to (none for `none`)."""
    d = cfg.get("defence")
    return () if d is None or d.kind == "none" else tuple(d.get("stages", ["em"]))


def defence_problems(cfg) -> list[str]:
    d = cfg.get("defence")
    if d is None:
        return []
    if d.kind not in KIND_KEYS:
        return [
            f"defence.kind: {d.kind} has no entry in KIND_KEYS (sgtr_em/defences.py): the keys it reads, so that "
            "they enter its stage's hash; then its hook (make_defence in training/defences.py, or data/defences.py)"
        ]
    defaults = OmegaConf.to_container(OmegaConf.structured(DefenceConfig))
    values = OmegaConf.to_container(d, resolve=True)
    problems = [
        f"defence.{key}: defence {d.name} (kind {d.kind}) does not read it"
        + (f" (it reads {', '.join(KIND_KEYS[d.kind])})" if KIND_KEYS[d.kind] else "")
        + ": leave it unset, or pick a kind that does"
        for key, default in defaults.items()
        if key not in (*ALWAYS_READ, *SWEEP_WIDE, *KIND_KEYS[d.kind]) and values.get(key) != default
    ]
    if d.kind in LOSS_KINDS and d.weight <= 0:
        problems.append(f"defence.weight: {d.weight} must be positive for defence {d.name} (kind {d.kind})")
    if d.kind == "ldifs" and d.num_layers < 1:
        problems.append("defence.num_layers: compare at least one layer")
    if d.kind in ("interleave", "interleave_ppl") and not 0 < d.ratio < 1:
        problems.append(f"defence.ratio: {d.ratio} must be between 0 and 1 (the general examples' share)")
    if d.kind in ("interleave", "interleave_ppl") and not d.pool.user_template:
        problems.append("defence.pool.user_template: the interleave kinds ask the general pool's prompts with it")
    if d.kind == "inoculation" and not d.prompt:
        problems.append("defence.prompt: inoculation needs its training-time system prompt")
    if d.kind == "persona_steer" and d.coef == 0:
        problems.append("defence.coef: persona_steer with coef 0 steers nothing")
    if d.kind != "none" and backend_of(cfg).api:
        problems.append(
            f"defence={d.name}: defences need the model's weights (model.backend=hf); an API model "
            "trains as the API does"
        )
    if d.kind == "none":
        return problems
    stages = list(d.get("stages", ["em"]))
    if not stages:
        problems.append("defence.stages: name one or more of em, intervention")
    trained = [s for s in cfg.stage_order.stages if s != "intervention" or cfg.intervention.kind != "none"]
    if d.kind in ("interleave", "interleave_ppl") and 0 < d.ratio < 1 and d.pool.max_prompts is not None:
        sizes = {"em": cfg.em_dataset.get("max_examples"), "intervention": cfg.intervention.get("num_examples")}
        for kind in set(stages) & set(trained):  # known before the data is built only where the stage is capped
            need = interleave_count(sizes[kind], d.ratio) if sizes[kind] is not None else 0
            if need > d.pool.max_prompts:
                problems.append(
                    f"defence.pool.max_prompts: {d.pool.max_prompts} prompts, and the {kind} stage's "
                    f"{sizes[kind]} examples at ratio {d.ratio} need {need} general ones: raise it"
                )
    if not set(stages) & set(trained):
        problems.append(
            f"defence={d.name} applies to the stages {stages} (defence.stages), and "
            f"stage_order={cfg.stage_order.name} with intervention={cfg.intervention.name} trains "
            f"{trained or 'none'}: set defence.stages=[intervention] for a benign stage, or another "
            "stage_order"
        )
    return problems
