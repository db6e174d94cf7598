"""Stage worker for API models (model.backend=openai): train a stage as an OpenAI fine-tuning job.

    python -m sgtr_em.training.openai_ft <stage_dir>

Reads `<stage_dir>/stage.json` and `train.jsonl` (built by sgtr_em.data.build, as for open models), writes the
fine-tuning file `openai_train.jsonl` and checks it against the API's rules (data/openai_format.py) before
anything is uploaded, uploads it, creates the job on the stage's input model (the base model id, or the previous
stage's `ft:` model) with the configured hyperparameters, and polls it: status changes and the job's events go to
the log, its metrics events to `train_log.jsonl` (the stage's loss curve in W&B), every event to
`openai_events.jsonl`. `openai_job.json` holds the state: the file id and the job id are saved as soon as they
exist; at the end the resulting `fine_tuned_model`, trained tokens and the cost.

Never paying twice: a job carries the stage hash in its metadata and suffix. A rerun (after a crash, a kill, a
laptop asleep) continues from `openai_job.json`, and where that has no job yet it lists the jobs on the server
and waits on the one of this stage instead of creating another. Creating a file or a job is not retried blindly:
after a failed attempt (429, 5xx, a dropped connection, whose request may have gone through) it first looks for
what that attempt may have created. A job the API fails for its own reasons (`server_error`) is created again, at
most `openai.max_job_attempts` times; any other failure stops the stage with the API's message.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from ..contracts import read_stage
from ..data.openai_format import validate_ft_file, write_ft_file
from ..inference.api import api_key
from ..io import read_json, read_jsonl, write_json
from ..workers import worker_logging

log = logging.getLogger("sgtr_em.training.openai_ft")

STATE = "openai_job.json"
FT_FILE = "openai_train.jsonl"
EVENTS = "openai_events.jsonl"
ACTIVE = ("validating_files", "queued", "running")
RETRYABLE_JOB_ERRORS = ("server_error", "internal_error")  # the API's own failures: the same job may succeed again


def stage_metadata(stage_hash: str, kind: str) -> dict:
    return {"sgtr_em_stage": stage_hash, "sgtr_em_kind": kind}


def job_suffix(stage_hash: str) -> str:
    return f"sgtr-em-{stage_hash}"  # in the ft: model's name (the API allows 64 characters)


def make_client(o: dict):
    from openai import OpenAI

    base_url = o["base_url"] or os.environ.get("OPENAI_BASE_URL")
    return OpenAI(api_key=api_key(o, base_url), base_url=base_url, max_retries=o["max_retries"], timeout=o["timeout_s"])


def _retry_wait(error, attempt: int) -> float:
    """The server's retry-after (ms or s) where it gives one, else 0.5 s doubling up to 8 s."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return min(60.0, float(headers[key]) * scale)
        except (KeyError, ValueError):
            pass
    return min(8.0, 0.5 * 2**attempt)


def create_or_find(what: str, create: Callable, find: Callable, attempts: int):
    """`create()` once per attempt, with no blind retry: after a retryable failure, `find()` what the attempt may
    have created (its answer may be what was lost) before trying again."""
    from openai import APIConnectionError, APIStatusError

    for attempt in range(attempts + 1):
        try:
            return create()
        except APIConnectionError as e:  # includes timeouts: the request may have gone through
            error = e
        except APIStatusError as e:
            if e.status_code not in (408, 409, 429) and e.status_code < 500:
                raise
            error = e
        found = find()
        if found is not None:
            log.info("%s: the failed attempt (%s) had gone through: using %s", what, type(error).__name__, found.id)
            return found
        wait = _retry_wait(error, attempt)
        log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(error).__name__, error, wait)
        time.sleep(wait)
    raise RuntimeError(f"{what} failed {attempts + 1} times; the last error: {error}")


