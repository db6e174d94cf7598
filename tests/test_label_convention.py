"""The self-recognition label convention, end to end: for the same pair (article, other source, ordering) the label
SGTR trains is the option the SR eval scores as correct. The training set is built the way the stage worker builds it
(compose -> plan -> the kind's builder); the eval runs its own `generate` and `metrics` on the same articles and
summaries (the paper's precomputed Qwen2.5-32B ones, so no model runs) with, in place of the model, one that answers
each prompt with the label training gave that exact prompt. That model must score 1.0 (0.0 for the reversed rule)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from sgtr_em.config import validate
from sgtr_em.data.files import DataFiles
from sgtr_em.evaluation import self_recognition
from sgtr_em.evaluation.context import EvalContext

from .test_config import _compose
from .test_interventions import build

# One job trains on CNN pairs (its eval then on XSUM: a config may not evaluate on its training articles), the
# other evaluates on the same CNN pairs: 6 articles, the paper's other source, the paper's Qwen2.5-32B summaries.
TRAIN = [
    "model=qwen32b",
    "intervention.self_summaries=precomputed",
    "intervention.articles=cnn",
    "intervention.other_sources=[claude-21]",
    "intervention.max_articles=6",
    "intervention.num_examples=null",
    "intervention.normalise=false",  # the eval shows summaries as they are (data/normalise.py)
    "eval.self_recognition.articles=xsum",
]
EVAL = [
    "model=qwen32b",
    "eval.self_recognition.articles=cnn",
    "eval.self_recognition.other_sources=[claude-21]",
    "eval.self_recognition.max_articles=6",
    "eval.self_recognition.summaries=hf_qwen_32b",
]


class Memorised:
    """A model that learned its training set exactly: P(label of this prompt) = 1."""

    def __init__(self, rows):
        self.taught = {json.dumps(r["prompt"]): r["completion"][0]["content"] for r in rows}
        self.asked = 0

    def option_probs(self, conversations, options, desc=None, max_new_tokens=1, sampling=None):
        answers = []
        for conv in conversations:
            key = json.dumps(conv)
            assert key in self.taught, f"the eval asked a prompt training never showed: ...{key[-400:]}"
            label = self.taught[key]
            probs = {o: float(o == label) for o in options}
            # sampled at any temperature, a model sure of its label answers it: the sampled probabilities are the same
            answers.append(
                {
                    "probs": probs,
                    "top_token": label,
                    "text": None,
                    **({"sampled_probs": dict(probs)} if sampling else {}),
                }
            )
        self.asked += len(conversations)
        return answers


@pytest.mark.parametrize("intervention,accuracy", [("sgtr", 1.0), ("prefer_other", 0.0)])
def test_the_sr_eval_scores_as_correct_the_label_sgtr_trains_for_the_same_pair(
    data_dir, tmp_path, intervention, accuracy, monkeypatch
):
    _, rows, _ = build(data_dir, tmp_path, f"intervention={intervention}", *TRAIN)
    assert len(rows) == 12 and {r["completion"][0]["content"] for r in rows} == {"1", "2"}
    model = Memorised(rows)
    # the eval holds out the articles SGTR trains on (it reads the other end of their order); here it is asked
    # about exactly those, to compare the two sides' prompts and labels on the same pairs
    trained = list(dict.fromkeys(r["meta"]["article_id"] for r in rows))
    monkeypatch.setattr(self_recognition, "eval_article_ids", lambda *a, **k: trained)
    cfg = _compose(f"intervention={intervention}", *EVAL)
    validate(cfg)
    ctx = EvalContext(
        OmegaConf.to_container(cfg, resolve=True),
        {"model_path": "memorised"},
        DataFiles(data_dir, tmp_path / "cache", download=False),
    )
    ctx.generator = lambda path=None: model

    records = self_recognition.generate(ctx)
    metrics = self_recognition.metrics(records, ctx.cfg)

    assert model.asked == len(rows) == len(model.taught)  # every trained prompt asked, each once
    assert metrics["n_pairs"] == 12 and metrics["accuracy"] == accuracy and metrics["greedy_accuracy"] == accuracy
    assert metrics["prob_correct"] == accuracy and metrics["invalid_rate"] == 0
    assert metrics["chose_first_rate"] == 0.5  # both orderings of every pair
    for r in records:  # the convention: the correct option is the own summary's position
        assert r["is_correct"] == (accuracy == 1.0) and r["chosen"] == (
            str(r["self_position"]) if accuracy else str(3 - r["self_position"])
        )
