"""Weights & Biases: one run per job, offline by default (no account needed), online when asked.

The run's top-level config holds the group choices (model, em_dataset, intervention, stage_order,
system_prompt, seed) and the other overrides that say what it computes (`condition_overrides`), and its job type
is the condition (the run name without the seed: the groups, then those overrides), so the default W&B
view compares conditions: the group is the sweep, "group by job type" averages the seeds, and tags
(`intervention:sgtr`, ...) filter. The full resolved config sits under `cfg`. When tracking is off, a DummyRun takes the calls, so the pipeline never branches on it.
The API key is read by wandb from WANDB_API_KEY and never enters the config.

One job folder, one W&B run: its id is kept in `<run_dir>/wandb_run.json`, so a job rerun in its folder
or requeued by Slurm (same folder) resumes the same run, and a stage's curve is logged once. Under a W&B
sweep agent the agent's WANDB_RUN_ID wins. Offline, each attempt writes its own `offline-run-*` folder with
the same id; `wandb sync` uploads them in order into that one run.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import secrets
import struct
import time
from pathlib import Path
from typing import Any

import yaml

from .io import write_json
from .preflight import redact

log = logging.getLogger(__name__)

GROUP_KEYS = ("model", "em_dataset", "intervention", "stage_order", "system_prompt")
# A condition is the config groups (seed excluded), in this order, then any other command-line override that says
# what a job computes (e.g. training.learning_rate): its W&B job type, and a report's condition fields.
CONDITION_KEYS = (*GROUP_KEYS, "defence")  # defence: absent from jobs older than defences, which read as "none"
SEED_KEY = "seed"
# Keys (and the keys under them) that say where and how fast a job runs, not what it computes (compute.micro_batch_size
# with the same optimizer batch, a data folder, W&B mode, a smaller evaluation batch after running out of memory, the
# judge's rate limits): never condition fields, so runs of one condition on other hardware or resumed with other
# settings still pool their seeds; a rerun in a run folder may change them (job.run_identity).
RUN_ONLY_PREFIXES = (
    "hydra",
    "compute",
    "deepspeed",
    "paths",
    "tracking",
    "download",
    "eval.batch_size",
    "eval.generation.backend",
    "eval.generation.api",
    "judge.api",
    "judge.cache",
    "training.logging_steps",  # backend.NOT_IDENTITY: outside the stage hash too
    "training.save_steps",
    "training.save_total_limit",
    "training.keep_checkpoints",
)
PRESET_KEYS = ("experiment", "sweep")  # bundles of settings: a W&B name carries the settings' own groups, not these


def run_only(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in RUN_ONLY_PREFIXES)


RUN_STATE = "wandb_run.json"  # the job's W&B run id and the stages already logged to it


class DummyRun:
    """Takes every call a wandb run would, and does nothing (nanochat's DummyWandb)."""

    dir = None

    def __getattr__(self, name):
        return lambda *a, **k: None


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def group_keys(cfg) -> tuple:
    """GROUP_KEYS, and `defence` when the job has one (defence=none leaves names and tags as they were)."""
    defended = cfg.get("defence") is not None and cfg.defence.name != "none"
    return (*GROUP_KEYS, "defence") if defended else GROUP_KEYS


def condition_overrides(overrides) -> dict[str, str]:
    """{key: value} of the command-line overrides that say what a job computes (not its groups, seed, or how it ran)."""
    out = {}
    for item in overrides:
        key, _, value = str(item).partition("=")
        deleted = key.startswith("~")
        key = key.lstrip("+~")
        if key not in (*CONDITION_KEYS, SEED_KEY) and not run_only(key):
            out[key] = "~" if deleted else value
    return out


def _condition_parts(cfg, overrides) -> list[str]:
    extra = {k: v for k, v in condition_overrides(overrides).items() if k not in PRESET_KEYS}
    return [*(str(cfg[k].name) for k in group_keys(cfg)), *(f"{k}={extra[k]}" for k in sorted(extra))]


def run_name(cfg, overrides=()) -> str:
    return "-".join([*_condition_parts(cfg, overrides), f"s{cfg.seed}"])


def condition_name(cfg, overrides=()) -> str:
    """The run name without the seed: the W&B job type, so a sweep's runs group by condition, two learning rates
    apart (W&B allows 64 characters; a longer name keeps its start and a hash of the whole)."""
    name = "-".join(_condition_parts(cfg, overrides))
    return name if len(name) <= 64 else f"{name[:55]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def run_tags(cfg) -> list[str]:
    """One tag per group choice (`stage_order:reversal`), then the configured tags."""
    return list(dict.fromkeys([*(f"{k}:{cfg[k].name}" for k in group_keys(cfg)), *cfg.tracking.tags]))


def _state(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_STATE
    return json.loads(path.read_text()) if path.exists() else {}


def job_run_id(run_dir: Path) -> str:
    """The W&B run id of the job in `run_dir`: the sweep agent's, else the one this folder has, else a new one."""
    state = _state(run_dir)
    run_id = os.environ.get("WANDB_RUN_ID") or state.get("id") or secrets.token_hex(4)
    if state.get("id") != run_id:
        write_json(Path(run_dir) / RUN_STATE, {"id": run_id, "logged_stages": []})
    return run_id


def command_line_overrides(run_dir: Path) -> list[str]:
    """The job's command-line overrides (Hydra's .hydra/overrides.yaml): a report from W&B tells conditions apart by
    them, as one from the job folders does (sgtr_em/report/collect.py)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])] if path.exists() else []


def start_run(cfg, resolved: dict, run_dir: Path, group: str):
    t = cfg.tracking
    if t.backend == "none":
        return DummyRun()
    import wandb

    overrides = command_line_overrides(run_dir)
    extra = condition_overrides(overrides)  # the dashboard groups by it beside the groups (report/dashboard.py)
    config = {k: str(cfg[k].name) for k in CONDITION_KEYS if cfg.get(k) is not None}
    config.update(seed=cfg.seed, cfg=resolved, overrides=overrides)
    config["condition_overrides"] = ",".join(f"{k}={extra[k]}" for k in sorted(extra))
    sweep = bool(os.environ.get("WANDB_SWEEP_ID"))  # a sweep agent's run: its project and entity are the sweep's
    kwargs = dict(
        project=None if sweep else t.project,
        entity=None if sweep else t.entity,
        group=t.group or group,
        name=run_name(cfg, overrides),
        job_type=condition_name(cfg, overrides),
        tags=run_tags(cfg),
        config=config,
        dir=str(run_dir),
        mode=t.mode,
        id=job_run_id(run_dir),
        resume="allow",
        settings=wandb.Settings(silent=True, console="off"),
    )
    # Each job talks to its own W&B service process. An inherited WANDB_SERVICE (set by any process that started a run:
    # a test runner, a notebook, the shell of an earlier job) would share one, and a run whose process was killed
    # stays open there: its rerun (the same id, to resume it) would be refused as "in use" for as long as it lives.
    os.environ.pop("WANDB_SERVICE", None)
    # A requeued job can start while its preempted attempt still finishes the same run (it checkpoints, then closes
    # the run): W&B refuses a run id in use until then. Wait for it, up to twice the preemption grace period.
    deadline = time.time() + 2 * cfg.compute.preempt_grace_s
    while True:
        try:
            return wandb.init(**kwargs)
        except Exception as e:  # wandb's ServerResponseError / CommError, depending on the version
            if "in use" not in str(e) or time.time() > deadline:
                raise
            log.warning("W&B run %s is still in use by the previous attempt: waiting", kwargs["id"])
            time.sleep(5)


def record_failure(run, error: BaseException) -> int:
    """Writes the error that ended the job into its run's summary (secrets redacted); returns the exit code to
    finish the run with, so W&B marks it failed."""
    if not isinstance(run, DummyRun):
        run.summary["job/error"] = redact(f"{type(error).__name__}: {error}")[:2000]
    code = getattr(error, "code", None) if isinstance(error, SystemExit) else 1
    return code if isinstance(code, int) and code != 0 else 1


def log_stage(
    run,
    index: int,
    kind: str,
    stage_hash: str,
    train_log: list[dict],
    status: str,
    run_dir: Path | None = None,
    speed: dict | None = None,
) -> None:
    """Logs one stage's loss curve as `train/<index>_<kind>/*` against its own step axis (once per run_dir)."""
    if isinstance(run, DummyRun):
        return
    key = f"{index}:{stage_hash}"
    state = _state(run_dir) if run_dir else {}
    if key in state.get("logged_stages", []):
        return
    prefix = f"train/{index}_{kind}"
    run.define_metric(f"{prefix}/step")
    run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
    for row in train_log:
        values = {f"{prefix}/{k}": v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        run.log({f"{prefix}/step": row["step"], **values})
    run.summary[f"{prefix}/hash"] = stage_hash
    run.summary[f"{prefix}/status"] = status
    for k, v in (speed or {}).items():  # <stage>/speed.json: tokens/s, MFU, peak memory, seconds, budget, checkpointing
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            run.summary[f"{prefix}/speed/{k}"] = v
    if run_dir and state:
        write_json(Path(run_dir) / RUN_STATE, {**state, "logged_stages": [*state["logged_stages"], key]})


def log_eval(run, metrics: dict, tables: dict[str, list[dict]], step: int = 0) -> None:
    """Logs one evaluation point: every metric as `eval/<name>/...` (history against `eval/stage`, the number of
    stages the evaluated model has been through, and the summary), and each eval's samples as a table."""
    if isinstance(run, DummyRun):
        return
    import wandb

    flat = flatten({k: v for k, v in metrics.items() if k != "model"}, "eval")
    run.define_metric("eval/stage")
    run.define_metric("eval/*", step_metric="eval/stage")
    row = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for name, rows in tables.items():
        if rows:
            columns = sorted({k for r in rows for k in r})
            data = [
                [json.dumps(r.get(c)) if isinstance(r.get(c), (dict, list)) else r.get(c) for c in columns]
                for r in rows
            ]
            row[f"eval/{name}/samples"] = wandb.Table(columns=columns, data=data)
    run.log({"eval/stage": step, **row})
    run.summary.update(flat)  # the last evaluation point (the final model) is the run's summary


def read_offline_run(run_dir: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """Summary, history rows, config, id and run fields (name, group, job type, tags) of the offline W&B run
    under `run_dir`.

    A resumed run has one `run-<id>.wandb` file per attempt; they are read in order of start time (their
    folders' timestamps), later values winning. wandb's service process may still be writing the last file
    after `run.finish()` returns (or the process exits): wait up to `wait_s` for its exit record.
    """
    files = sorted(
        {os.path.realpath(f) for f in glob.glob(os.path.join(str(run_dir), "**", "run-*.wandb"), recursive=True)}
    )  # wandb/latest-run is a link
    ids = {Path(f).stem.removeprefix("run-") for f in files}
    if len(ids) != 1:
        raise FileNotFoundError(f"expected the files of one run (run-<id>.wandb) under {run_dir}, found {files}")
    files = sorted(files, key=lambda f: Path(f).parent.name)  # offline-run-<YYYYmmdd_HHMMSS>-<id>
    deadline = time.time() + wait_s
    while True:
        out: dict[str, Any] = {
            "summary": {},
            "history": [],
            "config": {},
            "run": {},
            "id": next(iter(ids)),
            "files": files,
        }
        exited = [_read_wandb_file(Path(f).read_bytes(), out) for f in files]
        if exited[-1] or time.time() > deadline:
            return out
        time.sleep(0.2)


def _read_wandb_file(data: bytes, out: dict) -> bool:
    """Adds one file's records to `out`; True if the file ends with the run's exit record."""
    exited = False
    for record in _records(data):
        which = record.WhichOneof("record_type")
        if which == "summary":
            for item in record.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                out["summary"][key] = json.loads(item.value_json)
        elif which == "history":
            out["history"].append(
                {
                    ("/".join(i.nested_key) if i.nested_key else i.key): json.loads(i.value_json)
                    for i in record.history.item
                }
            )
        if which == "run":
            r = record.run
            out["run"] = {"name": r.display_name, "group": r.run_group, "job_type": r.job_type, "tags": list(r.tags)}
        if which in ("run", "config"):
            items = record.run.config.update if which == "run" else record.config.update
            for item in items:
                out["config"][item.key] = json.loads(item.value_json)
        if which == "exit":
            out["exit_code"] = record.exit.exit_code
        exited = exited or which == "exit"
    return exited


def _records(data: bytes):
    """The protobuf records of a run-*.wandb file: a LevelDB-style log of 32 KiB blocks of records, each with a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last), after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb

    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):  # read while W&B's service still writes it: the records so far
            return
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        yield record
