"""The cost estimate of a sweep (sgtr_em/cost.py, printed and recorded by `python -m sgtr_em.grid`), against a hand
count on a small sweep with data files of known sizes."""

from __future__ import annotations

import json

from sgtr_em.grid import main as grid_main


def write_chat(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": r}) + "\n" for r in rows))


def test_cost_matches_a_hand_count(tmp_path, capsys):
    data = tmp_path / "data"
    # EM file: 3 rows of 40 + 80 characters in 2 turns: ceil(360 / 4) + 5 x 6 = 120 tokens, 40 a row
    write_chat(
        data / "em" / "tiny.jsonl",
        [[{"role": "user", "content": "a" * 40}, {"role": "assistant", "content": "b" * 80}]] * 3,
    )
    # intervention file: 4 rows of 20 + 20 + 4 characters in 3 turns: ceil(176 / 4) + 5 x 12 = 104 tokens, 26 a row
    write_chat(
        data / "wc.jsonl",
        [
            [
                {"role": "system", "content": "s" * 20},
                {"role": "user", "content": "u" * 20},
                {"role": "assistant", "content": "TRUE"},
            ]
        ]
        * 4,
    )
    out = tmp_path / "plan.json"
    record = grid_main(
        [
            f"paths.data_dir={data}",
            f"paths.output_dir={tmp_path / 'outputs'}",
            "model=smollm2",
            "em_dataset.file=em/tiny.jsonl",
            "em_dataset.sha256=null",
            "em_dataset.max_examples=2",
            "intervention=word_count",
            "intervention.file=wc.jsonl",
            "intervention.num_examples=6",
            "eval=paper",
            "eval.run=[em,identity]",
            "eval.em.question_sets=[main]",
            "eval.em.samples_per_question=3",
            "eval.em.max_new_tokens=10",
            "eval.identity.samples_per_question=2",
            "eval.identity.max_new_tokens=7",
            "judge=openai",
            "-m",
            "stage_order=em_only,reversal,prevention",
            "seed=0,1",
            "--out",
            str(out),
        ]
    )
    cost = record["cost"]
    # per seed: EM on the base model (shared by em_only and reversal), word counting after it, word counting on the
    # base model, EM after that: 4 distinct stages, 8 over two seeds
    assert cost["distinct_stages"] == 8 and cost["distinct_stages_by_kind"] == {"em": 4, "intervention": 4}
    assert cost["training_examples"] == 4 * 2 + 4 * 6
    assert cost["training_tokens"] == 4 * 2 * 40 + 4 * 6 * 26 == 944
    # 3 final models per seed (EM only, reversal, prevention); each: EM 8 questions x 3 samples at 10 tokens, judged
    # twice; identity 5 questions x 2 samples at 7 tokens, judged twice
    assert cost["distinct_final_models"] == 6
    assert cost["eval_generated_tokens"] == 6 * (8 * 3 * 10 + 5 * 2 * 7) == 1860
    assert cost["judge_calls"] == 6 * (8 * 3 * 2 + 5 * 2 * 2) == 408
    judge_in = 6 * (48 * (300 + 10) + 20 * (300 + 7))
    judge_out = 6 * (48 * 1 + 20 * 8)  # scores: 1 token; labels: judge.max_label_tokens
    assert cost["judge_tokens"] == {"input": judge_in, "output": judge_out}
    assert cost["usd"]["judge"] == round((judge_in * 2.50 + judge_out * 10.00) / 1e6, 2) == 0.33  # gpt-4o prices
    assert cost["usd"]["judge_if_openai"] == 0.33 and cost["usd"]["api_training"] == 0
    assert "qwen2.5-7b" in cost["throughput"]["smollm2 H100"] and cost["gpu_hours"]["H100"] >= 0
    printed = capsys.readouterr().out
    assert "944 training tokens" in printed and "408 judge calls" in printed and "judge $0.33" in printed
    assert json.loads(out.read_text())["cost"]["training_tokens"] == 944  # recorded with the sweep


def test_the_in_domain_cost_counts_the_prompt_set_the_eval_asks(data_dir):
    """insecure_code's in-domain prompts are the set `insecure` (em_dataset.in_domain_prompts): the estimate counts
    them, as the eval and its validation do (evaluation/in_domain.py prompt_set; it counted none before)."""
    from sgtr_em.cost import eval_cost

    from .test_config import _compose

    cfg = _compose("em_dataset=insecure_code", "eval=paper")
    in_domain = eval_cost(cfg, data_dir).by_eval["in_domain"]
    prompts = len(cfg.eval.in_domain.datasets.insecure.prompts[: cfg.eval.in_domain.max_prompts])
    assert in_domain["answers"] == prompts * cfg.eval.in_domain.samples_per_prompt > 0
    assert in_domain["judge_calls"] == in_domain["answers"]


def test_what_the_estimate_cannot_count_is_said(data_dir, monkeypatch):
    """An evaluation the estimate has no rule for (a plugin, a new module) and a model without a parameter count are
    notes on the console, not silent zeros."""
    from omegaconf import OmegaConf

    from sgtr_em import cost

    from .test_config import _compose

    cfg = _compose("eval=paper")
    OmegaConf.set_struct(cfg, False)
    cfg.eval.run = ["mmlu", "persona", "refusal"]
    e = cost.eval_cost(cfg, data_dir)
    assert e.by_eval["refusal"]["generated_tokens"] == 0
    assert e.notes == ["evaluation 'refusal' is not counted: its cost is not in sgtr_em/cost.py eval_cost"]
    monkeypatch.delitem(cost.MODEL_PARAMS, "smollm2")
    grid = grid_main(["stage_order=em_only", f"paths.data_dir={data_dir}", "--out", "/dev/null"])
    assert "GPU-hours on the H100 leave out model smollm2's stages: no parameter count for model 'smollm2'" in str(
        grid["cost"]["notes"]
    )
    gpt = cost.eval_cost(_compose("experiment=gpt41", "eval.run=[em]"), data_dir)  # EM answers without a length cap
    assert gpt.by_eval["em"]["generated_tokens"] == 8 * 100 * cost.UNCAPPED_ANSWER_TOKENS
    assert gpt.notes == [f"EM answers have no length cap: each is counted at {cost.UNCAPPED_ANSWER_TOKENS} tokens"]
