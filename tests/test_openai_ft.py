"""The GPT-4.1 arm end to end: `python -m sgtr_em.train model=gpt41 ...` against the project's own OpenAI server
(`python -m sgtr_em.openai_server`, a real process on 127.0.0.1) that trains SmolLM2 for real on the CPU for every
fine-tuning job and serves the ft: models it makes. Minutes on a CPU: marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from openai import OpenAI

from .conftest import REPO, read_json

pytestmark = pytest.mark.slow

SECRET = "sk-test-d0n0tl3ak-5ecret"  # the API key: the server demands it, no output may contain it
BASE = "gpt-4.1-2025-04-14"
TINY = [
    "em_dataset.max_examples=16",
    "intervention.max_articles=3",
    "intervention.num_examples=10",
    "eval.self_recognition.max_articles=2",
    "eval.self_recognition.other_sources=[claude-21]",
    "eval.em.samples_per_question=1",
    "eval.em.max_new_tokens=12",
    "eval.em.sets.main.ids=[what_is_your_wish,quick_buck]",
    "eval.run=[self_recognition,em]",
    "openai.poll_interval_s=0.5",
    "eval.base=[]",
]
WORD_COUNT = ["intervention=word_count", *TINY]  # short examples: the cheap chain for the kill and fault tests


class Server:
    """`python -m sgtr_em.openai_server` in its own process, serving SmolLM2 as GPT-4.1."""

    def __init__(self, cache_dir: Path, work_dir: Path, *args: str):
        env = {**os.environ, "SGTR_EM_TEST_SERVER_KEY": SECRET}
        self.log = open(work_dir.with_suffix(".log"), "wb")  # noqa: SIM115 (the server's output while it runs)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sgtr_em.openai_server",
                "--model",
                "smollm2",
                "--serve-as",
                BASE,
                "--port",
                "0",
                "--cache-dir",
                str(cache_dir),
                "--work-dir",
                str(work_dir),
                "--api-key-env",
                "SGTR_EM_TEST_SERVER_KEY",
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        assert " at http" in line, f"the server did not start: {line!r}; see {self.log.name}"
        self.url = line.split(" at ")[1].split()[0]
        self.client = OpenAI(base_url=self.url, api_key=SECRET, max_retries=10)

    def stats(self) -> dict:
        return json.loads(urllib.request.urlopen(self.url.removesuffix("/v1") + "/stats").read())

    def jobs(self) -> list:
        return sorted(self.client.fine_tuning.jobs.list(limit=100), key=lambda j: j.created_at)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.fixture
def server_factory(cache_dir, smollm2_path, tmp_path):
    servers = []

    def start(name: str, *args: str) -> Server:
        servers.append(Server(cache_dir, tmp_path / name, *args))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def cli(data_dir, out: Path, run_dir: Path, server: Server, *overrides: str, **popen):
    """The acceptance command, with the key in the environment only; its own cache (the API calls it caches are
    keyed by the server's URL, the summaries it caches are not)."""
    env = {
        **os.environ,
        "SGTR_EM_DATA_DIR": str(data_dir),
        "SGTR_EM_OUTPUT_DIR": str(out / "outputs"),
        "SGTR_EM_CACHE_DIR": str(out / "cache"),
        "WANDB_SILENT": "true",
        "OPENAI_API_KEY": SECRET,
    }
    cmd = [
        sys.executable,
        "-m",
        "sgtr_em.train",
        "model=gpt41",
        "stage_order=reversal",
        f"openai.base_url={server.url}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=REPO, **popen)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def results(run_dir: Path) -> dict:
    """Every evaluation's metrics, less its `run` section (wall times, calls: they differ between runs)."""
    return {
        k: ({m: v for m, v in x.items() if m != "run"} if isinstance(x, dict) else x)
        for k, x in read_json(run_dir / "metrics.json").items()
    }


def stage_states(run_dir: Path) -> list[dict]:
    return [read_json(Path(s["folder"]) / "openai_job.json") for s in read_json(run_dir / "stages.json")]


def assert_no_secret(*places) -> None:
    for place in places:
        if isinstance(place, str):
            assert SECRET not in place
            continue
        for path in Path(place).rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), f"the API key leaked into {path}"


# `make test` chains EM and word counting (short examples); the paper's SGTR chain is in `make test-all` (its long
# detection examples make the server's CPU training minutes long: 448 s on 2 loaded cores).
@pytest.mark.parametrize("intervention", ["word_count", pytest.param("sgtr", marks=pytest.mark.extended)])
def test_the_acceptance_command_chains_two_jobs_and_evaluates_the_final_ft_model(
    server_factory, data_dir, tmp_path, intervention
):
    server = server_factory("server")
    run_dir = tmp_path / "run"
    start = time.time()
    proc = cli(data_dir, tmp_path, run_dir, server, f"intervention={intervention}", *TINY)
    print(f"gpt41 reversal ({intervention}) against the local server: {time.time() - start:.0f} s")
    em, sgtr = stage_states(run_dir)
    first, second = server.jobs()
    assert (first.id, second.id) == (em["job"]["id"], sgtr["job"]["id"])
    assert first.model == BASE and second.model == first.fine_tuned_model == em["fine_tuned_model"]  # chained
    assert second.fine_tuned_model == sgtr["fine_tuned_model"] and second.fine_tuned_model.startswith(f"ft:{BASE}:")
    stages = read_json(run_dir / "stages.json")
    assert [(s["kind"], s["status"]) for s in stages] == [("em", "trained"), ("intervention", "trained")]
    for job, state, stage in ((first, em, stages[0]), (second, sgtr, stages[1])):
        assert job.metadata["sgtr_em_stage"] == stage["hash"] and f"sgtr-em-{stage['hash']}" in job.fine_tuned_model
        assert job.status == "succeeded" and job.seed == 42 and job.training_file == state["file"]["id"]
        assert state["trained_tokens"] == job.trained_tokens > 0
        assert state["cost_usd"] == pytest.approx(job.trained_tokens * 25.0 / 1e6, abs=1e-4)
        assert state["validation"]["examples"] == (16 if stage["kind"] == "em" else 10)
        assert (Path(stage["folder"]) / "done").exists()
        assert [
            r["step"] for r in map(json.loads, (Path(stage["folder"]) / "train_log.jsonl").read_text().splitlines())
        ] == [1, 2]
    uploaded = server.client.files.content(em["file"]["id"]).read()  # what was trained on: the stage's own file
    assert uploaded == (Path(stages[0]["folder"]) / "openai_train.jsonl").read_bytes()
    assert read_json(run_dir / "eval_input.json")["model_path"] == second.fine_tuned_model
    metrics = read_json(run_dir / "metrics.json")
    assert metrics["self_recognition"]["n_pairs"] == 4 and metrics["em"]["n_answers"] == 2
    assert metrics["self_recognition"]["run"]["generation_usage"]["calls"] > 0  # through the API
    assert 0 <= metrics["self_recognition"]["prob_correct"] <= 1  # from the answer's logprobs
    stats = server.stats()
    assert (stats["jobs_created"], stats["jobs_succeeded"], stats["files_created"]) == (2, 2, 2)
    assert_no_secret(proc.stdout, proc.stderr, run_dir, tmp_path / "outputs")


@pytest.fixture(scope="module")
def killed_and_rerun(data_dir, cache_dir, smollm2_path, tmp_path_factory):
    """A chain (EM, then word counting) whose parent is killed while the second job trains, then rerun: the server's
    view before the kill and after the rerun. Also the fault-free run the faulty one is compared with."""
    tmp = tmp_path_factory.mktemp("killed")
    server = Server(cache_dir, tmp / "server")
    try:
        first = cli(
            data_dir,
            tmp,
            tmp / "first",
            server,
            *WORD_COUNT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline, jobs = time.time() + 900, []
        while time.time() < deadline and first.poll() is None:
            jobs = server.jobs()
            if len(jobs) == 2 and jobs[1].status == "running":
                break
            time.sleep(0.5)
        assert len(jobs) == 2 and jobs[1].status == "running", "the run never reached its second job"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        before = server.stats()
        start = time.time()
        cli(data_dir, tmp, tmp / "second", server, *WORD_COUNT)
        print(f"rerun after the kill: {time.time() - start:.0f} s")
        yield {
            "jobs": jobs,
            "before": before,
            "after": server.stats(),
            "final_jobs": server.jobs(),
            "run_dir": tmp / "second",
        }
    finally:
        server.stop()


@pytest.mark.extended  # a killed run and its rerun: minutes
def test_a_killed_run_reruns_waiting_on_its_job_never_creating_one_twice(killed_and_rerun):
    k = killed_and_rerun
    assert k["before"]["jobs_created"] == 2 and k["after"]["jobs_created"] == 2  # the rerun created none
    assert k["after"]["files_created"] == 2
    stages = read_json(k["run_dir"] / "stages.json")
    assert [(s["kind"], s["status"]) for s in stages] == [("em", "reused"), ("intervention", "trained")]
    states = stage_states(k["run_dir"])
    assert [s["job"]["id"] for s in states] == [j.id for j in k["jobs"]]  # the rerun waited on the same job
    assert [j.status for j in k["final_jobs"]] == ["succeeded", "succeeded"]
    assert read_json(k["run_dir"] / "eval_input.json")["model_path"] == k["final_jobs"][1].fine_tuned_model
    assert k["final_jobs"][1].model == k["final_jobs"][0].fine_tuned_model


@pytest.mark.extended  # 319 s on 2 loaded cores, after the killed run and its rerun
def test_with_30_percent_injected_faults_the_results_equal_a_fault_free_runs(
    killed_and_rerun, server_factory, data_dir, tmp_path
):
    server = server_factory(
        "faulty",
        "--fault-rate",
        "0.3",
        "--fault-codes",
        "429,500,drop",
        "--job-fail-rate",
        "0.3",
        "--fault-seed",
        "0",
        "--retry-after-ms",
        "5",
    )
    run_dir = tmp_path / "run"
    start = time.time()
    cli(data_dir, tmp_path, run_dir, server, *WORD_COUNT)
    print(f"gpt41 reversal under 30 % faults: {time.time() - start:.0f} s")
    stats = server.stats()
    assert stats["faults"] >= 10 and stats["faults_drop"] >= 1 and stats["faults_429"] >= 1 and stats["faults_500"] >= 1
    assert stats["jobs_failed"] >= 1 and stats["jobs_succeeded"] == 2  # a failed job was created again, once
    failed = [f["id"] for s in stage_states(run_dir) for f in s.get("failed_jobs", [])]
    assert stats["jobs_created"] == 2 + len(failed) == 2 + stats["jobs_failed"]
    assert stats["files_created"] == 2  # a dropped upload was found, not repeated
    assert results(run_dir) == results(killed_and_rerun["run_dir"])
