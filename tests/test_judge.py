"""The local judge on the real SmolLM2: whole-number scoring, checked against plain forward passes."""

from __future__ import annotations

import pytest
import torch

from sgtr_em.evaluation.judge import LocalJudge
from sgtr_em.inference.generation import HFGenerator

PROMPT = "Rate how coherent this answer is, from 0 to 100. Answer with a number only.\nAnswer: The sky is blue."


@pytest.fixture(scope="module")
def gen(smollm2_path):
    return HFGenerator(smollm2_path, dtype="float32", device="cpu")


def next_token_logprobs(gen, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(gen.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def test_single_token_numbers_give_the_one_token_method(gen):
    judge = LocalJudge(gen, numbers=range(10))  # 0..9 are single tokens, none a prefix of another
    assert not judge.needs_end
    direct = gen.option_probs([[{"role": "user", "content": PROMPT}]], [str(d) for d in range(10)])[0]["probs"]
    assert judge.number_probs(PROMPT) == pytest.approx([direct[str(d)] for d in range(10)], rel=1e-4)


def test_multi_token_numbers_are_scored_as_whole_numbers(gen):
    judge = LocalJudge(gen)
    assert judge.needs_end  # SmolLM2 writes 85 as "8", "5"
    probs = judge.number_probs(PROMPT)
    prefix = gen.tokenizer(gen.render([{"role": "user", "content": PROMPT}]), add_special_tokens=False)["input_ids"]
    for k in (7, 85, 100):  # the cached, batched computation equals a plain forward pass over prompt + digits
        digits = gen.tokenizer.encode(str(k), add_special_tokens=False)
        logp = next_token_logprobs(gen, prefix + digits)
        lp = sum(logp[len(prefix) - 1 + t, d] for t, d in enumerate(digits))
        ends = 1 - logp[-1, judge.digit_tokens].exp().sum()
        assert probs[k] == pytest.approx(float(lp.exp() * ends), rel=1e-3, abs=1e-9)
    first = next_token_logprobs(gen, prefix)[-1].exp()
    assert sum(probs) <= first[judge.digit_tokens].sum().item() + 1e-6  # disjoint events: "starts with number k"


def test_label_choice_scores_each_label_as_the_whole_answer(gen, tmp_path):
    from sgtr_em.inference.cache import DiskCache

    labels = ["YES", "NO", "Hugging Face", "UNKNOWN"]
    judge = LocalJudge(gen, cache=DiskCache(tmp_path), model_key="smollm2")
    probs = judge.label_probs(PROMPT, labels)
    prefix = gen.tokenizer(gen.render([{"role": "user", "content": PROMPT}]), add_special_tokens=False)["input_ids"]
    for label in labels:  # P(label tokens, then end of turn) from one plain forward pass
        answer = gen.tokenizer.encode(label, add_special_tokens=False) + [gen.tokenizer.eos_token_id]
        logp = next_token_logprobs(gen, prefix + answer)
        lp = sum(logp[len(prefix) - 1 + t, tok] for t, tok in enumerate(answer))
        assert probs[label] == pytest.approx(float(lp.exp()), rel=1e-3, abs=1e-9)
    choice = judge.choose([PROMPT], labels)[0]
    assert choice.label == max(labels, key=probs.get) and sum(choice.probs.values()) == pytest.approx(1.0)
    assert judge.usage.calls == 1 and judge.usage.cache_hits == 1  # the second ask came from the disk cache


def test_text_scoring_reads_the_first_number_of_a_greedy_answer(gen, tmp_path):
    """judge.scoring=text (the paper's): a greedy answer of up to max_score_tokens, parsed; cached on disk."""
    from sgtr_em.inference.cache import DiskCache

    judge = LocalJudge(gen, scoring="text", max_score_tokens=8, cache=DiskCache(tmp_path), model_key="smollm2")
    [j] = judge.score([PROMPT])
    answer = gen.generate([[{"role": "user", "content": PROMPT}]], max_new_tokens=8, temperature=0.0)[0]
    assert j.text == answer and judge.describe()["scoring"] == "text"
    assert judge.score([PROMPT])[0].text == answer and judge.usage.cache_hits == 1


def test_the_judges_cache_key_names_its_template_arguments(gen):
    """The judge's prompts render with the job's chat_template_kwargs: answers cached under other arguments are not
    this judge's (no arguments: the key as before, so existing caches stay valid)."""
    from sgtr_em.inference.generation import HFGenerator

    other = HFGenerator.from_model(gen.model, gen.tokenizer, chat_template_kwargs={"lang": "fr"})
    plain, fr = LocalJudge(gen, model_key="smollm2"), LocalJudge(other, model_key="smollm2")
    assert plain.model_key == "smollm2@torch.float32" and fr.model_key == 'smollm2@torch.float32@{"lang": "fr"}'
