"""One job, end to end: check data, plan stages, train each one (or reuse it), evaluate, track.

Runs in the Hydra parent. Heavy work happens in worker subprocesses (sgtr_em/workers.py), one step at a
time; the parent holds no model. A stage folder is complete when its `done` marker exists (written last);
anything else is resumed step by step: data (`train.jsonl`), training (`adapter/`, from the last
checkpoint), merge (`merged/`). Rerunning a job in its folder (or Slurm requeueing it) continues its W&B
run. On several nodes, node 0 runs the job and the others only join its trainings (sgtr_em/multinode.py).
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from filelock import FileLock, Timeout
from omegaconf import OmegaConf

from . import multinode, tracking
from .compute import deepspeed_json, node_rank, resolve_compute
from .data.checks import check_data
from .data.files import DataFiles
from .data.interventions import stage_files
from .evaluation.registry import EVALS
from .inference.api import api_model_eval, openai_api
from .io import read_json, read_jsonl, write_json
from .models import resolve_model_path
from .plan import Stage, content_hash, final_model_identity, plan_stages, training_template_kwargs
from .preflight import api_key_problems, data_problems, endpoint_problems, folder_problems
from .training.openai_ft import fine_tuned_model
from .training.sft import read_train_log
from .workers import Interrupted, run_worker, set_cpu_threads, stop_on_signals

log = logging.getLogger("sgtr_em")


def required_files(cfg, stages: list[Stage]) -> list[str]:
    """Every data file the job will read, so a missing one fails (or downloads) before any training."""
    files = [rel for st in stages for rel in stage_files(st.spec["data"])]
    return list(dict.fromkeys(files + eval_files(cfg)))


def eval_files(cfg) -> list[str]:
    """The data files the evaluations in `eval.run` read (MMLU is a folder: checked by its evaluation)."""
    ev, files = cfg.eval, []
    if "self_recognition" in ev.run:
        sr = ev.self_recognition
        sources = list(sr.other_sources) + ([] if sr.summaries in ("self", "base") else [sr.summaries])
        files += [f"articles/{sr.articles}_train_articles.json"]
        files += [f"summaries/{sr.articles}/{sr.articles}_train_{s}_responses.json" for s in sources]
    if "em" in ev.run:
        files += [ev.em.sets[s].file for s in ev.em.question_sets]
    if "truthfulqa" in ev.run:
        files.append(ev.truthfulqa.file)
    return files


def stage_runtime(cfg, input_model: str) -> dict:
    """What a worker needs besides the stage's identity: where things are and how to run."""
    return {
        "input_model": input_model,
        "model": OmegaConf.to_container(cfg.model, resolve=True),  # the base model (self_summaries=base_model)
        "dtype": cfg.model.dtype,
        "compute": resolve_compute(cfg.compute, cfg.deepspeed, model_path=input_model, dtype=cfg.model.dtype,
                                   trust_remote_code=cfg.model.trust_remote_code),
        "chat_template_kwargs": training_template_kwargs(cfg),  # how training text renders (model config)
        "data_dir": str(cfg.paths.data_dir),
        "cache_dir": str(cfg.paths.cache_dir),
        "batch_size": cfg.eval.batch_size,
        "training_extra": {k: cfg.training[k] for k in ("logging_steps", "save_steps", "save_total_limit")},
    }


def api_stage_runtime(cfg, input_model: str) -> dict:
    """What the workers of an API model's stage need (model.backend=openai): no compute, the API's settings (the
    name of the key's environment variable, never the key)."""
    o = OmegaConf.to_container(cfg.openai, resolve=True)
    return {"input_model": input_model, "model": OmegaConf.to_container(cfg.model, resolve=True), "openai": o,
            "api": openai_api(o), "data_dir": str(cfg.paths.data_dir), "cache_dir": str(cfg.paths.cache_dir)}


def stage_output(cfg, stage_dir: Path) -> str:
    """The model a finished stage produced, the next stage's input: its merged folder, or its `ft:` model id."""
    if cfg.model.backend == "openai":
        return fine_tuned_model(stage_dir)
    return str(stage_dir / "merged")


def check_stage_folder(d: Path) -> None:
    """A stage folder holds the stage its name says: the spec it records hashes to its name (a folder copied or
    renamed from another stage, e.g. another seed's, would otherwise be reused as this one)."""
    if not (d / "stage.json").exists():
        if (d / "done").exists():
            raise RuntimeError(f"Stage folder {d} is marked done but has no stage.json: it cannot be checked to be "
                               f"stage {d.name}. Remove the folder to train the stage again.")
        return
    recorded = content_hash(read_json(d / "stage.json")["spec"])
    if recorded != d.name:
        raise RuntimeError(f"Stage folder {d} records the spec of stage {recorded}, not of stage {d.name} (its name): "
                           f"it was copied or renamed from another stage. Remove {d} to train stage {d.name} again, "
                           f"or move it back to {d.parent / recorded}.")


