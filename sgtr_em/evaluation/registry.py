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
    """One line per evaluation in `metrics` (a run's metrics.json), in the registry's order."""
    return [module.summary(metrics[name]) for name, module in EVALS.items() if name in metrics]
