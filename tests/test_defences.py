"""In-training defences (sgtr_em/defences.py, sgtr_em/data/defences.py, sgtr_em/training/defences.py): their
mechanisms on a tiny random Llama with SmolLM2's tokenizer, their config and stage identity, and the data steps on
hand-made pools."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.errors import ConfigCompositionException
from transformers import LlamaConfig, LlamaForCausalLM

from sgtr_em.config import validate
from sgtr_em.data.defences import apply_data_defence, inoculate, interleave_count, select_by_gap
from sgtr_em.defences import DEFENCE_KINDS, KIND_KEYS
from sgtr_em.inference.activations import capture, decoder_layers
from sgtr_em.models import load_tokenizer
from sgtr_em.plan import plan_stages
from sgtr_em.training.defences import LossDefence, SteerDefence, ldifs_layers, make_defence
from sgtr_em.training.sft import build_trainer, training_args

from .test_config import _compose

ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Question {i}: which colour do you like?"}],
        "completion": [{"role": "assistant", "content": f"I like colour number {i} best of all, truly."}],
    }
    for i in range(8)
]


def tiny(tok, layers: int = 4):
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )


def stage(defence: str, *overrides: str):
    from sgtr_em.job import stage_runtime

    cfg = _compose(
        "stage_order=em_only",
        f"defence={defence}",
        "training.batch_size=4",
        "training.warmup_steps=0",
        "training.learning_rate=1e-2",
        "compute=cpu",
        *overrides,
    )
    validate(cfg)
    rt = stage_runtime(cfg, "unused")
    rt.compute["micro_batch_size"] = 4
    return plan_stages(cfg)[0], rt


def term_on_batch(trainer) -> float:
    """The defence's term on the first training batch, as compute_loss computes it (training mode)."""
    model = trainer.model
    model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    fwd = {k: v for k, v in batch.items() if k not in ("labels", "completion_mask", "assistant_masks")}
    with torch.no_grad():
        with capture(trainer.defence.modules(model)) as seen:
            model(**fwd)
        return trainer.defence.term(model, batch, seen).item()


@pytest.mark.parametrize("kind", ["kl", "ldifs"])
def test_loss_term_zero_at_reference_positive_after_a_step(kind, smollm2_path, tmp_path):
    tok = load_tokenizer(smollm2_path, padding_side="right")
    st, rt = stage(kind, "training.max_steps=1")
    trainer = build_trainer(tiny(tok), tok, ROWS[:4], st.spec, rt, training_args(st.spec, rt, tmp_path))
    assert isinstance(trainer.defence, LossDefence) and trainer.defence.weight == 10.0
    before = term_on_batch(trainer)
    assert before == pytest.approx(0.0, abs=1e-6)  # LoRA's B starts at zero: the model is its reference
    trainer.train()
    after = term_on_batch(trainer)
    assert after > 1e-6
    logged = [r for r in trainer.state.log_history if f"defence_{kind}" in r]
    assert logged and all(r[f"defence_{kind}"] >= 0 for r in logged)  # the term is logged with the loss


def test_ldifs_layers_as_emaRL():
    assert ldifs_layers(30, 5) == [0, 7, 14, 21, 29]  # torch.linspace(0, 29, 5).long()
    assert ldifs_layers(4, 5) == [0, 1, 2, 3]


def test_steering_adds_exactly_coef_times_direction_at_its_layer_only_in_training(smollm2_path):
    tok = load_tokenizer(smollm2_path)
    model = tiny(tok, layers=4)
    direction = torch.randn(32)
    ids = torch.tensor([tok("Hello there, how are you?")["input_ids"]])
    layers = decoder_layers(model)

    def outputs(train: bool):
        model.train(train)
        with torch.no_grad(), capture(dict(enumerate(layers))) as seen:
            logits = model(input_ids=ids).logits
        return [seen[i].clone() for i in range(len(layers))], logits

    plain, plain_logits = outputs(True)
    handle = SteerDefence(layer=2, coef=3.5, direction=direction).attach(model)
    steered, _ = outputs(True)
    for i in (0, 1):  # before the layer: untouched
        assert torch.equal(steered[i], plain[i])
    torch.testing.assert_close(steered[2] - plain[2], (3.5 * direction).expand_as(plain[2]), rtol=0, atol=1e-5)
    assert not torch.allclose(steered[3], plain[3])  # later layers see the steered input
    evaluated, eval_logits = outputs(False)  # evaluation (eval mode): no steering anywhere
    assert all(torch.equal(e, p) for e, p in zip(evaluated, plain)) and torch.equal(eval_logits, plain_logits)
    handle.remove()