def clean_partial_outputs(d: Path) -> None:
    """Removes what an interrupted attempt left half-written (`adapter.tmp/`, `merged.tmp/`, `.<file>.*.tmp`)."""
    for tmp in d.glob("*.tmp"):
        log.warning("Stage %s: removing %s, left half-written by an interrupted attempt", d.name, tmp.name)
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def run_stage(cfg, stage: Stage, input_model: str) -> tuple[Path, str]:
    """Trains `stage` unless it is done already; returns (stage folder, 'trained' | 'reused').

    An API model's stage (model.backend=openai) builds its data the same way, then trains as a fine-tuning job
    (sgtr_em/training/openai_ft.py), which resumes the job it started rather than paying for another."""
    stages_dir = Path(cfg.paths.stages_dir)
    stages_dir.mkdir(parents=True, exist_ok=True)
    d = stages_dir / stage.hash
    lock = FileLock(str(stages_dir / f"{stage.hash}.lock"))
    try:
        held = lock.acquire(timeout=0)
    except Timeout:  # said only when something does wait
        log.info("Stage %s (%s): another job is training it; waiting for its lock", stage.hash, stage.name)
        held = lock.acquire()
    with held:  # released on leaving the block
        check_stage_folder(d)
        if (d / "done").exists():
            log.info("Stage %s (%s %s) is done already: reusing it", stage.hash, stage.kind, stage.name)
            return d, "reused"
        api = cfg.model.backend == "openai"
        runtime = api_stage_runtime(cfg, input_model) if api else stage_runtime(cfg, input_model)
        clean_partial_outputs(d)
        write_json(d / "stage.json", {"spec": stage.spec, "runtime": runtime})
        start = time.time()
        if not (d / "train.jsonl").exists():
            run_worker("sgtr_em.data.build", d, what=f"stage {stage.hash} data")
        if api:
            run_worker("sgtr_em.training.openai_ft", d, what=f"stage {stage.hash} fine-tuning job")
        elif not (d / "adapter").exists():
            train(cfg, d, runtime["compute"], what=f"stage {stage.hash} training")
        if not api and not (d / "merged").exists():
            run_worker("sgtr_em.training.merge", d, what=f"stage {stage.hash} merge")
        if not api and not cfg.training.keep_checkpoints:
            drop_checkpoints(d)
        write_json(d / "done", {"seconds": round(time.time() - start, 1), "finished": time.time()})
    return d, "trained"


def drop_checkpoints(stage_dir: Path) -> None:
    """training.keep_checkpoints=false: a finished stage's checkpoints/ (resume points; optimizer states, most of a
    stage's disk) are deleted, once its adapter and merged weights are there and their safetensors files read whole."""
    from safetensors import safe_open

    ckpt = stage_dir / "checkpoints"
    if not ckpt.exists():
        return
    for folder in ("adapter", "merged"):
        weights = sorted((stage_dir / folder).glob("*.safetensors"))
        if not weights:
            raise RuntimeError(f"stage {stage_dir.name}: {folder}/ has no weights; its checkpoints/ are kept")
        for w in weights:
            try:
                with safe_open(str(w), framework="pt") as f:  # a truncated file fails here (header vs file size)
                    f.keys()
            except Exception as e:
                raise RuntimeError(f"stage {stage_dir.name}: {w} is unreadable ({e}); its checkpoints/ are kept: delete "
                                   f"{stage_dir / folder} and rerun the job to redo that step") from e
    shutil.rmtree(ckpt)
    log.info("Stage %s: checkpoints/ deleted (training.keep_checkpoints=false)", stage_dir.name)


