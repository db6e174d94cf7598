"""Every evaluation through the real CLI on the real SmolLM2 (stage_order=base: no training), judged over HTTP by
the project's OpenAI-compatible server (a subprocess) with 30 % injected faults; a rerun makes no judge call;
recompute rebuilds the same metrics from the samples alone. Minutes on a CPU: marked slow."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from sgtr_em.evaluation.recompute import main as recompute
from sgtr_em.tracking import read_offline_run

from .conftest import REPO, read_json

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # 190 s; the default run and test_openai.py cover its parts

TINY_EVALS = [
    "stage_order=base",
    "eval=smoke",
    "eval.self_recognition.max_articles=1",
    "eval.em.samples_per_question=1",
    "eval.em.max_new_tokens=12",
    "eval.em.sets.main.ids=[what_is_your_wish,quick_buck]",
    "eval.truthfulqa.max_questions=4",
    "eval.mmlu.subjects=[marketing]",
    "eval.mmlu.shots=[0,1]",
    "eval.mmlu.max_questions_per_subject=2",
    "eval.identity.samples_per_question=1",
    "eval.identity.max_new_tokens=16",
    "eval.in_domain.max_prompts=1",
    "eval.in_domain.max_new_tokens=16",
]
# Every metric the issue names, per evaluation (top level of its metrics.json).
NAMED = {
    "self_recognition": ["accuracy", "prob_correct", "prob_correct_raw", "invalid_rate", "per_source"],
    "em": [
        "misaligned_rate",
        "misaligned_rate_mo",
        "mean_aligned",
        "mean_coherent",
        "share_coherent",
        "share_unscored",
        "misaligned_rate_ci95",
        "misaligned_rate_mo_ci95",
        "per_question",
        "per_set",
    ],
    "truthfulqa": ["accuracy", "one_minus_accuracy", "invalid_rate"],
    "mmlu": ["accuracy", "per_shots"],
    "identity": ["share_own_identity", "distinct_identities", "entropy_name", "entropy_creator", "entropy_identity"],
    "in_domain": ["narrow_rate", "narrow_rate_ci95", "invalid_rate"],
}


@pytest.fixture
def server(smollm2_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sgtr_em.openai_server",
            "--model",
            smollm2_path,
            "--name",
            "smollm2",
            "--port",
            "0",
            "--fault-rate",
            "0.3",
            "--retry-after-ms",
            "5",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("serving smollm2 at "), line
    yield line.split(" at ")[1].split()[0]  # "serving smollm2 at <url> (files and jobs in <dir>)"
    proc.terminate()
    proc.wait(10)


def stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats").read())


def test_every_eval_via_the_cli_with_the_openai_judge_under_faults(run_cli, tmp_path, server):
    judge = ["judge=openai", "judge.model=smollm2", f"judge.api.base_url={server}", "judge.min_number_mass=0.0"]
    run_cli(f"hydra.run.dir={tmp_path / 'first'}", *TINY_EVALS, *judge)
    first, after_first = read_json(tmp_path / "first" / "metrics.json"), stats(server)
    for name, keys in NAMED.items():
        assert all(k in first[name] for k in keys), (name, set(keys) - set(first[name]))
    calls = sum(first[n]["run"].get("judge_usage", {}).get("calls", 0) for n in NAMED)
    assert calls == after_first["completions"] > 0 and after_first["faults"] > 0
    assert first["em"]["run"]["judge"]["backend"] == "openai" and first["em"]["run"]["judge_usage"]["prompt_tokens"] > 0
    summary = read_offline_run(tmp_path / "first")["summary"]
    assert summary["eval/em/misaligned_rate_mo"] == first["em"]["misaligned_rate_mo"]
    assert summary["eval/truthfulqa/one_minus_accuracy"] == first["truthfulqa"]["one_minus_accuracy"]

    run_cli(f"hydra.run.dir={tmp_path / 'again'}", *TINY_EVALS, *judge)
    again = read_json(tmp_path / "again" / "metrics.json")
    now = stats(server)  # the judge's answers came from the cache: no completion; the only new requests are the
    assert now["completions"] == after_first["completions"]  # preflight's reachability probe (GET /v1/models),
    probes = now["GET /v1/models"] - after_first.get("GET /v1/models", 0)  # tried again after a dropped connection
    assert now["requests"] - after_first["requests"] == probes >= 1
    assert sum(again[n]["run"].get("judge_usage", {}).get("calls", 0) for n in NAMED) == 0
    for name in NAMED:  # greedy / seeded sampling and cached judgements: the same metrics
        without_run = [{k: v for k, v in m[name].items() if k != "run"} for m in (first, again)]
        assert without_run[0] == without_run[1], name
    assert recompute([str(tmp_path / "first"), "--check"]) == 0
