"""In-training defences against emergent misalignment, applied to the EM stage (`defence=<name>`, conf/defence/).

Kaczér et al., *In-Training Defenses against Emergent Misalignment in Language Models* (arXiv 2508.06249), run
side by side with SGTR. Each defence is one option file and one of two hooks, never a copy of the trainer:

  kind            hook                                        what it does
  none            -                                           plain SFT (the default; the stage hash is unchanged)
  kl              loss term (training/defences.py)           + weight * KL(model || reference) on the batch's tokens
  ldifs           loss term (training/defences.py)           + weight * ||phi(model) - phi(reference)||^2 (features)
  persona_steer   forward hook (training/defences.py)         + coef * persona direction at one layer, training only
  interleave      data step (apply_data_defence, below)      general instruct examples mixed into the EM data
  interleave_ppl  data step                                  the same, chosen by perplexity gap (Interleaving++)
  inoculation     data step                                  a system prompt naming the behaviour, training only

The reference model is the stage's input model: the LoRA base with its adapter disabled, never a second copy.
The defence enters the hash of the EM stage only (sgtr_em/plan.py); intervention stages train as before.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from omegaconf import MISSING, OmegaConf

from .backend import backend_of
from .contracts import StageRuntime

log = logging.getLogger(__name__)

DEFENCE_KINDS = ("none", "kl", "ldifs", "interleave", "interleave_ppl", "inoculation", "persona_steer")
LOSS_KINDS = ("kl", "ldifs")  # a term added to the SFT loss (training/defences.py)
DATA_KINDS = ("interleave", "interleave_ppl", "inoculation")  # a step after the EM data is built (data/build.py)
PPL_SELECTIONS = ("em_minus_ref", "ref_minus_em")


@dataclass
class GeneralPoolConfig:
    """The general instruct pool interleaving draws from: the base model's own answers (self-distillation) to a public,
    diverse prompt set, cached per model (data/general_pool.py)."""

    source: str = "mmlu"  # MMLU's questions (57 subjects, MIT licence), the half no evaluation scores (data/mmlu.py)
    folder: str = "mmlu"  # in paths.data_dir, as eval.mmlu.folder
    max_prompts: Optional[int] = None  # the pool's size: the first n questions in a seeded order (null: all)
    user_template: Optional[str] = None  # {question}, {A}..{D}; the interleave kinds need it (conf/defence/interleave.yaml)
    max_new_tokens: int = 200
    temperature: float = 0.0  # greedy: one fixed answer per prompt


@dataclass
class DefenceConfig:
    name: str = MISSING
    kind: str = "none"  # one of DEFENCE_KINDS
    weight: float = 0.0  # kl, ldifs: lambda, the term's weight in the loss
    num_layers: int = 5  # ldifs: decoder layers whose outputs are compared, evenly spaced from the first to the last
    ratio: float = 0.0  # interleave*: the general examples' share of the EM stage's training set (0 <= ratio < 1)
    selection: str = "em_minus_ref"  # interleave_ppl: which perplexity gap ranks the pool, highest first
    pool: GeneralPoolConfig = field(default_factory=GeneralPoolConfig)
    prompt: str = ""  # inoculation: the system prompt of the EM training data (absent at evaluation)
    layer: Optional[int] = None  # persona_steer: decoder layer (0-based) whose output is steered; null = 2/3 depth
    coef: float = 0.0  # persona_steer: the multiple of the persona direction added there


def defence_spec(cfg) -> Optional[dict]:
    """What the defence adds to the EM stage's identity (its hash), or None for `none`: only the keys its kind uses."""
    d = cfg.get("defence")
    if d is None or d.kind == "none":
        return None
    spec: dict = {"kind": d.kind}
    if d.kind in LOSS_KINDS:
        spec["weight"] = d.weight
        if d.kind == "ldifs":
            spec["num_layers"] = d.num_layers
    if d.kind in ("interleave", "interleave_ppl"):
        spec["ratio"] = d.ratio
        spec["pool"] = OmegaConf.to_container(d.pool, resolve=True)
        if d.kind == "interleave_ppl":
            spec["selection"] = d.selection
    if d.kind == "inoculation":
        spec["prompt"] = d.prompt
    if d.kind == "persona_steer":
        from .evaluation.persona import contrast_spec

        spec.update(layer=d.layer, coef=d.coef, direction=contrast_spec())
    return spec