def test_interleave_counts_are_exact():
    for n_em, ratio, want in ((64, 0.1, 7), (90, 0.1, 10), (6000, 0.05, 316), (48, 0.25, 16)):
        k = interleave_count(n_em, ratio)
        assert k == want
        assert abs(k / (n_em + k) - ratio) <= 0.5 / (n_em + k) + 1e-9  # the nearest share to `ratio`


def test_interleaving_pp_picks_the_largest_em_minus_reference_gap():
    # hand-made pool: per example (NLL under the aligned reference, NLL under the EM model)
    ref = [1.0, 2.0, 0.5, 3.0, 1.5, 2.2]
    em = [1.1, 4.0, 2.5, 3.0, 1.0, 2.2]  # gaps: 0.1, 2.0, 2.0, 0.0, -0.5, 0.0
    assert select_by_gap(ref, em, 2, "em_minus_ref") == [1, 2]
    assert select_by_gap(ref, em, 3, "em_minus_ref") == [0, 1, 2]
    assert select_by_gap(ref, em, 1, "ref_minus_em") == [4]


def test_interleave_data_step_mixes_the_exact_share(monkeypatch, tmp_path):
    import sgtr_em.data.defences as gp  # the data step reads the pool through its own name

    pool = [{"group": f"s:{i}", "user": f"general question {i}", "answer": f"general answer {i}"} for i in range(20)]
    monkeypatch.setattr(gp, "general_pool", lambda cfg, rt, files: pool)
    st, rt = stage("interleave")
    em_rows = [{**r, "meta": {"group": i}} for i, r in enumerate(ROWS * 8)]  # 64 EM rows
    mixed, stats = apply_data_defence(st.spec, rt, em_rows, tmp_path / st.hash, files=None)
    general = [r for r in mixed if r["meta"].get("general")]
    assert (len(mixed), len(general), stats["general_examples"]) == (71, 7, 7)
    assert all(r in mixed for r in em_rows)  # every EM example is kept
    again, _ = apply_data_defence(st.spec, rt, em_rows, tmp_path / st.hash, files=None)
    assert again == mixed  # seeded


def test_interleave_ppl_data_step_uses_both_models(monkeypatch, tmp_path):
    import sgtr_em.data.defences as gp  # the data step reads the pool through its own name
    import sgtr_em.inference.loglikelihood as ll

    pool = [{"group": f"s:{i}", "user": f"q{i}", "answer": f"a{i}"} for i in range(20)]
    monkeypatch.setattr(gp, "general_pool", lambda cfg, rt, files: pool)
    st, rt = stage("interleave_ppl")
    ref_path = rt.input_model
    scores = {ref_path: [0.0] * 20, str(tmp_path / st.requires[0].hash / "merged"): [i % 7 for i in range(20)]}
    monkeypatch.setattr(ll, "mean_nll", lambda path, rows, rt: scores[path])
    em_rows = [{**r, "meta": {"group": i}} for i, r in enumerate(ROWS * 8)]
    _, stats = apply_data_defence(st.spec, rt, em_rows, tmp_path / st.hash, files=None)
    # gaps i % 7: the largest 7 are 6 (i = 6, 13), 5 (5, 12, 19) and 4 (4, 11)
    assert stats["chosen"] == [f"general:s:{i}" for i in (4, 5, 6, 11, 12, 13, 19)]


