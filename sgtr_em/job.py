"""One job, end to end: check data, plan stages, train each one (or reuse it), evaluate, track.

Runs in the Hydra parent. Heavy work happens in worker subprocesses (sgtr_em/workers.py), one step at a
time; the parent holds no model. A stage folder is complete when its `done` marker exists (written last);
anything else is resumed step by step: data (`train.jsonl`), training (`adapter/`, from the last
checkpoint), merge (`merged/`). Rerunning a job in its folder (or Slurm requeueing it) continues its W&B
run. On several nodes, node 0 runs the job and the others only join its trainings (sgtr_em/multinode.py).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from filelock import FileLock
from omegaconf import OmegaConf

from . import multinode, tracking
from .compute import deepspeed_json, node_rank, resolve_compute
from .data.files import DataFiles
from .io import read_json, read_jsonl, write_json
from .models import resolve_model_path
from .plan import Stage, content_hash, final_model_identity, plan_stages
from .training.sft import read_train_log
from .workers import Interrupted, run_worker, stop_on_signals

log = logging.getLogger("sgtr_em")


def required_files(cfg, stages: list[Stage]) -> list[str]:
    """Every data file the job will read, so a missing one fails (or downloads) before any training."""
    files = []
    for st in stages:
        d = st.spec["data"]
        if d["type"] == "em":
            files.append(d["file"])
        else:
            files.append(f"articles/{d['articles']}_train_articles.json")
            files += [f"summaries/{d['articles']}/{d['articles']}_train_{s}_responses.json" for s in d["other_sources"]]
    sr = cfg.eval.self_recognition
    if sr.enabled:
        files += [f"articles/{sr.articles}_train_articles.json",
                  f"summaries/{sr.articles}/{sr.articles}_train_{sr.other_source}_responses.json"]
    if cfg.eval.em.enabled:
        files.append(cfg.eval.em.questions_file)
    return list(dict.fromkeys(files))


def stage_runtime(cfg, input_model: str) -> dict:
    """What a worker needs besides the stage's identity: where things are and how to run."""
    return {
        "input_model": input_model,
        "dtype": cfg.model.dtype,
        "compute": resolve_compute(cfg.compute, cfg.deepspeed, model_path=input_model, dtype=cfg.model.dtype,
                                   trust_remote_code=cfg.model.trust_remote_code),
        "chat_template_kwargs": OmegaConf.to_container(cfg.model.chat_template_kwargs, resolve=True),
        "data_dir": str(cfg.paths.data_dir),
        "cache_dir": str(cfg.paths.cache_dir),
        "batch_size": cfg.eval.batch_size,
        "training_extra": {k: cfg.training[k] for k in ("logging_steps", "save_steps", "save_total_limit")},
    }


def run_stage(cfg, stage: Stage, input_model: str) -> tuple[Path, str]:
    """Trains `stage` unless it is done already; returns (stage folder, 'trained' | 'reused')."""
    stages_dir = Path(cfg.paths.stages_dir)
    stages_dir.mkdir(parents=True, exist_ok=True)
    d = stages_dir / stage.hash
    lock = FileLock(str(stages_dir / f"{stage.hash}.lock"))
    if not (d / "done").exists():
        log.info("Stage %s (%s): waiting for its lock if another job trains it", stage.hash, stage.name)
    with lock:
        if (d / "done").exists():
            log.info("Stage %s (%s %s) is done already: reusing it", stage.hash, stage.kind, stage.name)
            return d, "reused"
        runtime = stage_runtime(cfg, input_model)
        write_json(d / "stage.json", {"spec": stage.spec, "runtime": runtime})
        start = time.time()
        if not (d / "train.jsonl").exists():
            run_worker("sgtr_em.data.build", d, what=f"stage {stage.hash} data")
        if not (d / "adapter").exists():
            train(cfg, d, runtime["compute"], what=f"stage {stage.hash} training")
        if not (d / "merged").exists():
            run_worker("sgtr_em.training.merge", d, what=f"stage {stage.hash} merge")
        write_json(d / "done", {"seconds": round(time.time() - start, 1), "finished": time.time()})
    return d, "trained"


def train(cfg, stage_dir: Path, compute: dict, *, what: str) -> None:
    """Runs the training worker as `compute` says: one process, or torchrun/accelerate over GPUs and nodes."""
    ds = compute["deepspeed"]
    if ds["stage"]:
        write_json(stage_dir / "deepspeed.json",
                   deepspeed_json(ds["stage"], ds["offload"], OmegaConf.to_container(cfg.deepspeed.overrides)))
        log.info("%s: DeepSpeed ZeRO-%d%s (%s)", what, ds["stage"], " + CPU offload" if ds["offload"] else "", ds["why"])
    else:
        (stage_dir / "deepspeed.json").unlink(missing_ok=True)
    launch = multinode.leader_launch(stage_dir, compute)
    try:
        run_worker("sgtr_em.training.sft", stage_dir, what=what, launch=launch, grace_s=compute["preempt_grace_s"])
    finally:
        multinode.retire_launch(stage_dir)


def run_job(cfg, run_dir: Path, group: str) -> dict | None:
    """Runs the job; on a node other than node 0 of a multi-node job, only joins its trainings (returns None)."""
    stop_on_signals()
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["compute"] = resolve_compute(cfg.compute)
    stages = plan_stages(cfg)
    several_nodes = resolved["compute"]["nnodes"] > 1
    if several_nodes and node_rank() > 0:
        multinode.follow([Path(cfg.paths.stages_dir) / st.hash for st in stages], run_dir, node_rank(),
                         grace_s=cfg.compute.preempt_grace_s)
        return None
    ok = False
    try:
        files = DataFiles.from_config(cfg)
        for rel in required_files(cfg, stages):
            files.path(rel)
        base_model = resolve_model_path(cfg.model, cfg.paths.cache_dir)
        metrics = lead_job(cfg, resolved, stages, base_model, run_dir, group)
        ok = True
        return metrics
    finally:
        if several_nodes:
            multinode.leader_done(run_dir, ok=ok)  # releases the other nodes, whatever happened


def lead_job(cfg, resolved: dict, stages: list[Stage], base_model: str, run_dir: Path, group: str) -> dict:
    run = tracking.start_run(cfg, resolved, run_dir, group)
    try:
        model_path, events = base_model, []
        for i, stage in enumerate(stages, 1):
            d, status = run_stage(cfg, stage, model_path)
            events.append({"index": i, "kind": stage.kind, "name": stage.name, "hash": stage.hash,
                           "status": status, "folder": str(d)})
            write_json(run_dir / "stages.json", events)
            tracking.log_stage(run, i, stage.kind, stage.hash, read_train_log(d / "train_log.jsonl"), status,
                               run_dir=run_dir)
            model_path = str(d / "merged")
        identity = final_model_identity(stages, cfg)
        write_json(run_dir / "eval_input.json", {
            "config": resolved, "model_path": model_path, "model_identity": identity,
            "model_key": content_hash(identity), "judge_model_path": cfg.judge.model or base_model,
        })
        run_worker("sgtr_em.evaluation.worker", run_dir, what="evaluation")
        metrics = read_json(run_dir / "metrics.json")
        tables = {path.parent.name: [r for _, r in read_jsonl(path)] for path in run_dir.glob("eval/*/samples.jsonl")}
        tracking.log_eval(run, metrics, tables)
    except Interrupted:
        run.mark_preempting()  # W&B shows it preempted (a sweep requeues it); the rerun continues this run
        raise
    finally:
        run.finish()
    return metrics
