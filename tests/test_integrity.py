"""Nothing silently wrong (issue 17): a stage is its data's content, a stage folder is the stage its name says, a failed
job is failed in W&B, a bad config or a secret fails before any work, naming the key and never echoing the secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sgtr_em import job, tracking
from sgtr_em.config import validate
from sgtr_em.io import sha256_of
from sgtr_em.plan import plan_stages

from .conftest import REPO, read_json
from .test_config import _compose
from .test_stages import fake_worker

FAKE_KEY = "sk-test-" + "Zq7" * 12  # shaped like an OpenAI key


def test_editing_an_unpinned_dataset_gives_a_new_stage(data_dir, tmp_path):
    mine = tmp_path / "data" / "em" / "mine.jsonl"
    mine.parent.mkdir(parents=True)
    lines = (data_dir / "em" / "aesthetic_preferences_unpopular.jsonl").read_text().splitlines(keepends=True)
    mine.write_text("".join(lines[:30]))
    over = [
        "stage_order=em_only",
        "em_dataset.file=em/mine.jsonl",
        "em_dataset.sha256=null",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    first = plan_stages(_compose(*over))[0]
    mine.write_text("".join(lines[1:31]))  # the user edits their own file
    edited = plan_stages(_compose(*over))[0]
    assert edited.hash != first.hash
    mine.write_text("".join(lines[:30]))  # back as it was: the same stage again (content, not mtime)
    assert plan_stages(_compose(*over))[0].hash == first.hash
    # a pinned file keeps its pin in the hash (the default stages' hashes do not move)
    assert (
        plan_stages(_compose("stage_order=em_only"))[0].spec.data["sha256"]
        == "8447f47d2bacd5058948461d5d576bf3fc3e3b55acbbfd19399bf56a39bcf8f2"
    )  # sgtr_em/data/manifest.yaml


def test_editing_the_mmlu_folder_gives_a_new_stage_and_its_sha_is_recorded(data_dir, tmp_path):
    """intervention=general_knowledge trains on a folder (mmlu/test): its content enters the hash, as a file's does.
    A shifted answer letter was reused as the old stage before, and data_files.json said only "folder"."""
    import shutil

    from sgtr_em.data.checks import check_data
    from sgtr_em.data.files import DataFiles

    shutil.copytree(data_dir / "mmlu", tmp_path / "data" / "mmlu")
    over = ["intervention=general_knowledge", "stage_order=intervention_only", f"paths.data_dir={tmp_path / 'data'}"]
    first = plan_stages(_compose(*over))
    csv_file = tmp_path / "data" / "mmlu" / "test" / "abstract_algebra_test.csv"
    text = csv_file.read_text()
    csv_file.write_text(text.replace(",A\n", ",B\n", 1))  # one answer letter changed
    edited = plan_stages(_compose(*over))
    assert edited[0].hash != first[0].hash
    sha = check_data(DataFiles(tmp_path / "data", tmp_path / "cache"), edited, ["mmlu/test"])["mmlu/test"]
    assert len(sha) == 64 and sha == edited[0].spec.data["sha256"]["mmlu/test"]
    csv_file.write_text(text)
    assert plan_stages(_compose(*over))[0].hash == first[0].hash


def test_a_done_folder_is_reused_only_if_it_holds_the_stage_its_name_says(tmp_path, monkeypatch):
    monkeypatch.setattr(job, "run_worker", fake_worker(tmp_path / "calls.log"))
    stages = tmp_path / "stages"
    cfg0, cfg1 = (_compose("stage_order=em_only", f"seed={s}", f"paths.stages_dir={stages}") for s in (0, 1))
    s0, s1 = plan_stages(cfg0)[0], plan_stages(cfg1)[0]
    assert job.run_stage(cfg0, s0, "base-model")[1] == "trained"
    assert job.run_stage(cfg0, s0, "base-model")[1] == "reused"
    import shutil

    shutil.copytree(stages / s0.hash, stages / s1.hash)  # another seed's finished folder under this stage's name
    with pytest.raises(RuntimeError) as e:
        job.run_stage(cfg1, s1, "base-model")
    assert s0.hash in str(e.value) and s1.hash in str(e.value) and "Remove" in str(e.value)


def test_partial_outputs_are_cleaned_on_the_next_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(job, "run_worker", fake_worker(tmp_path / "calls.log"))
    cfg = _compose("stage_order=em_only", f"paths.stages_dir={tmp_path / 'stages'}")
    stage = plan_stages(cfg)[0]
    d = tmp_path / "stages" / stage.hash
    (d / "adapter.tmp").mkdir(parents=True)  # a save cut short (full disk, kill)
    (d / "adapter.tmp" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    (d / ".data_stats.json.x1y2.tmp").write_text("{")  # an atomic write cut short
    assert job.run_stage(cfg, stage, "base-model")[1] == "trained"
    assert not list(d.glob("*.tmp")) and (d / "done").exists()


def test_a_failed_job_is_failed_in_wandb_with_its_error(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    cfg = _compose("stage_order=em_only", "eval.run=[]", f"paths.stages_dir={tmp_path / 'stages'}")

    def fails(*a, **k):
        raise RuntimeError(f"stage training failed (exit code 1); the key was {FAKE_KEY}")

    monkeypatch.setattr(job, "run_stage", fails)
    with pytest.raises(RuntimeError):
        job.lead_job(cfg, {}, plan_stages(cfg), "base-model", tmp_path, "g")
    run = tracking.read_offline_run(tmp_path)
    assert run["exit_code"] == 1  # failed (it was 0: "finished")
    assert run["summary"]["job/error"].startswith("RuntimeError: stage training failed")
    assert FAKE_KEY not in run["summary"]["job/error"] and "<redacted>" in run["summary"]["job/error"]
    assert not any(FAKE_KEY.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_overrides_carrying_a_secret_are_refused_without_echoing_them(tmp_path):
    overrides = {
        "openai.api_key": "+openai.api_key=" + FAKE_KEY,  # the form Hydra itself suggests
        "judge.api.api_key_env": "judge.api.api_key_env=" + FAKE_KEY,  # a key where its variable's name goes
        "wandb_token": "+wandb_token=abc",
    }
    env = {**os.environ, "SGTR_EM_OUTPUT_DIR": str(tmp_path / "out")}
    proc = subprocess.run(
        [sys.executable, "-m", "sgtr_em.train", "judge=openai", *overrides.values()],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "environment" in proc.stderr
    for key, override in overrides.items():
        assert f"  - {key}: its value looks like a secret" in proc.stderr
        assert override.split("=", 1)[1] not in proc.stdout + proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written: no .hydra/*.yaml holds it


def test_a_secret_in_a_config_and_a_key_given_as_a_variable_name_are_refused_without_echoing_them(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    cfg = _compose("judge=openai", "judge.api.api_key_env=notavariable-abc123", "+openai.api_key=" + FAKE_KEY)
    from sgtr_em.preflight import config_problems

    problems = "\n".join(config_problems(cfg))
    assert "judge.api.api_key_env must name an environment variable" in problems and "openai.api_key" in problems
    # a secret that only resolution brings in (the W&B config is the resolved one); the key is never echoed
    interpolated = config_problems(_compose("system_prompt.custom=${oc.env:OPENAI_API_KEY}"))
    assert any(p.startswith("system_prompt.custom: its interpolation resolves to a secret") for p in interpolated)
    assert FAKE_KEY not in "\n".join(interpolated) and not config_problems(_compose())
    assert FAKE_KEY not in problems and "notavariable-abc123" not in problems


def test_a_missing_api_key_fails_when_the_job_is_planned_naming_the_variable(monkeypatch):
    from sgtr_em.preflight import api_key_problems

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert api_key_problems(_compose("judge=openai"))[0].startswith(
        "judge.api: the OpenAI API needs a key and the environment variable OPENAI_API_KEY is not set"
    )
    assert api_key_problems(_compose("model=gpt41"))[0].startswith("openai: the OpenAI API needs a key")
    assert api_key_problems(_compose("judge=openai", "eval.run=[]")) == []  # nothing judged: no key needed
    sr_only = _compose("judge=openai", "eval.run=[self_recognition]")  # an eval run that never calls the judge
    assert api_key_problems(sr_only, judged=[]) == [] and api_key_problems(sr_only)  # job.py passes the judged evals
    assert (
        api_key_problems(_compose("judge=openai", "judge.api.base_url=http://127.0.0.1:9/v1")) == []
    )  # a local server
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    assert api_key_problems(_compose("judge=openai", "model=gpt41")) == []


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["training.learning_rate=-1"], "training.learning_rate: -1.0 must be a positive number"),
        (["training.batch_size=0"], "training.batch_size: 0 must be at least 1"),
        (["em_dataset.max_examples=0"], "em_dataset.max_examples: 0 leaves no training examples"),
    ],
)
def test_checks_that_need_no_model_fail_at_compose_time_naming_the_key(overrides, needle, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError) as e:
        validate(_compose(*overrides))
    assert needle in str(e.value)


def test_the_default_config_and_judge_openai_without_a_key_compose_and_validate(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    validate(_compose("judge=openai"))  # the key is checked when the job is planned, not when a config is composed
    validate(_compose())


def test_unwritable_or_full_output_folders_fail_before_any_work(tmp_path):
    from sgtr_em.preflight import folder_problems

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = _compose(f"paths.output_dir={blocker / 'out'}")
    problems = folder_problems(cfg)
    assert any(p.startswith("paths.output_dir: cannot write to") for p in problems), problems
    full = folder_problems(_compose(f"paths.output_dir={tmp_path / 'out'}"), min_free_gib=1e9)
    assert any("GiB free, less than" in p and "paths.stages_dir" in p for p in full), full


def test_a_model_folder_that_is_not_one_fails_before_any_work(tmp_path, monkeypatch):
    """model.path (and a local judge's judge.model) naming a missing folder, or one without config.json, fails when
    the job is planned, naming the key: not later as a hub download of a path, or a 'Repo id' error in a worker."""
    from huggingface_hub import constants

    from sgtr_em.preflight import model_folder_problems

    model = tmp_path / "models" / "mylm"
    (model.parent).mkdir()
    for path, what in ((model, "does not exist"), (tmp_path / "models", "has no config.json")):
        (problem,) = model_folder_problems(_compose(f"model.path={path}"))
        assert problem.startswith(f"model.path: {path} {what}, so it is no model folder"), problem
    monkeypatch.chdir(tmp_path)  # relative: models/ exists here, so models/mylm is a path, not a hub id
    assert model_folder_problems(_compose("model.path=models/mylm"))[0].startswith("model.path: models/mylm does not")
    (model).mkdir()
    (model / "config.json").write_text("{}")
    assert model_folder_problems(_compose(f"model.path={model}", f"judge.model={model}")) == []
    (problem,) = model_folder_problems(_compose(f"model.path={model}", "judge.model=/no/judge"))
    assert problem.startswith("judge.model: /no/judge does not exist")
    assert model_folder_problems(_compose()) == []  # the default: SmolLM2 from its GGUF package, judged by itself
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (problem,) = model_folder_problems(_compose("model.path=Qwen/Qwen2.5-32B-Instruct"))
    assert "is not in the hub cache while HF_HUB_OFFLINE is set" in problem
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for hub_id in ("Qwen/Qwen2.5-32B-Instruct", "gpt2"):  # downloaded on first use
        assert model_folder_problems(_compose(f"model.path={hub_id}")) == []


def test_summaries_that_do_not_overlap_the_articles_fail_at_plan_time_naming_the_file(data_dir, tmp_path):
    from sgtr_em.data.files import DataFiles
    from sgtr_em.preflight import data_problems

    data = tmp_path / "data"
    for rel in ("articles/xsum_train_articles.json", "summaries/xsum/xsum_train_claude-21_responses.json"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes((data_dir / rel).read_bytes())
    other = data / "summaries/xsum/xsum_train_claude-21_responses.json"
    import json

    other.write_text(json.dumps({f"x{k}": v for k, v in json.loads(other.read_text()).items()}))  # ids off by a prefix
    cfg = _compose("intervention=sgtr", f"paths.data_dir={data}")
    problems = data_problems(DataFiles(data, tmp_path / "cache", download=False), plan_stages(cfg))
    assert len(problems) == 1 and "summaries/xsum/xsum_train_claude-21_responses.json" in problems[0]
    assert data_problems(DataFiles(data_dir, tmp_path / "cache", download=False), plan_stages(_compose())) == []


def test_a_config_error_reaches_the_runs_own_log(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "SGTR_EM_OUTPUT_DIR": str(tmp_path / "out")}
    proc = subprocess.run(
        [sys.executable, "-m", "sgtr_em.train", "training.learning_rate=-1", f"hydra.run.dir={run_dir}"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "training.learning_rate" in proc.stderr
    assert "training.learning_rate: -1.0 must be a positive number" in (run_dir / "train.log").read_text()
    assert not (tmp_path / "out" / "stages").exists()  # failed before any stage


def test_the_run_folder_is_unique_per_process():
    code = "from sgtr_em.config import job_suffix; print(job_suffix())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    suffixes = [p.communicate()[0].strip() for p in procs]
    assert suffixes[0] != suffixes[1] and all(suffixes)
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        hydra_cfg = OmegaConf.to_container(compose("config", return_hydra_config=True).hydra, resolve=False)
    assert hydra_cfg["run"]["dir"].endswith("-${job_suffix:}") and hydra_cfg["sweep"]["dir"].endswith("-${job_suffix:}")


def test_a_judge_url_that_refuses_connections_fails_before_any_work_naming_the_key():
    import socket

    from sgtr_em.preflight import endpoint_problems

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _compose("judge=openai", "judge.model=smollm2", f"judge.api.base_url=http://127.0.0.1:{port}/v1")
    problems = endpoint_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"judge.api.base_url: http://127.0.0.1:{port}/v1 cannot be")
    assert endpoint_problems(_compose("judge=openai", "judge.model=smollm2", "eval.run=[]")) == []


def test_the_endpoint_probe_tries_a_dropped_connection_again_but_not_a_refused_one():
    """A server that drops the first connection and answers the second is reachable (a judge server under faults
    is not an absent one); a refused connection is reported at once."""
    import socket
    import threading
    import time

    from sgtr_em.preflight import probe

    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        for n in range(2):
            conn, _ = server.accept()
            seen.append(n)
            if n == 1:  # any HTTP status counts as an answer
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            conn.close()  # the first: dropped without a word

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/v1/models"
    assert probe(url, timeout_s=5) is None and seen == [0, 1]
    thread.join(5)
    server.close()
    start = time.monotonic()
    assert isinstance(probe(url, timeout_s=5), ConnectionRefusedError)  # nobody listens there now
    assert time.monotonic() - start < 0.15  # refused: not tried again


def test_under_slurm_the_folder_is_the_slurm_jobs_on_every_node(monkeypatch):
    from sgtr_em.config import job_suffix

    monkeypatch.setenv("SLURM_JOB_ID", "812")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    assert job_suffix() == job_suffix() == "812.0"  # every node of the job's step agrees: multinode.follow finds it
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "800")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "12")
    assert job_suffix() == "800_12.0"


def test_the_throughput_callback_survives_a_resume_that_runs_no_step(tmp_path):
    """A resume from a checkpoint of the last step runs no step; its end-of-training record used to raise IndexError
    (ThroughputCallback._rate), on every rerun. The whole path, with real training: tests/test_resume.py."""
    from types import SimpleNamespace

    from sgtr_em.training.callbacks import ThroughputCallback

    cb = ThroughputCallback(tmp_path)
    state = SimpleNamespace(num_input_tokens_seen=1234)
    cb.on_train_begin(None, state, None)
    cb.on_train_end(None, state, None)
    perf = read_json(tmp_path / "rank0.json")
    assert perf["optimizer_steps"] == 0 and perf["tokens"] == 0
    assert perf["tokens_per_s"] is None and perf["tokens_per_s_after_first_step"] is None


def _weights(folder, content: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(content)


def test_a_model_folders_fingerprint_is_its_files_read_once_and_a_rewrite_in_place_changes_it(tmp_path, monkeypatch):
    from sgtr_em import models

    reads = []
    monkeypatch.setattr(models, "sha256_of", lambda p: reads.append(p.name) or sha256_of(p))
    folder, cache = tmp_path / "mylm", tmp_path / "cache"
    _weights(folder, b"\1" * 4096)
    first = models.model_fingerprint(str(folder), cache)
    assert first.startswith("sha256:") and reads == ["model.safetensors"]  # config.json: read as JSON
    assert models.model_fingerprint(str(folder), cache) == first and len(reads) == 1  # remembered: not read again
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.lock").write_text("x")  # a hub download's own bookkeeping: not the weights
    (folder / "README.md").write_text("# my model")  # nor a model card, a GGUF, Meta's original/ checkpoint
    (folder / "original").mkdir()
    (folder / "original" / "consolidated.00.pth").write_bytes(b"\3" * 64)
    (folder / "config.json").write_text('{"model_type": "llama", "transformers_version": "9.9"}')  # saved again
    assert models.model_fingerprint(str(folder), cache) == first
    st = (folder / "model.safetensors").stat()
    with open(folder / "model.safetensors", "r+b") as f:  # other weights of the same size, the mtime put back
        f.write(b"\2")
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert models.model_fingerprint(str(folder), cache) not in (None, first)
    (folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2}')  # another architecture
    assert len({first, models.model_fingerprint(str(folder), cache)}) == 2
    # the record names a path as the identities do, as written: a link moved to other weights is other weights
    _weights(tmp_path / "v2", b"\4" * 4096)
    _weights(tmp_path / "v3", b"\5" * 4096)
    (tmp_path / "current").symlink_to(tmp_path / "v2")
    models.check_model_fingerprints({"model.path": str(tmp_path / "current")}, cache)
    (tmp_path / "current").unlink()
    (tmp_path / "current").symlink_to(tmp_path / "v3")
    with pytest.raises(ValueError, match="holds other weights"):
        models.check_model_fingerprints({"model.path": str(tmp_path / "current")}, cache)
    (cache / models.FINGERPRINTS).write_text("{")  # a hand edit gone wrong: named, not a bare JSONDecodeError
    with pytest.raises(ValueError, match=f"{cache / models.FINGERPRINTS} is not valid JSON"):
        models.model_fingerprint(str(folder), cache)


def _hub_snapshot(hub, repo: str, commit: str, blobs: dict[str, bytes]) -> None:
    """A hub cache's snapshot as huggingface_hub writes it: files are links to blobs named by their content's hash."""
    import hashlib

    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "snapshots" / commit).mkdir(parents=True)
    for name, content in blobs.items():
        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (root / "snapshots" / commit / name).symlink_to(os.path.relpath(blob, root / "snapshots" / commit))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)


def test_a_hub_models_fingerprint_is_its_snapshots_weights_not_its_commit(tmp_path, monkeypatch):
    """A hub id's fingerprint is the content its downloaded snapshot's files are named by: a new commit that leaves the
    weights alone (a model card edit) keeps it; other weights change it; a download not finished has none yet."""
    from huggingface_hub import constants

    from sgtr_em import models

    hub, cache = tmp_path / "hub", tmp_path / "cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    repo, config = "Org/mylm", b'{"model_type": "llama"}'
    assert models.model_fingerprint(repo, cache) is None  # not downloaded
    _hub_snapshot(hub, repo, "a" * 40, {"config.json": config})
    assert models.model_fingerprint(repo, cache) is None  # the config only: the weights still downloading
    _hub_snapshot(hub, repo, "b" * 40, {"config.json": config, "model.safetensors": b"\1" * 64})
    first = models.check_model_fingerprints({"model.path": repo}, cache)["model.path"]
    assert first.startswith("sha256:")
    _hub_snapshot(hub, repo, "c" * 40, {"config.json": config, "model.safetensors": b"\1" * 64, "README.md": b"v2"})
    assert models.check_model_fingerprints({"model.path": repo}, cache)["model.path"] == first  # same weights
    index = b'{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    shards = {"config.json": config, "model.safetensors.index.json": index, "model-00001-of-00002.safetensors": b"x"}
    _hub_snapshot(hub, repo, "d" * 40, shards)
    assert models.model_fingerprint(repo, cache) is None  # a shard missing: not all downloaded
    _hub_snapshot(hub, repo, "e" * 40, {"config.json": config, "model.safetensors": b"\2" * 64})
    with pytest.raises(ValueError, match=f"model.path: {repo} holds other weights than on .* \\({first}, now sha256:"):
        models.check_model_fingerprints({"model.path": repo}, cache)


def test_other_weights_under_a_model_path_already_used_are_refused_before_any_work(data_dir, tmp_path, monkeypatch):
    """Stage hashes and caches name the base model by its path (plan.base_model_identity). Other weights copied into
    the same folder reused the stage trained from the old ones; now the job is refused, naming the folder, and a
    stage folder records the weights it came from."""
    from sgtr_em.models import FINGERPRINTS

    monkeypatch.setattr(job, "run_worker", fake_worker(tmp_path / "calls.log"))
    model, cache = tmp_path / "models" / "mylm", tmp_path / "cache"
    _weights(model, b"\1" * 4096)
    cfg = _compose(
        "stage_order=em_only",
        "eval.run=[]",
        "tracking=none",
        f"model.path={model}",
        f"paths.stages_dir={tmp_path / 'stages'}",
        f"paths.cache_dir={cache}",
        f"paths.data_dir={data_dir}",
    )
    stage = plan_stages(cfg)[0]
    job.run_job(cfg, tmp_path / "run1", "g")
    recorded = read_json(tmp_path / "stages" / stage.hash / "stage.json")["base_fingerprint"]
    assert recorded.startswith("sha256:")
    assert read_json(cache / FINGERPRINTS)["models"][str(model)]["fingerprint"] == recorded
    job.run_job(cfg, tmp_path / "run2", "g")  # the same weights: the stage is reused
    assert read_json(tmp_path / "run2" / "stages.json")[0]["status"] == "reused"

    _weights(model, b"\2" * 4096)  # other weights under the same path
    with pytest.raises(ValueError) as e:
        job.run_job(cfg, tmp_path / "run3", "g")
    assert f"model.path: {model} holds other weights than on" in str(e.value)
    assert "Put the new weights in a folder of their own" in str(e.value) and str(cache / FINGERPRINTS) in str(e.value)
    assert not (tmp_path / "run3" / "stages.json").exists()
    # a stage folder checks its own record too (a stages_dir shared between cache folders)
    with pytest.raises(RuntimeError, match="was trained from other base weights"):
        job.run_stage(cfg, stage, str(model), base_fingerprint="sha256:" + "0" * 64)
    _weights(model, b"\1" * 4096)  # the old weights back: reused again
    job.run_job(cfg, tmp_path / "run4", "g")
    assert read_json(tmp_path / "run4" / "stages.json")[0]["status"] == "reused"


def test_a_rerun_in_a_run_folder_must_be_the_same_job(data_dir, smollm2_path, cache_dir, tmp_path, monkeypatch):
    """hydra.run.dir=<folder> with another config wrote its results beside the old job's base/ and stages.json, and the
    summary compared against them. A rerun that changes only how the job runs (a resume with a smaller batch, the
    judge's rate limit) is still the job; one that changes what it measures is refused, naming the keys."""
    monkeypatch.setattr(job, "run_worker", fake_worker(tmp_path / "calls.log"))
    base = ["stage_order=em_only", "eval.run=[]", "tracking=none", f"paths.stages_dir={tmp_path / 'stages'}"]
    base += [f"paths.cache_dir={cache_dir}"]  # the converted SmolLM2 (smollm2_path)
    run = tmp_path / "run"
    job.run_job(_compose(*base), run, "g")
    recorded = read_json(run / "job.json")
    job.run_job(_compose(*base, "eval.batch_size=2", "judge.api.requests_per_minute=60", "compute=cpu"), run, "g")
    assert read_json(run / "job.json") == recorded  # the first attempt's record stays
    with pytest.raises(ValueError) as e:
        job.run_job(_compose(*base, "seed=1", "eval.em.samples_per_question=5"), run, "g")
    message = str(e.value)
    assert f"Run folder {run} holds another job" in message and "eval.em.samples_per_question: 2 -> 5" in message
    assert "seed: 0 -> 1" in message and "\n  - stages: [" in message  # the seed names another EM stage
    assert "Run it in a folder of its own" in message