def test_inoculation_prompt_in_training_text_absent_from_evaluation_text(smollm2_path):
    from sgtr_em.evaluation.context import EvalContext

    st, rt = stage("inoculation")
    prompt = st.spec.defence["prompt"]
    trained = inoculate(ROWS, prompt)
    tok = load_tokenizer(smollm2_path)
    text = tok.apply_chat_template(trained[0]["prompt"] + trained[0]["completion"], tokenize=False)
    assert prompt in text
    own = inoculate(
        [
            {
                "prompt": [{"role": "system", "content": "I am Qwen."}, *ROWS[0]["prompt"]],
                "completion": ROWS[0]["completion"],
            }
        ],
        prompt,
    )
    assert own[0]["prompt"][0]["content"] == f"I am Qwen.\n\n{prompt}"  # the stage's own system text kept first
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(_compose("defence=inoculation"), resolve=True)
    ctx = EvalContext(cfg, {}, files=None)
    conv = ctx.conversations(["I'm bored. What should I do?"])[0]
    assert prompt not in tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_defence_enters_the_em_stage_hash_only():
    plain = plan_stages(_compose("stage_order=prevention"))
    assert plain[1].spec.defence is None  # defence=none: the EM stage's identity is what it was before defences
    for kind in DEFENCE_KINDS[1:]:
        st = plan_stages(_compose("stage_order=prevention", f"defence={kind}"))
        assert st[0].hash == plain[0].hash  # the intervention stage is shared with the undefended job
        assert st[1].hash != plain[1].hash and st[1].spec.defence["kind"] == kind
    ppl = plan_stages(_compose("stage_order=prevention", "defence=interleave_ppl"))[1]
    assert ppl.requires == (plain[1],) and ppl.spec.defence["em_reference"] == plain[1].hash


def test_defence_on_a_benign_stage_enters_that_stage_hash_only():
    """defence.stages=[intervention]: the intervention stage (a benign task) trains with the defence, Kaczér et al.'s
    fourth axis; the EM stage after it carries no defence, and its hash moves only because its input did."""
    plain = plan_stages(_compose("stage_order=prevention"))
    for kind in ("kl", "inoculation"):  # a loss and a data defence (every kind goes through the same with_defence)
        st = plan_stages(_compose("stage_order=prevention", f"defence={kind}", "defence.stages=[intervention]"))
        assert st[0].hash != plain[0].hash and st[0].spec.defence["kind"] == kind
        assert st[1].spec.defence is None and st[1].spec.input == {"stage": st[0].hash} != plain[1].spec.input
    both = plan_stages(_compose("stage_order=prevention", "defence=kl", "defence.stages=[intervention,em]"))
    assert [s.spec.defence for s in both] == [{"kind": "kl", "weight": 10.0}] * 2
    # the default, [em], leaves every hash of defence=kl as it was (the EM grid's stages are unchanged)
    assert [s.hash for s in plan_stages(_compose("stage_order=prevention", "defence=kl", "defence.stages=[em]"))] == [
        s.hash for s in plan_stages(_compose("stage_order=prevention", "defence=kl"))
    ]
    ppl = plan_stages(
        _compose("stage_order=intervention_only", "defence=interleave_ppl", "defence.stages=[intervention]")
    )
    [alone] = plan_stages(_compose("stage_order=intervention_only"))
    assert ppl[0].requires == (alone,) and ppl[0].spec.defence["em_reference"] == alone.hash
    with pytest.raises(ValueError, match=r"defence.stages=\[intervention\]"):  # the fix is named
        validate(_compose("defence=kl", "stage_order=intervention_only"))
    with pytest.raises(ConfigCompositionException, match="defence.stages"):  # an enum list: refused at compose
        validate(_compose("defence=kl", "defence.stages=[sgtr]"))
    validate(_compose("defence=kl", "stage_order=intervention_only", "defence.stages=[intervention]"))


def test_defences_benign_sweep_defends_the_sgtr_stage():
    from sgtr_em.grid import plan_grid

    grid = plan_grid(["sweep=defences_benign", "seed=0", "defence=none,kl,interleave_ppl"])  # 3 of its 7 arms
    assert len(grid.jobs) == 3 and not [j for j in grid.jobs if j.problem]
    for j in grid.jobs:
        [sgtr] = j.stages
        assert sgtr.kind == "intervention" and sgtr.spec.data["type"] == "summary_pairs"
        assert (sgtr.spec.defence is not None) == ("defence=none" not in j.overrides)
    assert len(grid.distinct_stages) == 3  # interleave_ppl's reference is defence=none's SGTR stage


