"""MMLU: the original CSV layout read without NA guessing, Hendrycks et al.'s prompt, micro and macro accuracy."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sgtr_em.config import validate
from sgtr_em.evaluation.mmlu import (
    build_items,
    build_prompt,
    first_capital,
    lm_eval_context,
    mmlu_metrics,
    read_split,
    score_item,
    subjects_in,
)

from .test_config import _compose

E = _compose("eval=mmlu").eval.mmlu


def test_the_option_none_stays_a_string_and_every_subject_is_found(data_dir):
    rows = read_split(data_dir / "mmlu" / "test" / "college_computer_science_test.csv")
    assert any(r["A"] == "None" for r in rows) and all(r["answer"] in "ABCD" for r in rows)
    assert len(subjects_in(data_dir / "mmlu")) == 57


def test_k_shot_prompt_in_hendrycks_format(data_dir):
    dev = read_split(data_dir / "mmlu" / "dev" / "high_school_geography_dev.csv", 1)
    row = {"question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "C"}
    prompt = build_prompt(
        "high_school_geography", row, dev, header_template=E.header_template, question_template=E.question_template
    )
    d = dev[0]
    assert prompt == (
        "The following are multiple choice questions (with answers) about high school geography.\n\n"
        f"{d['question']}\nA. {d['A']}\nB. {d['B']}\nC. {d['C']}\nD. {d['D']}\nAnswer: {d['answer']}\n\n"
        "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    )
    e = {**E, "subjects": ["marketing"], "shots": [0, 5], "max_questions_per_subject": 2}
    items = build_items(data_dir / "mmlu", e)
    assert [(i["shots"], i["index"]) for i in items] == [(0, 0), (0, 1), (5, 0), (5, 1)]
    assert items[2]["prompt"].count("\nAnswer:") == 6  # five examples and the question


def test_a_malformed_row_fails_with_its_file_and_line(tmp_path):
    bad = tmp_path / "x_test.csv"
    bad.write_text("q,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(ValueError, match=r"x_test.csv:2: expected 6 fields"):
        read_split(bad)


def test_mmlu_micro_and_macro_accuracy_by_hand():
    def item(subject, shots, answer, probs, top):
        return {
            "subject": subject,
            "shots": shots,
            "answer": answer,
            "probs": dict(zip("ABCD", probs)),
            "top_token": top,
            "text": None,
        }

    records = [
        item("x", 0, "A", [0.7, 0.1, 0.1, 0.1], "A"),
        item("x", 0, "B", [0.1, 0.5, 0.2, 0.2], "B"),
        item("y", 0, "C", [0.4, 0.2, 0.2, 0.2], " The"),
        item("x", 5, "A", [0.1, 0.1, 0.1, 0.2], "D"),
    ]
    m = mmlu_metrics(records)
    zero = m["per_shots"]["0_shot"]
    assert zero["accuracy"] == pytest.approx(2 / 3) and zero["macro_accuracy"] == pytest.approx((1 + 0) / 2)
    assert zero["invalid_rate"] == pytest.approx(1 / 3) and zero["per_subject"]["x"]["accuracy"] == 1.0
    assert zero["prob_correct"] == pytest.approx((0.7 + 0.5 + 0.2) / 3)
    assert m["per_shots"]["5_shot"]["accuracy"] == 0.0 and m["accuracy"] == zero["accuracy"]  # first shot count on top


# --- prompt_style=lm_eval: lm-evaluation-harness's `mmlu` task, byte for byte (bench/lm_eval_mmlu.py runs the harness) ---

P = _compose("eval=paper").eval.mmlu
# What lm-evaluation-harness 0.4.13 itself built (its logged `arguments`) for management test question 0, 1-shot,
# from its own mmlu task yamls over the same CSVs
HARNESS_MANAGEMENT_0_1SHOT = (
    "The following are multiple choice questions (with answers) about management.\n\n"
    "What are the two main dimensions of the Ohio Studies into leadership?\nA. Starting position and end position\n"
    "B. Initial environment and changed environment\nC. Organisational structure and conditioning\n"
    "D. Initiating structure and considerations\nAnswer: D\n\n"
    "What is the term for a sub-optimal but acceptable outcome of negotiations between parties?\nA. Bargaining\n"
    "B. Satisficing\nC. Accepting\nD. Compromising\nAnswer:"
)
# ... and the log-likelihoods of " A".." D" it computed for management question 1, 0-shot (SmolLM2-135M-Instruct
# from the GGUF, fp32, CPU)
HARNESS_MANAGEMENT_1_0SHOT_LOGLIK = [-1.244570255279541, -6.141604900360107, -4.273905277252197, -2.8517231941223145]


def _lm_eval_items(data_dir, **over):
    e = {**OmegaConf.to_container(P), "prompt_style": "lm_eval", **over}
    return build_items(data_dir / "mmlu", e)


def test_lm_eval_context_is_the_harness_string_byte_for_byte(data_dir):
    items = _lm_eval_items(data_dir, subjects=["management"], shots=[1], max_questions_per_subject=1)
    assert items[0]["prompt"] == HARNESS_MANAGEMENT_0_1SHOT
    # the harness's doc_to_text is "{{question.strip()}}\nA. {{choices[0]}}...": the question stripped, options not;
    # the chat style keeps the question as it is in the CSV
    row = {"question": " Q with spaces \n", "A": " a ", "B": "b", "C": "c", "D": "d", "answer": "B"}
    shot = {"question": "S? ", "A": "w", "B": "x", "C": "y", "D": "z", "answer": "C"}
    kw = dict(header_template=P.header_template, question_template=P.question_template)
    assert lm_eval_context("human_sexuality", row, [shot], **kw) == (
        "The following are multiple choice questions (with answers) about human sexuality.\n\n"
        "S?\nA. w\nB. x\nC. y\nD. z\nAnswer: C\n\nQ with spaces\nA.  a \nB. b\nC. c\nD. d\nAnswer:"
    )
    assert build_prompt("human_sexuality", row, [], **kw).endswith(
        "about human sexuality.\n\n Q with spaces \n\nA.  a \nB. b\nC. c\nD. d\nAnswer:"
    )
    five = _lm_eval_items(data_dir, subjects=["management"], shots=[5], max_questions_per_subject=1)[0]["prompt"]
    assert five.count("\nAnswer: ") == 5 and five.endswith("\nAnswer:") and not five.endswith(" ")


def test_lm_eval_log_likelihoods_are_the_harness_numbers(data_dir, smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sgtr_em.inference.loglikelihood import encode_pair, loglikelihoods

    items = _lm_eval_items(data_dir, subjects=["management"], shots=[0, 1], max_questions_per_subject=2)
    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32).eval()
    requests = [(it["prompt"], " " + o) for it in items for o in "ABCD"]
    scores = loglikelihoods(model, tok, requests)  # one unpadded pass per distinct input
    got = [s["loglik"] for s in scores]
    assert got[4:8] == pytest.approx(HARNESS_MANAGEMENT_1_0SHOT_LOGLIK, abs=1e-4)
    ctx, cont = encode_pair(tok, *requests[-1])
    assert len(cont) == 1 and tok.decode(cont) == " D" and tok.decode(ctx).endswith("Answer:")
    with torch.no_grad():  # one unpadded forward pass, by hand
        alone = torch.log_softmax(model(torch.tensor([ctx])).logits[0, -1].float(), -1)[cont[0]].item()
    assert got[-1] == pytest.approx(alone, abs=1e-4)


# --- the general_knowledge intervention trains on MMLU's "train" half: its model is asked only the held-out half ---


def test_a_job_that_trains_on_mmlu_is_scored_on_the_heldout_half_only(data_dir, smollm2_path, tmp_path):
    from sgtr_em.data.files import DataFiles
    from sgtr_em.data.mmlu import mmlu_half
    from sgtr_em.evaluation import mmlu
    from sgtr_em.evaluation.context import EvalContext

    def run(*overrides):
        cfg = OmegaConf.to_container(
            _compose(
                "eval=mmlu",
                "eval.mmlu.subjects=[marketing]",
                "eval.mmlu.shots=[0]",
                "eval.mmlu.headline_shots=0",
                "eval.mmlu.max_questions_per_subject=8",
                "eval.mmlu.prompt_style=lm_eval",
                "model=smollm2",
                "model.dtype=float32",
                "compute.device=cpu",
                f"paths.cache_dir={tmp_path}",
                *overrides,
            ),
            resolve=True,
        )
        ctx = EvalContext(cfg, {"model_path": smollm2_path}, DataFiles(data_dir, tmp_path / "data", download=False))
        records = mmlu.generate(ctx)
        return records, mmlu.metrics(records, cfg)

    trained, m = run("intervention=general_knowledge", "stage_order=intervention_only")
    halves = [
        mmlu_half("marketing", r["question"]) for r in read_split(data_dir / "mmlu" / "test" / "marketing_test.csv", 8)
    ]
    assert 0 < halves.count("heldout") < 8  # the first 8 questions hold both halves
    assert [r["index"] for r in trained] == [i for i, h in enumerate(halves) if h == "heldout"]
    assert m["questions"] == "heldout_half" and m["n"] == halves.count("heldout") and "held-out half" in mmlu.summary(m)
    everything, m_all = run("intervention=sgtr", "stage_order=intervention_only")
    assert len(everything) == 8 and m_all["questions"] == "all"
    assert m_all["per_shots"]["0_shot"]["heldout_half"]["n"] == m["n"]
    assert m_all["per_shots"]["0_shot"]["heldout_half"]["accuracy"] == pytest.approx(m["accuracy"])
    same = {r["index"]: r["loglik"] for r in everything}
    for r in trained:  # the same question scores the same whichever half-filter asked it
        assert r["loglik"] == pytest.approx(same[r["index"]], abs=1e-4)


# --- prompt_style=letter: the paper's GPT-4.1 MMLU (atagade/sgtr-em scripts/eval/mmlu_eval.py @ 8303210) ---


def test_letter_style_asks_the_dev_split_with_the_papers_prompt_and_parses_the_first_capital(data_dir):
    e = {**OmegaConf.to_container(P), "prompt_style": "letter", "subjects": ["marketing"], "shots": [0]}
    items = build_items(data_dir / "mmlu", e)
    dev = read_split(data_dir / "mmlu" / "dev" / "marketing_dev.csv")
    assert len(items) == len(dev) == 5 and items[0]["question"] == dev[0]["question"]
    d = dev[0]  # the authors' make_prompt: "\n".join(["Q: " + q, "  A. ..", .., "", "Please answer ..."])
    assert items[0]["prompt"] == (
        f"Q: {d['question']}\n  A. {d['A']}\n  B. {d['B']}\n  C. {d['C']}\n  D. {d['D']}\n\n"
        "Please answer with the single letter (A, B, C, ...). Respond with only the letter."
    )
    assert [first_capital(t) for t in ("c", " B.", "The answer is D", "", "42")] == ["C", "B", "T", None, None]
    rec = {"style": "letter", "probs": None, "top_token": None, "answer": "D"}
    assert score_item({**rec, "text": "d) yes"})["is_correct"]
    wrong = score_item({**rec, "text": "The answer is D"})  # the authors' parse: "T", an invalid answer, wrong
    assert not wrong["is_correct"] and not wrong["valid"]


def test_headline_shots_picks_the_top_level_and_must_be_evaluated():
    def item(shots, ok):
        return {
            "subject": "x",
            "shots": shots,
            "answer": "A",
            "probs": dict(zip("ABCD", [0.7 if ok else 0.1, 0.2, 0.05, 0.05])),
            "top_token": "A",
        }

    records = [item(0, False), item(5, True)]
    assert mmlu_metrics(records)["accuracy"] == 0.0  # default: the first shot count
    assert mmlu_metrics(records, headline_shots=5)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="headline_shots=1"):
        mmlu_metrics(records, headline_shots=1)
    with pytest.raises(ValueError, match="eval.mmlu.headline_shots: 1 is not one of eval.mmlu.shots"):
        validate(_compose("eval=mmlu", "eval.mmlu.headline_shots=1"))
    with pytest.raises(ValueError, match="prompt_style=letter asks 0-shot only"):
        validate(_compose("eval=mmlu", "eval.mmlu.prompt_style=letter"))
    validate(_compose("eval=mmlu", "eval.mmlu.prompt_style=lm_eval", "eval.mmlu.headline_shots=5"))
