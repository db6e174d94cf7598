"""Every evaluation by name (`eval.run`). An evaluation is a module with:

    NAME, NEEDS_JUDGE
    data_files(cfg) -> [paths]      the data-directory files it reads (the resolved config): checked, or downloaded,
                                    before any training (sgtr_em/job.py required_files)
    generate(ctx) -> records        with the model under test (sgtr_em/evaluation/context.py)
    judge(records, judge, ctx)      only when NEEDS_JUDGE: adds the judge's verdicts to the records
    metrics(records, cfg) -> dict   pure: the same records and config give the same metrics (recompute.py)
    summary(metrics) -> str         one line for the end of a run
    data_problems(cfg, files)       optional: what the data files alone say is wrong, before any training

Adding an evaluation: a module like these, its entry in EVALS below and its name in schemas.EVAL_NAMES (and in
schemas.OPT_IN_EVALS unless the presets' eval.run name it), a schema section in schemas.py, a section in
conf/eval/paper.yaml, its cost in sgtr_em/cost.py eval_cost (docs/ARCHITECTURE.md "How to add": the full list).
Or, outside the package, one module and its YAML: the YAML (an `eval/plugins` config, e.g.
tests/fixtures/conf/eval/plugins/toy.yaml) names the module (`module: my_pkg.my_eval`) and holds its settings, and
`+eval/plugins@eval.plugins.<name>=<file>` (its folder on hydra.searchpath) adds it; `eval.run` then names it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from . import emergent_misalignment, identity, in_domain, mmlu, persona, self_recognition, truthfulqa
from .schemas import EVAL_NAMES
from .stats import fmt

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
        raise ValueError(
            f"eval.plugins.{name}.module: {plugins[name]['module']} has NAME "
            f"{getattr(module, 'NAME', None)!r}, not {name!r}"
        )
    return module


def eval_files(cfg) -> list[str]:
    """The data files the evaluations in `eval.run` read, as each declares (`data_files`)."""
    return [f for name in cfg["eval"]["run"] for f in eval_module(name, cfg).data_files(cfg)]


def eval_data_problems(cfg, files) -> list[str]:
    """What each evaluation in `eval.run` finds wrong from the data files alone (its optional `data_problems`)."""
    modules = [eval_module(name, cfg) for name in cfg["eval"]["run"]]
    return [p for m in modules if hasattr(m, "data_problems") for p in m.data_problems(cfg, files)]


def evaluated(metrics: dict) -> list[str]:
    """The evaluations in `metrics` (a run's metrics.json): the registry's in its order, then plugins'."""
    plugins = [name for name, m in metrics.items() if name not in EVALS and name != "model" and isinstance(m, dict)]
    return [name for name in EVALS if name in metrics] + plugins


def summary_lines(metrics: dict, cfg=None) -> list[str]:
    """One line per evaluation in `metrics` (a run's metrics.json), in the registry's order, then the plugins of
    `cfg` (eval.plugins); an evaluation whose every answer was the first option says so (its accuracy is then fixed
    by how the items are built)."""
    plugins = cfg["eval"]["plugins"] if cfg is not None else {}
    return [
        eval_module(name, cfg).summary(metrics[name]) + position_bias_note(metrics[name])
        for name in evaluated(metrics)
        if name in EVALS or name in plugins
    ]


def position_bias_note(m: dict) -> str:
    """Pure position bias: the model chose the first option (or never did) on every item. Self-recognition shows each
    pair in both orders, so its accuracy is then exactly 0.5; TruthfulQA's is the share of items whose answer is A."""
    rate = m.get("chose_first_rate")
    if rate not in (0.0, 1.0):
        return ""
    return (
        f"  <- pure position bias (chose_first_rate {rate:.1f}: {'always' if rate else 'never'} the first option): "
        "its accuracy is fixed by the order of the options, chance by construction, not a measurement"
    )


def effect_lines(base: dict, final: dict) -> list[str]:
    """For each evaluation also run on the base model (eval.base), one line per metric with a 95 % interval: the base
    model's value, the final model's with its interval, and whether the interval excludes the base value (the headline
    named by its definition; the invalid rates, where recorded, show what moved with it)."""
    lines = []
    for name in evaluated(final):
        b, f = base.get(name), final.get(name)
        if not b or not f:
            continue
        invalid = (
            f" (invalid rate {b['invalid_rate']:.3f} -> {f['invalid_rate']:.3f})"
            if b.get("invalid_rate") is not None and f.get("invalid_rate") is not None
            else ""
        )
        keys = sorted((k[: -len("_ci95")] for k in f if k.endswith("_ci95")), key=lambda k: k != "headline")
        for key in keys:
            ci = f[f"{key}_ci95"]
            if not isinstance(b.get(key), float) or not isinstance(f.get(key), float) or not isinstance(ci, dict):
                continue
            if key != "headline" and (b[key], f[key], ci) == (
                b.get("headline"),
                f.get("headline"),
                f.get("headline_ci95"),
            ):
                continue  # the headline's own estimator, printed as the headline
            if ci["low"] <= b[key] <= ci["high"]:
                verdict = "the interval includes the base value: no effect measured"
            else:
                verdict = f"the interval EXCLUDES the base value: a measured effect of {f[key] - b[key]:+.3f}"
            what = f"headline, {f.get('headline_definition')}" if key == "headline" else key
            lines.append(
                f"effect on {name} {what}: base model {b[key]:.3f} -> final {f[key]:.3f} {fmt(ci)}; {verdict}{invalid}"
            )
    return lines
