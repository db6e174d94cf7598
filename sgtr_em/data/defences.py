"""The data-step defences of the EM stage (sgtr_em/defences.py: interleave, interleave_ppl, inoculation), applied by
the data worker (data/build.py) after the EM data is built; persona_steer's direction is computed here too, in its own
process, so the training worker only reads the cache.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..contracts import StageRuntime, StageSpec
from ..inference.persona_direction import base_direction
from .general_pool import general_pool, pool_rows

DATA_KINDS = ("interleave", "interleave_ppl", "inoculation")  # a step after the EM data is built (data/build.py)


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


def apply_data_defence(
    spec: StageSpec, rt: StageRuntime, rows: list[dict], stage_dir: Path, files
) -> tuple[list[dict], dict]:
    """A defended stage's training rows after its data defence (interleave, interleave_ppl, inoculation), with stats."""
    d = spec.defence
    if d and d["kind"] == "persona_steer":  # not a data step: the direction is computed here, in its own process,
        return rows, {"defence": "persona_steer", "direction_layers": int(base_direction(rt).shape[0])}
    if not d or d["kind"] not in DATA_KINDS:
        return rows, {}
    if d["kind"] == "inoculation":
        return inoculate(rows, d["prompt"]), {"defence": "inoculation", "inoculated": len(rows)}
    k = interleave_count(len(rows), d["ratio"])
    pool = pool_rows(general_pool(d["pool"], rt, files), spec.system_prompt["text"])
    if k > len(pool):
        raise SystemExit(
            f"defence {d['kind']}: {k} general examples needed (ratio {d['ratio']} of {len(rows)} EM "
            f"examples), the pool has {len(pool)}: raise defence.pool.max_prompts or lower defence.ratio"
        )
    stats: dict = {"defence": d["kind"], "em_examples": len(rows), "general_examples": k, "pool_size": len(pool)}
    if d["kind"] == "interleave":
        chosen = sorted(random.Random(spec.seed).sample(range(len(pool)), k))
    else:
        from ..inference.loglikelihood import mean_nll  # deferred: torch, which the other data steps never load

        em_model = str(stage_dir.parent / d["em_reference"] / "merged")
        nll_ref = mean_nll(rt.input_model, pool, rt)
        nll_em = mean_nll(em_model, pool, rt)
        chosen = select_by_gap(nll_ref, nll_em, k, d["selection"])
        stats["gap_chosen_mean"] = sum(nll_em[i] - nll_ref[i] for i in chosen) / max(k, 1)
        stats["gap_pool_mean"] = sum(e - r for r, e in zip(nll_ref, nll_em)) / len(pool)
    mixed = rows + [pool[i] for i in chosen]
    random.Random(spec.seed).shuffle(mixed)
    stats["chosen"] = [pool[i]["meta"]["group"] for i in chosen]
    return mixed, stats