def evaluate(cfg, run, point_dir: Path, resolved: dict, model_path: str, identity: dict, base_model: str, *,
             step: int) -> dict:
    """Runs the evaluations `eval.run` names on one model (an eval worker), logs them under eval/<name>/..."""
    if not cfg.eval.run:
        return {}
    base_identity = final_model_identity([], cfg)
    if cfg.model.backend == "openai":  # every evaluation through the API (and a default judge too)
        resolved = api_model_eval(resolved)
    judge = resolved["judge"]
    write_json(point_dir / "eval_input.json", {
        "config": resolved, "model_path": model_path, "model_identity": identity, "model_key": content_hash(identity),
        "base_model_path": base_model, "base_model_key": content_hash(base_identity),
        "judge_model_path": judge["model"] or base_model, "after_stages": step,
    })
    seconds = run_worker("sgtr_em.evaluation.worker", point_dir, what=f"evaluation after {step} stage(s)")
    log.info("Evaluation after %d stage(s): %s in %.0f s -> %s", step, ", ".join(cfg.eval.run), seconds,
             point_dir / "metrics.json")
    metrics = read_json(point_dir / "metrics.json")
    tables = {name: [r for _, r in read_jsonl(point_dir / "eval" / name / "samples.jsonl")] for name in cfg.eval.run}
    tracking.log_eval(run, metrics, tables, step=step)
    return metrics


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
    set_cpu_threads(cfg.compute.cpu_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("Run folder: %s", run_dir)
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
        # before any work: a full disk, a read-only folder or a judge server that is not up fails now, not mid-job
        judged = [name for name in cfg.eval.run if EVALS[name].NEEDS_JUDGE]  # only these call the judge
        problems = api_key_problems(cfg, judged) + folder_problems(cfg) + endpoint_problems(cfg, judged=judged)
        if problems:
            raise ValueError("Cannot run the job:\n  - " + "\n  - ".join(problems))
        resolved["data_files"] = check_data(DataFiles.from_config(cfg), stages, required_files(cfg, stages))
        write_json(run_dir / "data_files.json", resolved["data_files"])  # the checksums of every data file read
        problems = data_problems(DataFiles.from_config(cfg), stages)
        if problems:
            raise ValueError("Cannot build the training data:\n  - " + "\n  - ".join(problems))
        base_model = resolve_model_path(cfg.model, cfg.paths.cache_dir)
        metrics = lead_job(cfg, resolved, stages, base_model, run_dir, group)
        ok = True
        return metrics
    finally:
        if several_nodes:
            multinode.leader_done(run_dir, ok=ok)  # releases the other nodes, whatever happened


def stage_line(i: int, n: int, stage: Stage, status: str, stage_dir: Path) -> str:
    """One console line per stage: what it is, trained or reused, its steps, loss and first step's learning rate."""
    line = f"Stage {i}/{n} {stage.kind} ({stage.name}) {stage.hash}: {status}"
    if status == "trained" and (stage_dir / "done").exists():
        line += f" in {read_json(stage_dir / 'done')['seconds']:.0f} s"
    steps = [r for r in read_train_log(stage_dir / "train_log.jsonl") if "loss" in r]
    if steps:
        line += f"; {steps[-1]['step']} steps, loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}"
        if steps[0].get("learning_rate") is not None:  # the rate step 1 was taken with (0 under a linear warm-up)
            line += f", first step at learning rate {steps[0]['learning_rate']:.3g}"
    return line


def wandb_line(run) -> str:
    if isinstance(run, tracking.DummyRun):
        return "W&B: off (tracking=none)"
    if getattr(run, "url", None):
        return f"W&B run {run.name} (id {run.id}): {run.url}"
    offline = Path(run.dir).parent if run.dir else None
    return f"W&B run {run.name} (id {run.id}), offline: `wandb sync {offline}` uploads it"


def lead_job(cfg, resolved: dict, stages: list[Stage], base_model: str, run_dir: Path, group: str) -> dict:
    run = tracking.start_run(cfg, resolved, run_dir, group)
    exit_code = None
    log.info("%s", wandb_line(run))
    try:
        model_path, events = base_model, []
        for i, stage in enumerate(stages, 1):
            for dep in stage.requires:  # defence=interleave_ppl: the undefended EM stage, from the same input
                run_stage(cfg, dep, model_path)
            d, status = run_stage(cfg, stage, model_path)
            events.append({"index": i, "kind": stage.kind, "name": stage.name, "hash": stage.hash,
                           "status": status, "folder": str(d)})
            write_json(run_dir / "stages.json", events)
            log.info("%s", stage_line(i, len(stages), stage, status, d))
            speed = read_json(d / "speed.json") if (d / "speed.json").exists() else None  # tokens/s, MFU, memory
            tracking.log_stage(run, i, stage.kind, stage.hash, read_train_log(d / "train_log.jsonl"), status,
                               run_dir=run_dir, speed=speed)
            model_path = stage_output(cfg, d)
            if cfg.eval.after_each_stage and i < len(stages):
                evaluate(cfg, run, run_dir / "after_stage" / f"{i}_{stage.kind}", resolved, model_path,
                         final_model_identity(stages[:i], cfg), base_model, step=i)
        metrics = evaluate(cfg, run, run_dir, resolved, model_path, final_model_identity(stages, cfg), base_model,
                           step=len(stages))
        if not cfg.eval.run:
            write_json(run_dir / "metrics.json", metrics)  # every finished job has one (empty: nothing evaluated)
    except (Interrupted, KeyboardInterrupt):  # stopped from outside (a scheduler, Ctrl-C), not failed
        run.mark_preempting()  # W&B shows it preempted (a sweep requeues it); the rerun continues this run
        raise
    except BaseException as e:  # W&B shows the run failed, with the error (a SystemExit from a scheduler too)
        exit_code = tracking.record_failure(run, e)
        raise
    finally:
        run.finish(exit_code=exit_code)
    return metrics
