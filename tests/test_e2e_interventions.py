"""`python -m sgtr_em.train intervention=<X> stage_order=reversal` through the real CLI on SmolLM2, on the CPU,
for one intervention of each data kind (the default run covers `sgtr`). One output folder for all, so the EM
stage trains once and the EM model's summaries are written once (minutes: marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgtr_em.tracking import read_offline_run

from .conftest import read_json
from .test_e2e import TINY

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # minutes; the default run covers sgtr

# kind -> option: summary_pairs, chat_file, summary_word_count, mmlu_qa, none. pick_longer (not the length-balanced
# variant: with 3 articles SmolLM2's summaries can all be longer, leaving no pairs; test_interventions.py covers it)
OPTIONS = ["identity_confusion", "pick_longer", "word_count", "word_count_summaries", "general_knowledge", "none"]
NO_EVAL = ["eval.run=[]"]  # evaluation: covered by test_e2e.py


@pytest.fixture(scope="module")
def shared_outputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interventions") / "outputs"


@pytest.mark.parametrize("option", OPTIONS)
def test_each_intervention_runs_on_the_cpu_default(run_cli, shared_outputs, tmp_path, option):
    run_dir = tmp_path / "run"
    run_cli(
        f"intervention={option}",
        "stage_order=reversal",
        f"hydra.run.dir={run_dir}",
        "intervention.num_examples=6",
        *TINY,
        *NO_EVAL,
        output_dir=shared_outputs,
    )
    stages = read_json(run_dir / "stages.json")
    assert [s["kind"] for s in stages] == (["em"] if option == "none" else ["em", "intervention"])
    sums = read_json(run_dir / "data_files.json")  # checksums of what the job read: run metadata and W&B config
    assert sums["em/aesthetic_preferences_unpopular.jsonl"].startswith("8447f47d")
    wandb_cfg = read_offline_run(run_dir)["config"]["cfg"]
    assert wandb_cfg["data_files"] == sums and wandb_cfg["intervention"]["num_examples"] == 6  # matched compute
    if option == "none":
        return
    folder = Path(stages[1]["folder"])
    stats = read_json(folder / "data_stats.json")
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == stats["train_examples"] == stats["num_examples"] == 6
    assert (folder / "done").exists() and (folder / "merged" / "model.safetensors").exists()
    assert [r for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    spec = read_json(folder / "stage.json")["spec"]
    assert spec["data"]["name"] == option and spec["input"] == {"stage": stages[0]["hash"]}