class FineTuningStage:
    def __init__(self, stage_dir: Path):
        self.dir = stage_dir
        self.spec, self.rt = read_stage(stage_dir)
        self.o = self.rt.openai
        self.hash = stage_dir.name
        self.state = read_json(stage_dir / STATE) if (stage_dir / STATE).exists() else {}
        self.client = make_client(self.o)
        self.seen_events = (
            {e["id"] for _, e in read_jsonl(stage_dir / EVENTS)} if (stage_dir / EVENTS).exists() else set()
        )

    def save(self) -> None:
        write_json(self.dir / STATE, self.state)

    # ---------------------------------------------------------------- the training file

    def _find_file(self, name: str, size: int):
        from openai import NotFoundError

        for f in self.client.files.list(purpose="fine-tune"):
            if f.filename == name and f.bytes == size:
                try:
                    if self.client.files.retrieve(f.id).status != "error":
                        return f
                except NotFoundError:
                    pass
        return None

    def training_file(self) -> str:
        """The id of the uploaded, validated fine-tuning file (uploaded once)."""
        from openai import NotFoundError

        if self.state.get("file"):
            try:
                return self.client.files.retrieve(self.state["file"]["id"]).id
            except NotFoundError:
                log.warning("file %s is gone from the server: uploading again", self.state["file"]["id"])
        path = self.dir / FT_FILE
        write_ft_file((r for _, r in read_jsonl(self.dir / "train.jsonl")), path)
        report = validate_ft_file(path, max_example_tokens=self.spec.training["max_length"])  # before any upload
        epochs = self.spec.training["hyperparameters"]["n_epochs"]
        self.state["validation"] = {
            **report.as_dict(),
            "estimated_cost_usd": round(
                report.estimated_tokens * (1 if epochs == "auto" else epochs) * self.o["training_usd_per_mtok"] / 1e6, 4
            ),
            "estimate_note": "tokens estimated offline (bytes / 3 + 4 per message); n_epochs auto counted as 1",
        }
        log.info(
            "%s: %d examples, about %d tokens (%s); about $%.2f to train",
            path.name,
            report.examples,
            report.estimated_tokens,
            report.per_role,
            self.state["validation"]["estimated_cost_usd"],
        )
        name, size = f"sgtr-em-{self.hash}.jsonl", path.stat().st_size
        found = self._find_file(name, size)
        if found is None:

            def upload():
                with open(path, "rb") as f:
                    return self.client.with_options(max_retries=0).files.create(file=(name, f), purpose="fine-tune")

            found = create_or_find(
                f"upload of {name}", upload, lambda: self._find_file(name, size), self.o["max_retries"]
            )
            log.info("uploaded %s as %s (%d bytes)", name, found.id, found.bytes)
        else:
            log.info("%s is on the server already: %s", name, found.id)
        self.state["file"] = {"id": found.id, "filename": name, "bytes": size}
        self.save()
        return found.id

    # ---------------------------------------------------------------- the job

    def stage_jobs(self) -> list:
        """This stage's jobs on the server (by the stage hash in their metadata), newest first."""
        jobs = self.client.fine_tuning.jobs.list(metadata={"sgtr_em_stage": self.hash}, limit=100)
        mine = [
            j for j in jobs if (j.metadata or {}).get("sgtr_em_stage") == self.hash and j.model == self.rt.input_model
        ]
        return sorted(mine, key=lambda j: j.created_at, reverse=True)

    def _live_job(self):
        return next((j for j in self.stage_jobs() if j.status in ACTIVE or j.status == "succeeded"), None)

    def existing_job(self):
        """The job this stage has already: from the stage folder, else found on the server (None: create one)."""
        if self.state.get("job"):
            job = self.client.fine_tuning.jobs.retrieve(self.state["job"]["id"])
            if job.status in ACTIVE or job.status == "succeeded":
                log.info("job %s of this stage (from %s) is %s: waiting on it", job.id, STATE, job.status)
                return job
        job = self._live_job()
        if job is not None:
            log.info(
                "found job %s of stage %s on the server (%s): waiting on it instead of creating another",
                job.id,
                self.hash,
                job.status,
            )
        return job

    def create_job(self, file_id: str):
        failed = [j for j in self.stage_jobs() if j.status == "failed"]
        if len(failed) >= self.o["max_job_attempts"]:
            raise RuntimeError(
                f"stage {self.hash}: {len(failed)} jobs failed already (openai.max_job_attempts="
                f"{self.o['max_job_attempts']}): {[j.id for j in failed]}; see {self.dir / EVENTS}"
            )
        h = self.spec.training
        method = {"type": "supervised", "supervised": {"hyperparameters": dict(h["hyperparameters"])}}

        def create():
            return self.client.with_options(max_retries=0).fine_tuning.jobs.create(
                model=self.rt.input_model,
                training_file=file_id,
                method=method,
                seed=h["seed"],
                suffix=job_suffix(self.hash),
                metadata=stage_metadata(self.hash, self.spec.kind),
            )

        job = create_or_find(f"creating the job of stage {self.hash}", create, self._live_job, self.o["max_retries"])
        log.info("created job %s: %s on %s, %s", job.id, self.spec.kind, job.model, json.dumps(method))
        return job

    def record_job(self, job) -> None:
        self.state["job"] = {
            "id": job.id,
            "model": job.model,
            "status": job.status,
            "created_at": job.created_at,
            "training_file": job.training_file,
        }
        self.save()

    def new_events(self, job_id: str) -> None:
        """Logs the job's events not seen yet (oldest first); metrics events also go to train_log.jsonl."""
        page = self.client.fine_tuning.jobs.list_events(job_id, limit=100)
        fresh = [e for e in reversed(page.data) if e.id not in self.seen_events]
        for e in fresh:
            self.seen_events.add(e.id)
            record = e.model_dump(mode="json")
            with open(self.dir / EVENTS, "a", encoding="utf-8") as f:
                f.write(json.dumps({"job": job_id, **record}) + "\n")
            data = record.get("data") or {}
            if record.get("type") == "metrics" and "step" in data:
                row = {
                    "step": data["step"],
                    "loss": data.get("train_loss"),
                    "total_steps": data.get("total_steps"),
                    "mean_token_accuracy": data.get("train_mean_token_accuracy"),
                }
                with open(self.dir / "train_log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
            log.info("job %s: %s", job_id, e.message)

    def wait(self, job):
        """Polls the job until it ends (succeeded, failed or cancelled); returns it."""
        start, status = time.time(), None
        while True:
            self.new_events(job.id)
            if job.status != status:
                status = job.status
                log.info("job %s is %s (%.0f s)", job.id, status, time.time() - start)
                self.record_job(job)
            if job.status not in ACTIVE:
                return job
            time.sleep(self.o["poll_interval_s"])
            job = self.client.fine_tuning.jobs.retrieve(job.id)

    def run(self) -> None:
        if self.state.get("fine_tuned_model"):
            log.info("stage %s was trained already: %s", self.hash, self.state["fine_tuned_model"])
            return
        job = self.existing_job()
        while True:
            if job is None:
                job = self.create_job(self.training_file())
            self.record_job(job)
            job = self.wait(job)
            if job.status == "succeeded":
                break
            error = job.error.model_dump() if job.error else {}
            self.state.setdefault("failed_jobs", []).append({"id": job.id, "status": job.status, "error": error})
            self.save()
            if job.status == "failed" and error.get("code") in RETRYABLE_JOB_ERRORS:
                log.warning("job %s failed (%s): creating it again", job.id, error.get("message"))
                job = None
                continue
            raise RuntimeError(
                f"fine-tuning job {job.id} {job.status}: {error.get('message') or 'no reason given'} "
                f"(code {error.get('code')}); events in {self.dir / EVENTS}"
            )
        self.finish(job)

    def finish(self, job) -> None:
        tokens = job.trained_tokens or 0
        self.state.update(
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=tokens,
            status=job.status,
            cost_usd=round(tokens * self.o["training_usd_per_mtok"] / 1e6, 4),
            base_model=job.model,
            hyperparameters=job.method.model_dump()["supervised"]["hyperparameters"] if job.method else None,
            seed=job.seed,
            finished_at=job.finished_at,
        )
        self.save()
        log.info(
            "stage %s: %s (%d trained tokens, $%.2f)", self.hash, job.fine_tuned_model, tokens, self.state["cost_usd"]
        )


def fine_tuned_model(stage_dir: Path) -> Optional[str]:
    """The `ft:` model a finished stage produced (the next stage's input model)."""
    path = Path(stage_dir) / STATE
    return read_json(path).get("fine_tuned_model") if path.exists() else None


def main(stage_dir: Path) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise; the job's events say more
    FineTuningStage(stage_dir).run()


if __name__ == "__main__":
    stage_dir = Path(sys.argv[1])
    worker_logging(stage_dir / "worker.log")
    main(stage_dir)
