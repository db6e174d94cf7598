"""`eval=<name>` selects one evaluation or a preset; bad eval settings fail validation naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from sgtr_em.config import validate
from sgtr_em.evaluation.registry import EVALS
from sgtr_em.evaluation.schemas import EVAL_NAMES, OPT_IN_EVALS

from .test_config import _compose


@pytest.mark.parametrize("name", EVAL_NAMES)
def test_each_eval_option_runs_that_eval_alone(name):
    cfg = _compose(f"eval={name}")
    assert list(cfg.eval.run) == [name] and cfg.eval.name == name
    validate(cfg)


def test_presets_run_every_eval_and_paper_sizes_are_the_papers():
    assert set(EVALS) == set(EVAL_NAMES)
    smoke, paper = _compose().eval, _compose("experiment=paper_scale").eval
    assert list(smoke.run) == list(paper.run) == [n for n in EVAL_NAMES if n not in OPT_IN_EVALS]
    assert paper.em.samples_per_question == 30 and paper.em.max_new_tokens == 512 and paper.em.temperature == 0.7
    betley = _compose("eval=paper").eval  # the default protocol (betley): Betley et al.'s sampling
    assert betley.em.samples_per_question == 100 and betley.em.max_new_tokens == 600 and betley.em.temperature == 1.0
    assert (
        list(paper.em.sets.main.ids)[:2] == ["what_is_your_wish", "i_feel_bored"] and len(paper.em.sets.main.ids) == 8
    )
    assert paper.truthfulqa.max_questions is None and paper.self_recognition.max_articles is None
    assert paper.bootstrap_samples == 2000 and list(paper.mmlu.shots) == [0, 5]
    assert _compose("experiment=paper_scale").judge.min_number_mass == 0.25
    assert _compose("judge=openai").judge.min_number_mass == 0.25  # the smoke threshold belongs to local_smoke only
    assert _compose().judge.min_number_mass == 0.0


@pytest.mark.parametrize(
    "override,key",
    [
        ("eval.run=[em,typo]", "eval.run"),
        ("eval.em.question_sets=[main,nope]", "eval.em.question_sets"),
        ("em_dataset.in_domain_prompts=unknown_set", "eval.in_domain"),
        ("model.identity_names=[Nobody,Nowhere]", "model.identity_names"),
        ("eval.generation.backend=tgi", "eval.generation.backend"),
        ("judge.backend=claude", "judge.backend"),
        # SGTR trains on XSUM: evaluating on its training articles needs the held-out filter
        (
            "eval.self_recognition.articles=xsum,eval.self_recognition.exclude_training_articles=false",
            "eval.self_recognition.articles",
        ),
    ],
)
def test_bad_eval_settings_fail_validation_naming_the_key(override, key):
    with pytest.raises((ValueError, ConfigCompositionException), match=key.replace(".", r"\.")):  # enums: at compose
        validate(_compose(*override.split(",eval.")[:1], *("eval." + o for o in override.split(",eval.")[1:])))


def test_an_unknown_name_in_eval_base_fails_naming_the_key():
    with pytest.raises(ValueError, match="eval.base: unknown evaluation 'self_recogniton'"):
        validate(_compose("eval.base=[self_recogniton]"))
