"""MMLU: the original CSV layout read without NA guessing, Hendrycks et al.'s prompt, micro and macro accuracy."""
from __future__ import annotations

import pytest

from sgtr_em.evaluation.mmlu import build_items, build_prompt, mmlu_metrics, read_split, subjects_in

from .test_config import _compose

E = _compose("eval=mmlu").eval.mmlu


def test_the_option_none_stays_a_string_and_every_subject_is_found(data_dir):
    rows = read_split(data_dir / "mmlu" / "test" / "college_computer_science_test.csv")
    assert any(r["A"] == "None" for r in rows) and all(r["answer"] in "ABCD" for r in rows)
    assert len(subjects_in(data_dir / "mmlu")) == 57


def test_k_shot_prompt_in_hendrycks_format(data_dir):
    dev = read_split(data_dir / "mmlu" / "dev" / "high_school_geography_dev.csv", 1)
    row = {"question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "C"}
    prompt = build_prompt("high_school_geography", row, dev, header_template=E.header_template,
                          question_template=E.question_template)
    d = dev[0]
    assert prompt == ("The following are multiple choice questions (with answers) about high school geography.\n\n"
                      f"{d['question']}\nA. {d['A']}\nB. {d['B']}\nC. {d['C']}\nD. {d['D']}\nAnswer: {d['answer']}\n\n"
                      "Q?\nA. a\nB. b\nC. c\nD. d\nAnswer:")
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
        return {"subject": subject, "shots": shots, "answer": answer, "probs": dict(zip("ABCD", probs)),
                "top_token": top, "text": None}

    records = [item("x", 0, "A", [0.7, 0.1, 0.1, 0.1], "A"), item("x", 0, "B", [0.1, 0.5, 0.2, 0.2], "B"),
               item("y", 0, "C", [0.4, 0.2, 0.2, 0.2], " The"), item("x", 5, "A", [0.1, 0.1, 0.1, 0.2], "D")]
    m = mmlu_metrics(records)
    zero = m["per_shots"]["0_shot"]
    assert zero["accuracy"] == pytest.approx(2 / 3) and zero["macro_accuracy"] == pytest.approx((1 + 0) / 2)
    assert zero["invalid_rate"] == pytest.approx(1 / 3) and zero["per_subject"]["x"]["accuracy"] == 1.0
    assert zero["prob_correct"] == pytest.approx((0.7 + 0.5 + 0.2) / 3)
    assert m["per_shots"]["5_shot"]["accuracy"] == 0.0 and m["accuracy"] == zero["accuracy"]  # first shot count on top