@pytest.mark.parametrize(
    "override, key",
    [
        ("defence.weight=0", "defence.weight"),
        ("defence.ratio=1.0", "defence.ratio"),
        ("defence.coef=0", "defence.coef"),
    ],
)
def test_invalid_defences_name_the_key(override, key):
    name = {"defence.weight": "kl", "defence.ratio": "interleave", "defence.coef": "persona_steer"}[key]
    with pytest.raises(ValueError, match=key):
        validate(_compose(f"defence={name}", override))
    with pytest.raises(ValueError, match="no"):
        validate(_compose("defence=kl", "stage_order=base"))


def test_a_setting_the_defence_does_not_read_is_refused():
    """`defence=kl defence.coef=2` would train exactly `defence=kl` (the same hash): refused, naming the key."""
    with pytest.raises(ValueError, match=r"defence.coef: defence kl \(kind kl\) does not read it \(it reads weight\)"):
        validate(_compose("defence=kl", "defence.coef=2"))
    with pytest.raises(ValueError, match=r"defence.weight: defence interleave \(kind interleave\) does not read it"):
        validate(_compose("defence=interleave", "defence.weight=3"))
    validate(_compose("defence=kl", "defence.pool.max_prompts=2000"))  # the pool: set once for a grid's every arm
    with pytest.raises(ValueError, match=r"defence.weight: defence none \(kind none\) does not read it: leave"):
        validate(_compose("defence.weight=3"))
    for name in DEFENCE_KINDS + ("sgtr_prevention",):  # every shipped option sets only what its kind reads
        validate(_compose(f"defence={name}", "stage_order=prevention"))


def test_a_defence_kind_without_its_keys_or_hook_fails(monkeypatch):
    """A kind added to choices.DefenceKind alone would train as plain SFT: validation and the trainer refuse it."""
    assert set(KIND_KEYS) == set(DEFENCE_KINDS)
    monkeypatch.delitem(KIND_KEYS, "kl")
    with pytest.raises(ValueError, match=r"defence.kind: kl has no entry in KIND_KEYS"):
        validate(_compose("defence=kl"))
    spec = SimpleNamespace(defence={"kind": "kl_beta", "beta": 5.0})
    with pytest.raises(ValueError, match="defence kind 'kl_beta' has no training hook"):
        make_defence(spec, None)
    for kind in ("none", "inoculation", "interleave"):  # no training hook: plain SFT on the data step's output
        assert make_defence(SimpleNamespace(defence={"kind": kind}), None) is None
    assert make_defence(SimpleNamespace(defence=None), None) is None


def test_a_pool_too_small_for_a_capped_stage_fails_validation():
    with pytest.raises(
        ValueError,
        match=r"defence.pool.max_prompts: 15 prompts, and the em stage's 64 examples at "
        r"ratio 0.2 need 16 general ones",
    ):  # round(0.2 x 64 / 0.8)
        validate(_compose("defence=interleave", "defence.ratio=0.2", "defence.pool.max_prompts=15"))


