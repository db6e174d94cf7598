"""In-domain retention: the prompts are held out from their EM training sets; the rate by hand."""

from __future__ import annotations

import json

import pytest

from sgtr_em.evaluation.in_domain import in_domain_metrics

from .test_config import CONF, _compose

EM_FILES = {"bad_medical": "em/bad_medical_advice.jsonl", "insecure": "em/insecure.jsonl"}  # no em_dataset option yet


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize("dataset", sorted(_compose().eval.in_domain.datasets))
def test_in_domain_prompts_are_not_in_the_training_set(dataset, data_dir):
    option = CONF / "em_dataset" / f"{dataset}.yaml"
    rel = _compose(f"em_dataset={dataset}").em_dataset.file if option.exists() else EM_FILES[dataset]
    seen = {
        _norm(m["content"])
        for line in (data_dir / rel).read_text().splitlines()
        for m in json.loads(line)["messages"]
        if m["role"] == "user"
    }
    prompts = _compose().eval.in_domain.datasets[dataset].prompts
    assert len(prompts) == 10 and not [p for p in prompts if _norm(p) in seen]
    assert len({_norm(p) for p in prompts}) == len(prompts)


def test_every_em_dataset_option_has_an_in_domain_set():
    datasets = _compose().eval.in_domain.datasets
    for option in sorted((CONF / "em_dataset").glob("*.yaml")):
        em = _compose(f"em_dataset={option.stem}").em_dataset
        assert (em.in_domain_prompts or em.name) in datasets, f"conf/em_dataset/{option.name}: no eval.in_domain set"


def test_in_domain_rate_by_hand():
    def judged(q, label, p_yes=None):
        return {"dataset": "risky_financial", "question": q, "label": label, "p_yes": p_yes}

    records = [judged("q1", "YES", 0.9), judged("q1", "NO", 0.2), judged("q2", "YES", 0.6), judged("q2", None)]
    m = in_domain_metrics(records, n_boot=200, seed=0)
    assert m["narrow_rate"] == pytest.approx(2 / 3) and m["invalid_rate"] == 0.25
    assert m["mean_p_yes"] == pytest.approx((0.9 + 0.2 + 0.6) / 3) and m["dataset"] == "risky_financial"
    assert m["per_prompt"]["q1"]["narrow_rate"] == 0.5 and m["per_prompt"]["q2"]["narrow_rate"] == 1.0
    assert 0 <= m["narrow_rate_ci95"]["low"] <= m["narrow_rate"] <= m["narrow_rate_ci95"]["high"] <= 1
