"""Every evaluation by name (`eval.run`). An evaluation is a module with:

    NAME, NEEDS_JUDGE
    generate(ctx) -> records        with the model under test (sgtr_em/evaluation/context.py)
    judge(records, judge, ctx)      only when NEEDS_JUDGE: adds the judge's verdicts to the records
    metrics(records, cfg) -> dict   pure: the same records and config give the same metrics (recompute.py)
    summary(metrics) -> str         one line for the end of a run

Adding an evaluation: a module like these, a schema section in schemas.py, a section in conf/eval/paper.yaml.
"""
from __future__ import annotations

from . import emergent_misalignment, identity, in_domain, mmlu, persona, self_recognition, truthfulqa
from .schemas import EVAL_NAMES

EVALS = {m.NAME: m for m in (self_recognition, emergent_misalignment, truthfulqa, mmlu, identity, in_domain, persona)}
assert tuple(EVALS) == EVAL_NAMES, "schemas.EVAL_NAMES and the registry must list the same evaluations"


def summary_lines(metrics: dict) -> list[str]:
    """One line per evaluation in `metrics` (a run's metrics.json), in the registry's order; an evaluation whose
    every answer was the first option says so (its accuracy is then fixed by how the items are built)."""
    return [module.summary(metrics[name]) + position_bias_note(metrics[name])
            for name, module in EVALS.items() if name in metrics]


def position_bias_note(m: dict) -> str:
    """Pure position bias: the model chose the first option (or never did) on every item. Self-recognition shows each
    pair in both orders, so its accuracy is then exactly 0.5; TruthfulQA's is the share of items whose answer is A."""
    rate = m.get("chose_first_rate")
    if rate not in (0.0, 1.0):
        return ""
    return (f"  <- pure position bias (chose_first_rate {rate:.1f}: {'always' if rate else 'never'} the first option): "
            "its accuracy is fixed by the order of the options, chance by construction, not a measurement")