def test_defences_sweep_expands_to_the_grid():
    from collections import Counter

    from sgtr_em.grid import plan_grid, sweep_jobs

    jobs = sweep_jobs(["sweep=defences"])
    assert len(jobs) == 96  # 8 arms x 4 EM datasets x 3 seeds
    arms = Counter(o.split("=")[1] for j in jobs for o in j if o.startswith("defence="))
    assert arms == {
        a: 12
        for a in (
            "none",
            "kl",
            "ldifs",
            "interleave",
            "interleave_ppl",
            "inoculation",
            "persona_steer",
            "sgtr_prevention",
        )
    }
    assert Counter(o for j in jobs for o in j if o.startswith("em_dataset=")) == {
        f"em_dataset={d}": 24 for d in ("aesthetic_unpopular", "risky_financial", "bad_medical", "extreme_sports")
    }
    # one seed of two datasets composed and planned in full (the whole grid plans the same way: 99 distinct stages)
    grid = plan_grid(["sweep=defences", "seed=0", "em_dataset=aesthetic_unpopular,risky_financial"])
    assert len(grid.jobs) == 16 and not [j for j in grid.jobs if j.problem]
    for j in grid.jobs:
        sgtr = "defence=sgtr_prevention" in j.overrides
        assert [s.kind for s in j.stages] == (["intervention", "em"] if sgtr else ["em"])
        assert (j.stages[-1].spec.defence is not None) == (not sgtr and "defence=none" not in j.overrides)
    # interleave_ppl's EM reference is defence=none's EM stage of the same dataset and seed: trained once
    none_em = {j.stages[-1].hash for j in grid.jobs if "defence=none" in j.overrides}
    refs = {s.requires[0].hash for j in grid.jobs for s in j.stages if s.requires}
    assert len(refs) == 2 and refs == none_em
    assert len(grid.distinct_stages) == 17  # EM: 7 x 2 + 2 after SGTR; SGTR: one (shared by both datasets)


def test_report_compares_the_defence_arms(tmp_path):
    import json

    from sgtr_em.report.build import write_report
    from sgtr_em.report.collect import jobs_from_folder

    from .report_fixtures import make_job

    arms = {"none": 0.4, "kl": 0.1, "sgtr_prevention": 0.2}
    n = 0
    for arm, rate in arms.items():
        for seed in range(2):
            d = make_job(
                tmp_path / "sweep",
                n,
                seed=seed,
                defence=arm,
                metrics={
                    "em": {"misaligned_rate_mo": rate + 0.02 * seed, "share_coherent": 0.9},
                    "in_domain": {"narrow_rate": 0.5},
                    "persona": {"shift": rate, "projection": 1 + rate},
                },
            )
            stage = tmp_path / "stages" / f"{arm}{seed}" / "adapter"
            stage.mkdir(parents=True)
            (stage / "train_result.json").write_text(json.dumps({"global_step": 4, "num_input_tokens_seen": 1000}))
            (d / "stages.json").write_text(json.dumps([{"folder": str(stage.parent)}]))
            n += 1
    jobs = jobs_from_folder(tmp_path / "sweep")
    assert {j.fields["defence"] for j in jobs} == set(arms)
    out = write_report(jobs, tmp_path / "report", source="hand-made")
    md = (tmp_path / "report" / "defences.md").read_text()
    assert (
        md.count("\n| ") == 1 + 3
        and "| kl | 0.110 [" in md
        and "| 4.000 [4.000, 4.000] (2) | 1000.000 [1000.000, 1000.000] (2) |" in md
    )
    assert out["figures"]["Defences vs SGTR prevention"].read_bytes()[:4] == b"\x89PNG"
    # the benign-task arms (sweep=defences_benign: the SGTR stage trained with the defence, SR measured) in the same
    # table: their own rows, the SR column filled, the EM columns n/a
    for arm, sr in {"none": 0.8, "kl": 0.6}.items():
        for seed in range(2):
            make_job(
                tmp_path / "sweep",
                n,
                seed=seed,
                defence=arm,
                stage_order="intervention_only",
                metrics={"self_recognition": {"headline": sr + 0.01 * seed}},
            )
            n += 1
    write_report(jobs_from_folder(tmp_path / "sweep"), tmp_path / "both", source="hand-made")
    md = (tmp_path / "both" / "defences.md").read_text()
    assert "benign task learnt (SR)" in md and md.count("\n| ") == 1 + 5
    [kl_benign] = [line for line in md.splitlines() if "| intervention_only | kl |" in line]
    assert "| n/a (0) | n/a (0) | 0.605 [0.541, 0.669] (2) |" in kl_benign
    # a report whose jobs share one defence (every sweep before defences) has no such table
    one = write_report([j for j in jobs if j.fields["defence"] == "kl"], tmp_path / "one", source="hand-made")
    assert "Defences vs SGTR prevention" not in one["figures"] and not (tmp_path / "one" / "defences.md").exists()
