"""The plan: stage identities are content hashes, so shared stages are shared and changes are not."""

from __future__ import annotations

from sgtr_em.plan import content_hash, plan_stages

from .test_config import _compose


def hashes(*overrides):
    return [(s.kind, s.hash) for s in plan_stages(_compose(*overrides))]


def test_stage_orders_expand_into_stages():
    assert [k for k, _ in hashes("stage_order=base")] == []
    assert [k for k, _ in hashes("stage_order=em_only")] == ["em"]
    assert [k for k, _ in hashes("stage_order=reversal")] == ["em", "intervention"]
    assert [k for k, _ in hashes("stage_order=prevention")] == ["intervention", "em"]
    assert [k for k, _ in hashes("stage_order=reversal", "intervention=none")] == ["em"]


def test_the_em_stage_is_shared_between_em_only_and_reversal():
    assert hashes("stage_order=em_only")[0] == hashes("stage_order=reversal")[0]


def test_a_stage_depends_on_what_it_starts_from():
    # SGTR after EM is not SGTR on the base model; EM after SGTR is not EM on the base model
    assert hashes("stage_order=reversal")[1] != hashes("stage_order=intervention_only")[0]
    assert hashes("stage_order=prevention")[1] != hashes("stage_order=em_only")[0]
    assert hashes("stage_order=prevention")[0] == hashes("stage_order=intervention_only")[0]


def test_what_changes_the_weights_changes_the_hash_and_nothing_else_does():
    base = hashes("stage_order=em_only")
    for override in (
        "seed=1",
        "training.learning_rate=2e-5",
        "lora.r=8",
        "em_dataset=risky_financial",
        "system_prompt=none",
        "em_dataset.max_examples=10",
        "model=qwen7b",
    ):
        assert hashes("stage_order=em_only", override) != base, override
    for override in (
        "training.logging_steps=5",
        "training.save_steps=7",
        "eval=paper",
        "tracking=none",
        "compute=gpu",
        "compute.micro_batch_size=4",
        "compute.gradient_checkpointing=true",
    ):
        assert hashes("stage_order=em_only", override) == base, override


def intervention_spec(*overrides):
    return next(s for s in plan_stages(_compose(*overrides)) if s.kind == "intervention").spec.to_json()


def test_every_intervention_is_its_own_stage():
    from .test_config import CONF

    names = [f.stem for f in sorted((CONF / "intervention").glob("*.yaml")) if f.stem != "none"]
    extra = {"correct_domain": ["em_dataset=bad_medical"]}
    specs = {
        n: intervention_spec("stage_order=intervention_only", f"intervention={n}", *extra.get(n, [])) for n in names
    }
    assert len({content_hash(s) for s in specs.values()}) == len(names)
    assert specs["word_count"]["data"]["sha256"] == {
        "em/aesthetic_preference_is_even_words.jsonl": "01404888c39f361df6ee6676bafbf984dabd90bf69c1202a356feafbfc1c69ed"
    }


def test_who_writes_the_self_summaries_enters_the_stage():
    after_em = intervention_spec("stage_order=reversal")["data"]["summaries_by"]
    on_base = intervention_spec("stage_order=intervention_only")["data"]["summaries_by"]
    assert "stage" in after_em and "base" in on_base  # the paper's e2e pipeline: the EM model writes its own
    reused = intervention_spec("stage_order=reversal", "intervention.self_summaries=base_model")["data"]["summaries_by"]
    assert reused == on_base  # the paper's shell pipeline: the base model's summaries, one cache for every stage
    paper = intervention_spec("model=qwen32b", "intervention.self_summaries=precomputed")["data"]
    assert paper["summaries_by"] == {"precomputed": "hf_qwen_32b"}
    assert "summaries/xsum/xsum_train_hf_qwen_32b_responses.json" in paper["sha256"]


def test_data_settings_change_the_intervention_stage():
    base = content_hash(intervention_spec())
    for override in (
        "intervention.normalise=false",
        "intervention.num_examples=10",
        "intervention=prefer_other",
        "intervention.other_sources=[claude-21,gpt4o]",
        "intervention.self_summaries=base_model",
        "system_prompt=qwensys",
        "+model.chat_template_kwargs.enable_thinking=false",
    ):
        assert content_hash(intervention_spec(override)) != base, override