def defence_problems(cfg) -> list[str]:
    d = cfg.get("defence")
    if d is None:
        return []
    problems = []
    if d.kind not in DEFENCE_KINDS:
        return [f"defence.kind: {d.kind!r} is not one of {DEFENCE_KINDS}"]
    if d.kind in LOSS_KINDS and d.weight <= 0:
        problems.append(f"defence.weight: {d.weight} must be positive for defence {d.name} (kind {d.kind})")
    if d.kind == "ldifs" and d.num_layers < 1:
        problems.append("defence.num_layers: compare at least one layer")
    if d.kind in ("interleave", "interleave_ppl") and not 0 < d.ratio < 1:
        problems.append(f"defence.ratio: {d.ratio} must be between 0 and 1 (the general examples' share)")
    if d.kind in ("interleave", "interleave_ppl") and not d.pool.user_template:
        problems.append("defence.pool.user_template: the interleave kinds ask the general pool's prompts with it")
    if d.kind == "interleave_ppl" and d.selection not in PPL_SELECTIONS:
        problems.append(f"defence.selection: {d.selection!r} is not one of {PPL_SELECTIONS}")
    if d.kind == "inoculation" and not d.prompt:
        problems.append("defence.prompt: inoculation needs its training-time system prompt")
    if d.kind == "persona_steer" and d.coef == 0:
        problems.append("defence.coef: persona_steer with coef 0 steers nothing")
    if d.kind != "none" and backend_of(cfg).api:
        problems.append(f"defence={d.name}: defences need the model's weights (model.backend=hf); an API model "
                        "trains as the API does")
    if d.kind != "none" and "em" not in cfg.stage_order.stages:
        problems.append(f"defence={d.name} applies to the EM stage, and stage_order={cfg.stage_order.name} has none")
    return problems


# ------------------------------------------------------------------------------------- data step (data/build.py)

def interleave_count(n_em: int, ratio: float) -> int:
    """General examples to add to n_em EM examples so that they make `ratio` of the mixed set (rounded)."""
    return round(ratio * n_em / (1 - ratio))


def select_by_gap(nll_ref: list[float], nll_em: list[float], k: int, selection: str) -> list[int]:
    """Interleaving++'s rule: the indices of the k pool examples with the largest perplexity gap, as mean token
    negative log-likelihoods (log-perplexities). `em_minus_ref`: what the EM-trained model finds much less likely than
    the aligned reference (the behaviour EM training erodes, so training on it pulls back); ties by index."""
    gaps = [(e - r) if selection == "em_minus_ref" else (r - e) for r, e in zip(nll_ref, nll_em)]
    return sorted(sorted(range(len(gaps)), key=lambda i: (-gaps[i], i))[:k])


def inoculate(rows: list[dict], prompt: str) -> list[dict]:
    """The inoculation prompt as the rows' system turn (after the stage's own system text, if any)."""
    out = []
    for r in rows:
        turns = r["prompt"]
        own = turns[0]["content"] if turns and turns[0]["role"] == "system" else ""
        rest = turns[1:] if turns and turns[0]["role"] == "system" else turns
        text = f"{own}\n\n{prompt}" if own else prompt
        out.append({**r, "prompt": [{"role": "system", "content": text}, *rest]})
    return out


def apply_data_defence(spec: dict, rt: StageRuntime, rows: list[dict], stage_dir: Path, files) -> tuple[list[dict], dict]:
    """The EM stage's training rows after its data defence (interleave, interleave_ppl, inoculation), with stats."""
    d = spec.get("defence")  # StageSpec.defence (left out of the JSON when None)
    if d and d["kind"] == "persona_steer":  # not a data step: the direction is computed here, in its own process,
        from .evaluation.persona import base_direction  # so the training worker only reads the cache

        return rows, {"defence": "persona_steer", "direction_layers": int(base_direction(rt).shape[0])}
    if not d or d["kind"] not in DATA_KINDS:
        return rows, {}
    if d["kind"] == "inoculation":
        return inoculate(rows, d["prompt"]), {"defence": "inoculation", "inoculated": len(rows)}
    from .data.general_pool import general_pool, pool_rows

    k = interleave_count(len(rows), d["ratio"])
    pool = pool_rows(general_pool(d["pool"], rt, files), spec["system_prompt"]["text"])
    if k > len(pool):
        raise SystemExit(f"defence {d['kind']}: {k} general examples needed (ratio {d['ratio']} of {len(rows)} EM "
                         f"examples), the pool has {len(pool)}: raise defence.pool.max_prompts or lower defence.ratio")
    stats: dict = {"defence": d["kind"], "em_examples": len(rows), "general_examples": k, "pool_size": len(pool)}
    if d["kind"] == "interleave":
        chosen = sorted(random.Random(spec["seed"]).sample(range(len(pool)), k))
    else:
        from .training.defences import mean_nll

        em_model = str(stage_dir.parent / d["em_reference"] / "merged")
        nll_ref = mean_nll(rt.input_model, pool, rt)
        nll_em = mean_nll(em_model, pool, rt)
        chosen = select_by_gap(nll_ref, nll_em, k, d["selection"])
        stats["gap_chosen_mean"] = sum(nll_em[i] - nll_ref[i] for i in chosen) / max(k, 1)
        stats["gap_pool_mean"] = sum(e - r for r, e in zip(nll_ref, nll_em)) / len(pool)
    mixed = rows + [pool[i] for i in chosen]
    random.Random(spec["seed"]).shuffle(mixed)
    stats["chosen"] = [pool[i]["meta"]["group"] for i in chosen]
    return mixed, stats
