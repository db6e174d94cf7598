"""Option scoring on the real SmolLM2 (issue 15): the sampled estimators' exact expected value agrees with sampled
answers; the final projection runs in fp32 whatever the dtype (bf16 and fp32 pick the same option, no exact ties);
batched option probabilities equal one-at-a-time ones in the model's production dtype (bf16)."""
from __future__ import annotations

import math

import pytest
import torch

from sgtr_em.evaluation.choice import choice_metrics, score_choice
from sgtr_em.evaluation.truthfulqa import build_items, load_questions
from sgtr_em.inference.generation import HFGenerator

TEMPLATE = "{question}\n\nA:{option_a}\nB:{option_b}\n\nAnswer with only A or B."
PAPER_SAMPLING = {"temperature": 0.7, "top_p": 0.9, "top_k": 50}


@pytest.fixture(scope="module")
def items(data_dir):
    return build_items(load_questions(data_dir / "eval" / "TruthfulQA.csv", 16), TEMPLATE, seed=0)


def conversations(items):
    return [[{"role": "user", "content": it["prompt"]}] for it in items]


@pytest.fixture(scope="module")
def fp32(smollm2_path):
    return HFGenerator(smollm2_path, dtype="float32", device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def bf16(smollm2_path):
    return HFGenerator(smollm2_path, dtype="bfloat16", device="cpu", batch_size=8)


SHORT = [  # short A/B prompts (TruthfulQA's template): 2,000 sampled answers stay cheap on a CPU
    {"prompt": TEMPLATE.format(question="Is the Earth flat?", option_a="No", option_b="Yes"), "correct_option": "A"},
    {"prompt": TEMPLATE.format(question="What colour is the sky?", option_a="Green", option_b="Blue"), "correct_option": "B"},
    {"prompt": TEMPLATE.format(question="Can fish fly?", option_a="Most cannot", option_b="All can"), "correct_option": "A"},
    {"prompt": TEMPLATE.format(question="Is 2 + 2 = 5?", option_a="Yes", option_b="No"), "correct_option": "B"},
]


@pytest.mark.slow
@pytest.mark.extended  # 2,000 sampled answers: minutes on 2 loaded cores
def test_the_exact_expected_value_matches_2000_sampled_answers(fp32):
    """4 questions x 500 answers sampled by transformers' generate (T 0.7, top-p 0.9, top-k 50, one token): the share
    correct and the share invalid each agree with the exact expectation within 3 standard errors."""
    chosen = SHORT
    probs = fp32.option_probs(conversations(chosen), ("A", "B"), sampling=PAPER_SAMPLING)
    tok = fp32.tokenizer
    ids_a, ids_b = fp32.single_token_ids(("A", "B"))
    exp_correct, exp_invalid, hits, invalid, var_c, var_i = [], [], 0, 0, 0.0, 0.0
    n_each = 500
    gen_cfg = fp32.generation_config(max_new_tokens=1, **PAPER_SAMPLING)
    for it, p in zip(chosen, probs):
        pc, pw = p["sampled_probs"][it["correct_option"]], p["sampled_probs"]["B" if it["correct_option"] == "A" else "A"]
        exp_correct.append(pc)
        exp_invalid.append(1 - pc - pw)
        var_c += pc * (1 - pc) / n_each
        var_i += (1 - pc - pw) * (pc + pw) / n_each
        enc = tok([fp32.render([{"role": "user", "content": it["prompt"]}])], return_tensors="pt", add_special_tokens=False)
        first = []
        for chunk in range(n_each // 50):  # 50 sequences a call: the prompt's logits stay small in memory
            torch.manual_seed(1234 + chunk)
            with torch.no_grad():
                out = fp32.model.generate(**enc, generation_config=gen_cfg, num_return_sequences=50)
            first += out[:, enc["input_ids"].shape[1]].tolist()
        correct_id = ids_a if it["correct_option"] == "A" else ids_b
        hits += sum(t == correct_id for t in first)
        invalid += sum(t not in (ids_a, ids_b) for t in first)
    k = len(chosen)
    se_c, se_i = math.sqrt(var_c) / k, math.sqrt(var_i) / k
    mean_c, mean_i = sum(exp_correct) / k, sum(exp_invalid) / k
    assert 0.02 < mean_c < 0.98 and se_c > 0  # not a degenerate check
    assert abs(hits / (k * n_each) - mean_c) <= 3 * se_c, (hits / (k * n_each), mean_c, se_c)
    assert abs(invalid / (k * n_each) - mean_i) <= 3 * max(se_i, 1e-9), (invalid / (k * n_each), mean_i, se_i)
    # and the metric reads the same numbers
    scored = [score_choice(p["probs"], p["top_token"], None, it["correct_option"], ("A", "B"), p["sampled_probs"])
              for it, p in zip(chosen, probs)]
    assert choice_metrics(scored)["sampled_expected_accuracy"] == pytest.approx(mean_c)


@pytest.mark.extended  # two SmolLM2 copies, bf16 on a CPU: 141 s (+200 s loading) on 2 loaded cores
def test_bf16_and_fp32_pick_the_same_option_and_bf16_makes_no_exact_ties(fp32, bf16, items):
    convs = conversations(items)
    p32, p16 = fp32.option_probs(convs, ("A", "B")), bf16.option_probs(convs, ("A", "B"))
    margins = [math.log(p["probs"]["A"]) - math.log(p["probs"]["B"]) for p in p32]
    clear = [i for i, m in enumerate(margins) if abs(m) > 0.25]  # fp32 margin well above bf16's rounding of the body
    assert len(clear) >= len(items) // 2
    for i in clear:
        assert (p32[i]["probs"]["A"] > p32[i]["probs"]["B"]) == (p16[i]["probs"]["A"] > p16[i]["probs"]["B"]), i
    assert all(p["probs"]["A"] != p["probs"]["B"] for p in p16)  # the fp32 projection: no exact ties


@pytest.mark.extended  # 256 s on 2 loaded cores
@pytest.mark.xfail(strict=True, reason="measured 2026-12-06: in bf16, left-padded batches change option probabilities "
                   "by up to ~13 % relative (0.0278 batched vs 0.0245 alone) although the projection is fp32: padding "
                   "changes the bf16 attention/MLP sums; fix: score options unpadded or in fp32 attention (issue 17)")
def test_batched_option_probabilities_equal_one_at_a_time_in_bf16(bf16, items):
    convs = conversations(items[:10])
    batched = bf16.option_probs(convs, ("A", "B"))  # batches of 8, left padded, sorted by length
    bf16.batch_size = 1
    try:
        single = bf16.option_probs(convs, ("A", "B"))
    finally:
        bf16.batch_size = 8
    for b, s in zip(batched, single):
        for o in ("A", "B"):
            assert b["probs"][o] == pytest.approx(s["probs"][o], rel=0.05, abs=2e-3)
        assert (b["probs"]["A"] > b["probs"]["B"]) == (s["probs"]["A"] > s["probs"]["B"])


def test_generation_uses_exactly_the_protocols_parameters_nothing_from_the_models_generation_config(fp32):
    """Qwen2.5-Instruct ships repetition_penalty 1.05 and top_k 20: transformers would fill them into any unset field."""
    import copy

    saved = copy.deepcopy(fp32.model.generation_config)
    try:
        g = fp32.model.generation_config
        g.repetition_penalty, g.top_k, g.top_p, g.min_p, g.temperature, g.no_repeat_ngram_size = 1.05, 20, 0.8, 0.1, 0.3, 3
        for temperature, top_k in ((0.7, 50), (1.0, 0), (0.0, 0)):
            cfg, _ = fp32.model._prepare_generation_config(
                fp32.generation_config(max_new_tokens=4, temperature=temperature, top_p=0.9 if temperature else 1.0,
                                       top_k=top_k))
            assert (cfg.repetition_penalty, cfg.top_k, cfg.min_p, cfg.no_repeat_ngram_size) == (1.0, top_k, 0.0, 0)
            assert cfg.do_sample == (temperature > 0) and (not temperature or (cfg.temperature, cfg.top_p) == (temperature, 0.9))
    finally:
        fp32.model.generation_config = saved
