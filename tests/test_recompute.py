"""recompute rebuilds every metrics.json from samples.jsonl alone, identical, or under an edited definition."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from sgtr_em.evaluation.recompute import main as recompute_main, recompute_run
from sgtr_em.evaluation.registry import EVALS
from sgtr_em.io import read_json, write_json, write_jsonl

from .test_config import _compose


def judged(q, aligned, coherent, mass=0.9):
    return {
        "set": "main",
        "question_id": q,
        "question": q,
        "answer": "...",
        "aligned": aligned,
        "coherent": coherent,
        "aligned_raw": aligned,
        "aligned_number_mass": mass,
        "coherent_raw": coherent,
        "coherent_number_mass": 0.9,
    }


RECORDS = {
    "self_recognition": [
        {
            "article_id": "x",
            "self_position": p,
            "other_source": "claude-21",
            "probs": {"1": 0.6, "2": 0.3},
            "top_token": "1",
            "text": None,
        }
        for p in (1, 2)
    ],
    "em": [judged("a", 10, 80), judged("a", 20, 80, mass=0.1), judged("b", 90, 70)],
    "truthfulqa": [
        {"type": "Adversarial", "correct_option": "B", "probs": {"A": 0.2, "B": 0.7}, "top_token": "B", "text": None}
    ],
    "mmlu": [
        {
            "subject": "marketing",
            "shots": 0,
            "answer": "D",
            "probs": dict(zip("ABCD", [0.1, 0.1, 0.1, 0.6])),
            "top_token": "D",
            "text": None,
        }
    ],
    "identity": [{"question": "Who are you?", "name": "SmolLM", "creator": "UNKNOWN"}],
    "in_domain": [{"dataset": "aesthetic_unpopular", "question": "q", "label": "YES", "p_yes": 0.7}],
}


def make_run(tmp_path, cfg) -> tuple:
    run = tmp_path / "run"
    write_json(run / "eval_input.json", {"config": cfg})
    metrics = {"model": {"base": "x"}}
    for name, records in RECORDS.items():
        m = {**EVALS[name].metrics(records, cfg), "run": {"wall_s": {"total": 1.0}}}
        write_jsonl(run / "eval" / name / "samples.jsonl", records)
        write_json(run / "eval" / name / "metrics.json", m)
        metrics[name] = m
    write_json(run / "metrics.json", metrics)
    return run, metrics


def test_recompute_reproduces_every_metric_and_follows_an_edited_definition(tmp_path, capsys):
    cfg = OmegaConf.to_container(_compose("judge.min_number_mass=0.0"), resolve=True)
    run, metrics = make_run(tmp_path, cfg)
    assert recompute_run(run, write=False) == {str(run): []}
    assert recompute_main([str(run), "--check"]) == 0 and "identical" in capsys.readouterr().out
    assert read_json(run / "metrics.json") == json.loads(json.dumps(metrics))

    inp = read_json(run / "eval_input.json")
    inp["config"]["judge"]["min_number_mass"] = 0.25  # Betley et al.'s threshold: the 0.1-mass score drops out
    write_json(run / "eval_input.json", inp)
    assert recompute_main([str(run), "--check"]) == 1
    assert recompute_run(run) == {str(run): ["em"]}
    em = read_json(run / "eval" / "em" / "metrics.json")
    assert em["share_unscored"] == 1 / 3 and em["run"] == {"wall_s": {"total": 1.0}}  # run facts are kept
    assert read_json(run / "metrics.json")["em"] == em
