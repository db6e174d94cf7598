"""Every evaluation by name (`eval.run`). An evaluation is a module with:

    NAME, NEEDS_JUDGE
    data_files(cfg) -> [paths]      the data-directory files it reads (the resolved config): checked, or downloaded,
                                    before any training (sgtr_em/job.py required_files)
    generate(ctx) -> records        with the model under test (sgtr_em/evaluation/context.py)
    judge(records, judge, ctx)      only when NEEDS_JUDGE: adds the judge's verdicts to the records
    metrics(records, cfg) -> dict   pure: the same records and config give the same metrics (recompute.py)
    summary(metrics) -> str         one line for the end of a run

Adding an evaluation: a module like these, a schema section in schemas.py, a section in conf/eval/paper.yaml.
Or, outside the package, one module and its YAML: the YAML (an `eval/plugins` config, e.g.
tests/fixtures/conf/eval/plugins/toy.yaml) names the module (`module: my_pkg.my_eval`) and holds its settings, and
`+eval/plugins@eval.plugins.<name>=<file>` (its folder on hydra.searchpath) adds it; `eval.run` then names it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from . import emergent_misalignment, identity, in_domain, mmlu, persona, self_recognition, truthfulqa
from .schemas import EVAL_NAMES

EVALS = {m.NAME: m for m in (self_recognition, emergent_misalignment, truthfulqa, mmlu, identity, in_domain, persona)}
assert tuple(EVALS) == EVAL_NAMES, "schemas.EVAL_NAMES and the registry must list the same evaluations"


def eval_module(name: str, cfg) -> ModuleType:
    """The evaluation `name`: one of EVALS, or a plugin of the config (`eval.plugins.<name>.module`)."""
    if name in EVALS:
        return EVALS[name]
    plugins = cfg["eval"]["plugins"]
    if name not in plugins:
        raise ValueError(f"eval.run: unknown evaluation {name!r}; use some of {tuple(EVALS)} or add it to eval.plugins")
    module = importlib.import_module(plugins[name]["module"])
    if getattr(module, "NAME", None) != name:
        raise ValueError(f"eval.plugins.{name}.module: {plugins[name]['module']} has NAME "
                         f"{getattr(module, 'NAME', None)!r}, not {name!r}")
    return module


def eval_files(cfg) -> list[str]:
    """The data files the evaluations in `eval.run` read, as each declares (`data_files`)."""
    return [f for name in cfg["eval"]["run"] for f in eval_module(name, cfg).data_files(cfg)]


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
