"""Two real jobs started at the same moment against the project's OpenAI server (real SmolLM2 behind real HTTP, which
refuses a request without the key): the judge=openai arm of a local model and the GPT-4.1 arm (model=gpt41, evaluated
through the API). Each gets its own run folder and W&B run, and the key they used reaches no file either writes, the
cache included, nor their output (issue 17). Marked slow: two CLI runs, no training."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from sgtr_em.openai_server import OpenAIServer
from sgtr_em.openai_server.chat import ChatEngine
from sgtr_em.tracking import read_offline_run

from .conftest import REPO, read_json

# Extended (about 30 s on CI): test_integrity.py covers the unique run folder per process and the refused secrets,
# test_openai_ft.py's CI chain that no output holds the key; this is the two-jobs-at-once variant of both.
pytestmark = [pytest.mark.slow, pytest.mark.extended]

KEY = "sk-proj-" + "Sx9Kq2" * 8  # the key the server demands, given to the jobs through the environment only
CHEAP = [
    "stage_order=base",
    "eval.run=[identity]",
    "eval.identity.questions=[Who are you?]",
    "eval.identity.samples_per_question=1",
    "eval.identity.max_new_tokens=8",
]


def test_two_jobs_at_once_get_their_own_folders_and_runs_and_write_no_key(smollm2_path, data_dir, cache_dir, tmp_path):
    out = tmp_path / "outputs"
    env = {
        **os.environ,
        "SGTR_EM_DATA_DIR": str(data_dir),
        "SGTR_EM_CACHE_DIR": str(cache_dir),
        "SGTR_EM_OUTPUT_DIR": str(out),
        "WANDB_SILENT": "true",
        "OPENAI_API_KEY": KEY,
    }
    env.pop("WANDB_RUN_ID", None)
    with OpenAIServer(ChatEngine(smollm2_path, name="smollm2", dtype="float32"), api_key=KEY) as server:
        arms = {
            "judge_openai": ["judge=openai", "judge.model=smollm2", f"judge.api.base_url={server.url}"],
            "gpt41": ["model=gpt41", "model.path=smollm2", f"openai.base_url={server.url}"],
        }
        procs = {
            arm: subprocess.Popen(
                [sys.executable, "-m", "sgtr_em.train", *CHEAP, *over],
                env=env,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for arm, over in arms.items()
        }
        outputs = {arm: p.communicate(timeout=600) for arm, p in procs.items()}
        stats = server.snapshot()
    for arm, p in procs.items():
        assert p.returncode == 0, f"{arm}:\n{outputs[arm][1][-4000:]}"
    assert stats["completions"] >= 3  # the judge's and the API model's calls, each with the key (401 without)

    folders = {arm: re.search(r"results in (\S+)", o[0]).group(1) for arm, o in outputs.items()}
    assert len(set(folders.values())) == 2  # its own folder each, even when started in the same second
    runs = {arm: read_offline_run(f) for arm, f in folders.items()}
    assert runs["gpt41"]["id"] != runs["judge_openai"]["id"] and all(r["exit_code"] == 0 for r in runs.values())
    for arm, folder in folders.items():
        assert read_json(f"{folder}/eval_input.json")["config"]["model"]["name"] == (
            "gpt41" if arm == "gpt41" else "smollm2"
        )  # each folder holds its own job's files, whole
        assert runs[arm]["config"]["model"] == ("gpt41" if arm == "gpt41" else "smollm2")

    leaks = [
        str(p)
        for root in (out, cache_dir)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 2**27 and KEY.encode() in p.read_bytes()
    ]
    assert leaks == []
    assert all(KEY not in o[0] + o[1] for o in outputs.values())
