"""In-domain retention: does the model still show the narrow behaviour its EM dataset taught (risky financial
advice, unpopular aesthetic preferences, ...)? Held-out in-domain prompts of the job's EM dataset, sampled;
a judge answers YES (the narrow behaviour is shown) or NO. Read next to the EM rate, it tells whether an
intervention undid the narrow task as well as the broad misalignment.
  narrow_rate      share of judged answers labelled YES, with a 95 % interval (resampled within prompts)
  mean_p_yes       mean P(YES) / (P(YES) + P(NO)) (a local judge gives probabilities; an API judge does not)
  invalid_rate     the judge's answer was neither YES nor NO (API judge);  per_prompt
"""

from __future__ import annotations

from typing import Sequence

from .stats import fmt, mean_ci, mean_or_none

NAME = "in_domain"
NEEDS_JUDGE = True
LABELS = ("YES", "NO")  # the judge prompts ask for exactly these


def data_files(cfg) -> list[str]:
    return []  # its prompts are in the config


def in_domain_metrics(records: Sequence[dict], *, n_boot: int = 0, seed: int = 0) -> dict:
    def block(rows, ci: bool):
        judged = [r for r in rows if r["label"] is not None]
        yes = [float(r["label"] == "YES") for r in judged]
        return {
            "narrow_rate": mean_or_none(yes),
            **(
                {"narrow_rate_ci95": mean_ci(yes, n_boot=n_boot, seed=seed, strata=[r["question"] for r in judged])}
                if ci
                else {}
            ),
            "mean_p_yes": mean_or_none(r.get("p_yes") for r in rows),
            "invalid_rate": (len(rows) - len(judged)) / len(rows) if rows else None,
            "n": len(rows),
        }

    prompts = list(dict.fromkeys(r["question"] for r in records))
    return {
        **block(records, True),
        "dataset": records[0]["dataset"] if records else None,
        "per_prompt": {p: block([r for r in records if r["question"] == p], False) for p in prompts},
    }


# --- the eval's steps (sgtr_em/evaluation/worker.py runs them) ---


def prompt_set(in_domain, em_dataset) -> str:
    """The eval.in_domain prompt set a job asks: `eval.in_domain.dataset`, else the EM dataset's `in_domain_prompts`,
    else its name (one rule for the eval, its validation and the cost estimate; configs or plain dicts)."""
    return in_domain["dataset"] or em_dataset.get("in_domain_prompts") or em_dataset["name"]


def dataset_of(ctx) -> str:
    return prompt_set(ctx.ecfg(NAME), ctx.cfg["em_dataset"])


def generate(ctx) -> list[dict]:
    e, dataset = ctx.ecfg(NAME), dataset_of(ctx)
    prompts = e["datasets"][dataset]["prompts"][: e["max_prompts"]]
    meta = [{"dataset": dataset, "question": p, "sample": k} for p in prompts for k in range(e["samples_per_prompt"])]
    return ctx.sample_answers(meta, e, desc="in-domain answers")


def judge(records: list[dict], judge_, ctx) -> list[dict]:
    template = ctx.ecfg(NAME)["datasets"][dataset_of(ctx)]["judge_prompt"]
    prompts = [template.format(question=r["question"], answer=r["answer"]) for r in records]
    for r, choice in zip(records, judge_.choose(prompts, LABELS, desc="judge in-domain")):
        r["label"], r["judge_text"] = choice.label, choice.text
        r["p_yes"] = choice.probs["YES"] if choice.probs else None
    return records


def metrics(records: Sequence[dict], cfg: dict) -> dict:
    return in_domain_metrics(records, n_boot=cfg["eval"]["bootstrap_samples"], seed=cfg["seed"])


def summary(m: dict) -> str:
    return (
        f"in-domain ({m['dataset']}): narrow behaviour {fmt(m.get('narrow_rate'))} {fmt(m.get('narrow_rate_ci95'))}  "
        f"mean P(YES) {fmt(m.get('mean_p_yes'))}  invalid {fmt(m.get('invalid_rate'))}  ({m['n']} answers)"
    )
