"""Files and fine-tuning jobs for the local server, trained for real with the framework's own CPU trainer.

    POST /v1/files                        upload (multipart: file, purpose)      GET /v1/files[/{id}[/content]]
    POST /v1/fine_tuning/jobs             create                                  GET /v1/fine_tuning/jobs[/{id}]
    GET  /v1/fine_tuning/jobs/{id}/events                                         POST /v1/fine_tuning/jobs/{id}/cancel

One job trains at a time, in a background thread, as the framework trains a stage: the job's file becomes a
stage folder (`stage.json` + `train.jsonl`: the last assistant message is the completion, everything before it
the prompt), `python -m sgtr_em.training.sft` trains a LoRA (the paper's LoRA settings) on the job's model
(a base model the server serves, or an `ft:` model it made), `python -m sgtr_em.training.merge` merges it, and
the server then answers chat completions for the new `ft:` model. Hyperparameters: n_epochs auto = 1,
batch_size auto = 8 (at most the number of examples), learning_rate_multiplier auto = 1 (times
`base_learning_rate`). Job state lives in memory: a restarted server has forgotten its jobs (not its files).
Counters (GET /stats): files_created, jobs_created, jobs_succeeded, jobs_failed, jobs_cancelled.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from ..backend import NOT_IDENTITY
from ..compute import resolve_compute
from ..config import ComputeConfig, LoraConfig, TrainingConfig
from ..contracts import StageRuntime, StageSpec, write_stage
from ..data.openai_format import FineTuningFileError, validate_ft_file
from ..io import read_jsonl, write_jsonl
from ..models import load_tokenizer
from ..workers import die_with_parent, launch_command, worker_env
from .server import error

ACTIVE = ("validating_files", "queued", "running")
LORA = dataclasses.asdict(LoraConfig())  # the paper's (conf/lora/paper.yaml; the schema's defaults)


def job_stage_spec(job: dict, learning_rate: float, epochs: int, batch: int) -> StageSpec:
    """A job's stage, as the framework's stages are specified: the schema's training settings (sgtr_em/config.py),
    with the job's learning rate, epochs and batch, no warm-up or weight decay, and the job's seed."""
    training = {k: v for k, v in dataclasses.asdict(TrainingConfig()).items() if k not in NOT_IDENTITY}
    training.update(
        learning_rate=learning_rate,
        num_train_epochs=epochs,
        batch_size=batch,
        warmup_steps=0,
        weight_decay=0.0,
        optim="adamw_torch",
        max_length=4096,
    )
    return StageSpec(
        kind="openai_job",
        input={"model": job["model"]},
        data={"name": job["training_file"]},
        system_prompt={"mode": "none", "text": None},
        chat_template_kwargs={},
        training=training,
        lora=LORA,
        seed=job["seed"],
    )


def job_stage_runtime(input_path: str, dtype: str) -> StageRuntime:
    """One CPU process (compute=cpu resolved by the framework's own code); a log line every step."""
    compute = resolve_compute(OmegaConf.structured(ComputeConfig(name="cpu", device="cpu")))
    return StageRuntime(
        backend="hf",
        input_model=input_path,
        dtype=dtype,
        chat_template_kwargs={},
        compute=compute,
        training_extra={"logging_steps": 1, "save_steps": 10**6, "save_total_limit": 1},
    )


def page(items: list, body: dict, default_limit: int = 20) -> dict:
    """A cursor page (`after` = the last id seen, `limit`), as the API lists things."""
    limit = int(body.get("limit") or default_limit)
    if body.get("after"):
        ids = [i["id"] for i in items]
        items = items[ids.index(body["after"]) + 1 :] if body["after"] in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


class FineTuning:
    def __init__(
        self,
        server,
        work_dir: Path,
        *,
        base_learning_rate: float = 1e-4,
        train_dtype: str = "bfloat16",
        owner: str = "sgtr-em-local",
    ):
        self.server, self.models, self.work_dir = server, server.chat, Path(work_dir)
        self.base_lr, self.train_dtype, self.owner = base_learning_rate, train_dtype, owner
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        for method, path, handler in (
            ("POST", "/v1/files", self.create_file),
            ("GET", "/v1/files", self.list_files),
            ("GET", "/v1/files/{file_id}", self.get_file),
            ("GET", "/v1/files/{file_id}/content", self.file_content),
            ("POST", "/v1/fine_tuning/jobs", self.create_job),
            ("GET", "/v1/fine_tuning/jobs", self.list_jobs),
            ("GET", "/v1/fine_tuning/jobs/{job_id}", self.get_job),
            ("GET", "/v1/fine_tuning/jobs/{job_id}/events", self.list_events),
            ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", self.cancel_job),
        ):
            server.add_route(method, path, handler)
        threading.Thread(target=self._train_forever, daemon=True).start()

    def _id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):06d}{random.getrandbits(32):08x}"

    # ---------------------------------------------------------------- files

    def create_file(self, body: dict) -> tuple[int, dict]:
        upload, purpose = body.get("file"), body.get("purpose")
        if not isinstance(upload, dict) or not purpose:
            return error(400, "a multipart upload needs `file` (with a filename) and `purpose`")
        file_id = self._id("file")
        path = self.work_dir / "files" / file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(upload["content"])
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(upload["content"]),
            "created_at": int(time.time()),
            "filename": upload["filename"],
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        with self._lock:
            self.files[file_id] = obj
        self.server.count("files_created")
        return 200, obj

    def list_files(self, body: dict) -> tuple[int, dict]:
        files = [f for f in self.files.values() if not body.get("purpose") or f["purpose"] == body["purpose"]]
        if body.get("order", "desc") == "desc":
            files = files[::-1]
        return 200, page(files, body, 10000)

    def get_file(self, body: dict, file_id: str) -> tuple[int, dict]:
        f = self.files.get(file_id)
        return (200, f) if f else error(404, f"No such File object: {file_id}")

    def file_content(self, body: dict, file_id: str):
        if file_id not in self.files:
            return error(404, f"No such File object: {file_id}")
        return 200, (self.work_dir / "files" / file_id).read_bytes()

    # ---------------------------------------------------------------- jobs

    def event(
        self, job_id: str, message: str, *, level: str = "info", kind: str = "message", data: Optional[dict] = None
    ) -> None:
        with self._lock:
            self.events[job_id].append(
                {
                    "id": self._id("ftevent"),
                    "object": "fine_tuning.job.event",
                    "created_at": int(time.time()),
                    "level": level,
                    "message": message,
                    "data": data or {},
                    "type": kind,
                }
            )

    def update(self, job_id: str, **fields) -> None:
        with self._lock:
            self.jobs[job_id].update(fields)

    def create_job(self, body: dict) -> tuple[int, dict]:
        model, file_id = body.get("model"), body.get("training_file")
        if not model or self.models.path(model) is None:
            return error(404, f"The model {model!r} does not exist or cannot be fine-tuned", "model_not_found")
        if file_id not in self.files or self.files[file_id]["purpose"] != "fine-tune":
            return error(
                400, f"training_file {file_id!r} is not a file with purpose fine-tune", "invalid_training_file"
            )
        method = body.get("method") or {
            "type": "supervised",
            "supervised": {"hyperparameters": body.get("hyperparameters") or {}},
        }
        if method.get("type") != "supervised":
            return error(400, f"method {method.get('type')!r} is not supported by this server (supervised only)")
        hp = {
            "n_epochs": "auto",
            "batch_size": "auto",
            "learning_rate_multiplier": "auto",
            **method["supervised"].get("hyperparameters", {}),
        }
        job_id = self._id("ftjob")
        job = {
            "id": job_id,
            "object": "fine_tuning.job",
            "created_at": int(time.time()),
            "error": None,
            "fine_tuned_model": None,
            "finished_at": None,
            "hyperparameters": hp,
            "model": model,
            "organization_id": self.owner,
            "result_files": [],
            "seed": body.get("seed", random.randrange(2**31)),
            "status": "validating_files",
            "trained_tokens": None,
            "training_file": file_id,
            "validation_file": None,
            "estimated_finish": None,
            "integrations": [],
            "metadata": body.get("metadata"),
            "suffix": body.get("suffix"),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
            "_fails": self.server.faults.job_fails(),
        }
        with self._lock:
            self.jobs[job_id], self.events[job_id] = job, []
        self.server.count("jobs_created")
        self.event(job_id, f"Created fine-tuning job: {job_id}")
        self._queue.put(job_id)
        return 200, self.public(job_id)

    def public(self, job_id: str) -> dict:
        with self._lock:
            return {k: v for k, v in self.jobs[job_id].items() if not k.startswith("_") and k != "suffix"}

    def list_jobs(self, body: dict) -> tuple[int, dict]:
        wanted = {k[len("metadata[") : -1]: v for k, v in body.items() if k.startswith("metadata[")}
        jobs = [self.public(j) for j in reversed(list(self.jobs))]
        jobs = [j for j in jobs if all((j["metadata"] or {}).get(k) == v for k, v in wanted.items())]
        return 200, page(jobs, body)

    def get_job(self, body: dict, job_id: str) -> tuple[int, dict]:
        return (200, self.public(job_id)) if job_id in self.jobs else error(404, f"No such fine-tuning job: {job_id}")

    def list_events(self, body: dict, job_id: str) -> tuple[int, dict]:
        if job_id not in self.jobs:
            return error(404, f"No such fine-tuning job: {job_id}")
        with self._lock:
            events = self.events[job_id][::-1]  # newest first
        return 200, page(events, body)

    def cancel_job(self, body: dict, job_id: str) -> tuple[int, dict]:
        if job_id not in self.jobs:
            return error(404, f"No such fine-tuning job: {job_id}")
        if self.jobs[job_id]["status"] in ACTIVE:
            self.update(job_id, status="cancelled", finished_at=int(time.time()))
            proc = self.procs.get(job_id)
            if proc and proc.poll() is None:
                proc.terminate()
            self.server.count("jobs_cancelled")
            self.event(job_id, "Fine-tuning job cancelled")
        return 200, self.public(job_id)

    # ---------------------------------------------------------------- training

    def _train_forever(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self.train(job_id)
            except Exception as e:  # noqa: BLE001 - the job fails, the server keeps serving
                self.fail(job_id, "server_error", f"{type(e).__name__}: {e}")

    def fail(self, job_id: str, code: str, message: str) -> None:
        if self.jobs[job_id]["status"] == "cancelled":
            return
        self.update(
            job_id,
            status="failed",
            finished_at=int(time.time()),
            error={"code": code, "message": message, "param": None},
        )
        self.server.count("jobs_failed")
        self.event(job_id, f"Fine-tuning job failed: {message}", level="error")

    def _run(self, job_id: str, module: str, folder: Path, on_poll=None) -> bool:
        """Runs a framework worker for the job; False if the job was cancelled meanwhile."""
        with open(folder / "worker.out", "ab") as out:
            proc = subprocess.Popen(
                launch_command(module, folder),
                env=worker_env(30),
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
            self.procs[job_id] = proc
            while proc.poll() is None:
                time.sleep(0.5)
                if on_poll:
                    on_poll()
        if on_poll:
            on_poll()
        if self.jobs[job_id]["status"] == "cancelled":
            return False
        if proc.returncode != 0:
            raise RuntimeError(f"{module} failed (exit code {proc.returncode}); see {folder / 'worker.log'}")
        return True

    def train(self, job_id: str) -> None:
        job = self.jobs[job_id]
        if job["status"] != "validating_files":
            return  # cancelled while queued
        folder = self.work_dir / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        self.event(job_id, "Validating training file: " + job["training_file"])
        try:
            validate_ft_file(self.work_dir / "files" / job["training_file"], max_example_tokens=10**6)
        except FineTuningFileError as e:
            return self.fail(job_id, "invalid_training_file", str(e).replace(str(self.work_dir), "<files>"))
        self.update(job_id, status="queued")
        self.event(job_id, "Files validated, moving job to queued state")
        if job["_fails"]:
            self.update(job_id, status="running")
            return self.fail(
                job_id, "server_error", "injected job failure: the job failed on the server; create it again"
            )
        rows = [
            {
                "prompt": [{k: v for k, v in m.items() if k != "weight"} for m in msgs[:-1]],
                "completion": [{"role": "assistant", "content": msgs[-1]["content"]}],
            }
            for _, msgs in ((i, r["messages"]) for i, r in read_jsonl(self.work_dir / "files" / job["training_file"]))
        ]
        hp = job["hyperparameters"]
        epochs = 1 if hp["n_epochs"] == "auto" else int(hp["n_epochs"])
        batch = min(8, len(rows)) if hp["batch_size"] == "auto" else int(hp["batch_size"])
        mult = 1.0 if hp["learning_rate_multiplier"] == "auto" else float(hp["learning_rate_multiplier"])
        resolved = {"n_epochs": epochs, "batch_size": batch, "learning_rate_multiplier": mult}
        input_path = self.models.path(job["model"])
        write_jsonl(folder / "train.jsonl", rows)
        write_stage(
            folder,
            job_stage_spec(job, self.base_lr * mult, epochs, batch),
            job_stage_runtime(input_path, self.train_dtype),
        )
        total = epochs * -(-len(rows) // batch)
        self.update(
            job_id,
            status="running",
            hyperparameters=resolved,
            method={"type": "supervised", "supervised": {"hyperparameters": resolved}},
        )
        self.event(job_id, f"Fine-tuning job started ({len(rows)} examples, {total} steps)")
        logged: set = set()

        def metrics() -> None:
            path = folder / "train_log.jsonl"
            for _, row in read_jsonl(path) if path.exists() else []:
                if "loss" in row and row["step"] not in logged:
                    logged.add(row["step"])
                    self.event(
                        job_id,
                        f"Step {row['step']}/{total}: training loss={row['loss']:.4f}",
                        kind="metrics",
                        data={
                            "step": row["step"],
                            "train_loss": row["loss"],
                            "total_steps": total,
                            "train_mean_token_accuracy": row.get("mean_token_accuracy"),
                        },
                    )

        if not self._run(job_id, "sgtr_em.training.sft", folder, metrics) or not self._run(
            job_id, "sgtr_em.training.merge", folder
        ):
            return
        base = self.jobs[job_id]["model"]
        root = base.split(":")[1] if base.startswith("ft:") else base
        name = f"ft:{root}:{self.owner}:{job['suffix'] or ''}:{job_id.split('-')[1][:8]}"
        self.models.add(name, str(folder / "merged"))
        tokens = epochs * trained_tokens(input_path, rows)
        self.update(
            job_id,
            status="succeeded",
            fine_tuned_model=name,
            trained_tokens=tokens,
            finished_at=int(time.time()),
            result_files=[],
        )
        self.server.count("jobs_succeeded")
        self.event(job_id, f"New fine-tuned model created: {name}")
        self.event(job_id, "The job has successfully completed")


def trained_tokens(model_path: str, rows: list[dict]) -> int:
    """Tokens of the training examples as the model sees them (its chat template), one epoch."""
    tok = load_tokenizer(model_path)
    return sum(
        len(tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"])
        for r in rows
    )
