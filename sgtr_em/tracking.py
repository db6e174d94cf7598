"""Weights & Biases: one run per job, offline by default (no account needed), online when asked.

The run's top-level config holds the group choices (model, em_dataset, intervention, stage_order,
system_prompt, seed) so the default W&B view compares conditions; the full resolved config sits under
`cfg`. When tracking is off, a DummyRun takes the calls, so the pipeline never branches on it.
The API key is read by wandb from WANDB_API_KEY and never enters the config.
"""
from __future__ import annotations

import glob
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

GROUP_KEYS = ("model", "em_dataset", "intervention", "stage_order", "system_prompt")


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


def run_name(cfg) -> str:
    return "-".join([*(str(cfg[k].name) for k in GROUP_KEYS), f"s{cfg.seed}"])


def start_run(cfg, resolved: dict, run_dir: Path, group: str):
    t = cfg.tracking
    if t.backend == "none":
        return DummyRun()
    import wandb

    config = {k: str(cfg[k].name) for k in GROUP_KEYS}
    config.update(seed=cfg.seed, cfg=resolved)
    return wandb.init(project=t.project, entity=t.entity, group=t.group or group, name=run_name(cfg),
                      tags=list(t.tags), config=config, dir=str(run_dir), mode=t.mode,
                      settings=wandb.Settings(silent=True, console="off"))


def log_stage(run, index: int, kind: str, stage_hash: str, train_log: list[dict], status: str) -> None:
    """Logs one stage's loss curve as `train/<index>_<kind>/*` against its own step axis."""
    if isinstance(run, DummyRun):
        return
    prefix = f"train/{index}_{kind}"
    run.define_metric(f"{prefix}/step")
    run.define_metric(f"{prefix}/*", step_metric=f"{prefix}/step")
    for row in train_log:
        values = {f"{prefix}/{k}": v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        run.log({f"{prefix}/step": row["step"], **values})
    run.summary[f"{prefix}/hash"] = stage_hash
    run.summary[f"{prefix}/status"] = status


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
            data = [[json.dumps(r.get(c)) if isinstance(r.get(c), (dict, list)) else r.get(c) for c in columns]
                    for r in rows]
            row[f"eval/{name}/samples"] = wandb.Table(columns=columns, data=data)
    run.log({"eval/stage": step, **row})
    run.summary.update(flat)  # the last evaluation point (the final model) is the run's summary


def _records(data: bytes, pb):
    """The protobuf records of a run-*.wandb file: a LevelDB-style log of 32 KiB blocks of records, each with a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last), after a 7-byte file header."""
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind not in (1, 4):
            continue
        record = pb.Record()
        record.ParseFromString(buf)
        buf = b""
        yield record


def read_offline_run(run_dir: str | Path, wait_s: float = 30.0) -> dict[str, Any]:
    """Summary, history rows and config of the offline W&B run under `run_dir` (its `run-<id>.wandb` file).

    wandb's service process may still be writing the file after `run.finish()` returns (or the process exits):
    wait up to `wait_s` for its exit record.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted({os.path.realpath(f) for f in glob.glob(os.path.join(str(run_dir), "**", "run-*.wandb"),
                                                            recursive=True)})  # wandb/latest-run is a link
    if len(files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb under {run_dir}, found {files}")
    deadline = time.time() + wait_s
    while True:
        records = list(_records(Path(files[0]).read_bytes(), pb))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.time() > deadline:
            break
        time.sleep(0.2)
    summary: dict = {}
    history: list[dict] = []
    config: dict = {}
    for record in records:
        which = record.WhichOneof("record_type")
        if which == "summary":
            for item in record.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                summary[key] = json.loads(item.value_json)
        elif which == "history":
            history.append({("/".join(i.nested_key) if i.nested_key else i.key): json.loads(i.value_json)
                            for i in record.history.item})
        elif which in ("run", "config"):
            items = record.run.config.update if which == "run" else record.config.update
            for item in items:
                config[item.key] = json.loads(item.value_json)
    return {"summary": summary, "history": history, "config": config}
