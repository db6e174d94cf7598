"""`python -m sgtr_em.train defence=<name>` through the real CLI on SmolLM2, on the CPU: the EM stage trains with each
defence (em_only, 8 EM examples, 2 optimizer steps, no warm-up so the second step sees moved weights). `kl` runs in
CI (slow); the others are extended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import read_json

TINY = [
    "stage_order=em_only",
    "em_dataset.max_examples=8",
    "training.batch_size=4",
    "training.warmup_steps=0",
    "training.learning_rate=1e-4",
    "eval.run=[]",
    "tracking=none",
]


def run_defence(run_cli, tmp_path: Path, defence: str, *extra: str) -> tuple[Path, dict]:
    run_dir = tmp_path / "run"
    run_cli(f"defence={defence}", f"hydra.run.dir={run_dir}", *TINY, *extra)
    [stage] = read_json(run_dir / "stages.json")
    folder = Path(stage["folder"])
    assert (folder / "done").exists() and (folder / "merged" / "model.safetensors").exists()
    spec = read_json(folder / "stage.json")["spec"]
    assert spec["defence"]["kind"] == defence
    return folder, spec


def train_log(folder: Path) -> list[dict]:
    return [r for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
def test_kl_defence_runs_on_the_cpu_default(run_cli, tmp_path):
    folder, spec = run_defence(run_cli, tmp_path, "kl")
    assert spec["defence"] == {"kind": "kl", "weight": 10.0}
    logged = train_log(folder)
    assert [r["step"] for r in logged] == [1, 2]
    assert logged[0]["defence_kl"] == pytest.approx(0.0, abs=1e-6)  # step 1: the model is its reference
    assert logged[1]["defence_kl"] > 0  # step 2: the adapter has moved


@pytest.mark.slow
@pytest.mark.extended
@pytest.mark.parametrize("defence", ["ldifs", "interleave", "inoculation", "persona_steer"])
def test_each_defence_runs_on_the_cpu_default(run_cli, tmp_path, defence):
    ratio = ["defence.ratio=0.2"] if defence == "interleave" else []  # a kind that does not read it refuses it
    folder, spec = run_defence(
        run_cli, tmp_path, defence, "defence.pool.max_prompts=4", "defence.pool.max_new_tokens=16", *ratio
    )
    stats = read_json(folder / "data_stats.json")
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    if defence == "ldifs":
        assert train_log(folder)[1]["defence_ldifs"] > 0
    if defence == "interleave":  # round(0.2 x 8 / 0.8) = 2 general examples added to the 8 EM ones
        assert (stats["em_examples"], stats["general_examples"], len(rows)) == (8, 2, 10)
        assert sum(r["meta"].get("general", False) for r in rows) == 2
    if defence == "inoculation":
        assert all(r["prompt"][0] == {"role": "system", "content": spec["defence"]["prompt"]} for r in rows)
    if defence == "persona_steer":
        assert stats["direction_layers"] == 30 and "persona_steer" in (folder / "worker.log").read_text()


@pytest.mark.slow
@pytest.mark.extended
def test_interleave_ppl_trains_its_reference_and_the_persona_eval_reports(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(
        "defence=interleave_ppl",
        f"hydra.run.dir={run_dir}",
        *TINY,
        "defence.pool.max_prompts=4",
        "defence.pool.max_new_tokens=16",
        "defence.ratio=0.2",
        "eval.run=[persona]",
        "eval.persona.max_questions=2",
    )
    [stage] = read_json(run_dir / "stages.json")
    folder = Path(stage["folder"])
    spec = read_json(folder / "stage.json")["spec"]
    reference = folder.parent / spec["defence"]["em_reference"]
    assert (reference / "done").exists() and "defence" not in read_json(reference / "stage.json")["spec"]
    stats = read_json(folder / "data_stats.json")
    assert stats["general_examples"] == 2 and len(stats["chosen"]) == 2 and stats["pool_size"] == 4
    m = read_json(run_dir / "metrics.json")["persona"]
    assert len(m["per_layer"]["model"]) == 30 and m["layer"] == 20 and m["questions"] == 2
    assert m["shift"] == pytest.approx(m["projection"] - m["base_projection"])


@pytest.mark.slow
@pytest.mark.extended
def test_a_defence_on_a_benign_intervention_stage(run_cli, tmp_path):
    """defence.stages=[intervention]: a benign task (word counting) trains under the KL defence (Kaczér et al.'s
    fourth axis); the EM data is not touched."""
    run_dir = tmp_path / "run"
    run_cli(
        "defence=kl",
        "defence.stages=[intervention]",
        "stage_order=intervention_only",
        "intervention=word_count",
        "intervention.num_examples=8",
        f"hydra.run.dir={run_dir}",
        *TINY[1:],
    )
    [stage] = read_json(run_dir / "stages.json")
    folder = Path(stage["folder"])
    spec = read_json(folder / "stage.json")["spec"]
    assert stage["kind"] == "intervention" and spec["defence"] == {"kind": "kl", "weight": 10.0}
    logged = train_log(folder)
    assert [r["step"] for r in logged] == [1, 2]
    assert logged[0]["defence_kl"] == pytest.approx(0.0, abs=1e-6) and logged[1]["defence_kl"] > 0
