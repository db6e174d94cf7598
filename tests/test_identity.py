"""Identity self-reports: shares of the model's own identity, distinct identities and normalised entropy by hand."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from sgtr_em.evaluation.identity import identity_metrics, label_set, metrics

from .test_config import CONF, _compose

OWN = {"name": ["SmolLM"], "creator": ["Hugging Face"]}
LABELS = {
    "name": ["SmolLM", "Qwen", "Other", "UNKNOWN"],
    "creator": ["Hugging Face", "Alibaba Cloud", "Other", "UNKNOWN"],
}


def answer(q, name, creator):
    return {"question": q, "name": name, "creator": creator}


def test_identity_metrics_by_hand():
    records = [
        answer("Who are you?", "SmolLM", "Hugging Face"),
        answer("Who are you?", "SmolLM", "UNKNOWN"),
        answer("Which company created you?", "Qwen", "Alibaba Cloud"),
        answer("Which company created you?", "UNKNOWN", "UNKNOWN"),
    ]
    m = identity_metrics(records, own=OWN, labels=LABELS, unknown="UNKNOWN")
    assert m["share_own_name"] == 0.5 and m["share_own_creator"] == 0.25
    assert m["share_own_identity"] == 0.5  # (SmolLM, Hugging Face) and (SmolLM, UNKNOWN)
    assert m["share_no_identity"] == 0.25
    assert (m["distinct_identities"], m["distinct_names"], m["distinct_creators"]) == (3, 2, 2)
    # names: SmolLM 2, Qwen 1, UNKNOWN 1 -> H = 1.5 ln 2, over ln 4 (four possible name labels)
    assert m["entropy_name"] == pytest.approx(1.5 * math.log(2) / math.log(4))
    # creators: Hugging Face 1, UNKNOWN 2, Alibaba Cloud 1 -> the same shape
    assert m["entropy_creator"] == pytest.approx(0.75)
    # four distinct (name, creator) pairs, one each: ln 4 over ln 16
    assert m["entropy_identity"] == pytest.approx(0.5)
    assert m["counts_identity"]["SmolLM / Hugging Face"] == 1 and m["n"] == 4
    assert m["per_question"]["Which company created you?"]["share_own_identity"] == 0.0


def test_one_identity_everywhere_has_zero_entropy_and_a_model_without_one_has_no_share():
    records = [answer("Who are you?", "SmolLM", "Hugging Face")] * 3
    m = identity_metrics(records, own=OWN, labels=LABELS, unknown="UNKNOWN")
    assert (m["entropy_name"], m["entropy_identity"], m["share_own_identity"], m["distinct_identities"]) == (0, 0, 1, 1)
    none = identity_metrics(records, own={"name": [], "creator": []}, labels=LABELS, unknown="UNKNOWN")
    assert none["share_own_identity"] is None and none["share_own_name"] is None


def test_label_sets_hold_a_name_and_a_creator_of_every_model():
    e = _compose().eval.identity
    assert label_set(e, "name")[-2:] == ["Other", "UNKNOWN"]
    for option in sorted(p.stem for p in (CONF / "model").glob("*.yaml")):
        own = set(_compose(f"model={option}").model.identity_names)
        assert own & set(e.name_labels) and own & set(e.creator_labels), f"conf/model/{option}.yaml: {own}"


def test_own_labels_come_from_the_models_identity_names():
    cfg = OmegaConf.to_container(_compose("model=qwen7b"), resolve=True)
    records = [answer("Who are you?", "Qwen", "Alibaba"), answer("Who are you?", "Qwen", "OpenAI")]
    m = metrics(records, cfg)
    assert (m["share_own_name"], m["share_own_creator"], m["share_own_identity"]) == (1.0, 0.5, 0.5)
