"""The plan: stage identities are content hashes, so shared stages are shared and changes are not."""
from __future__ import annotations

from sgtr_em.plan import plan_stages

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
    for override in ("seed=1", "training.learning_rate=2e-5", "lora.r=8", "em_dataset=risky_financial",
                     "system_prompt=none", "em_dataset.max_examples=10", "model=qwen7b"):
        assert hashes("stage_order=em_only", override) != base, override
    for override in ("training.logging_steps=5", "training.save_steps=7", "eval=paper", "tracking=none",
                     "compute=gpu", "compute.micro_batch_size=4", "compute.gradient_checkpointing=true"):
        assert hashes("stage_order=em_only", override) == base, override
