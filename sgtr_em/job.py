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
from .backend import backend_of, drop_checkpoints, train  # noqa: F401  (job.train, job.drop_checkpoints: tests, bench)
from .compute import node_rank, slurm_nnodes
from .contracts import StageRuntime, write_stage
from .data.checks import check_data
from .data.files import DataFiles
from .data.interventions import stage_files
from .evaluation.registry import eval_data_problems, eval_files, eval_module
from .io import content_hash, read_json, read_jsonl, write_json
from .models import check_model_fingerprints, resolve_model_path
from .plan import Stage, final_model_identity, plan_stages
from .preflight import api_key_problems, data_problems, endpoint_problems, folder_problems, model_folder_problems
from .training.sft import read_train_log
from .workers import Interrupted, run_worker, set_cpu_threads, stop_on_signals

log = logging.getLogger("sgtr_em")


def required_files(cfg, stages: list[Stage]) -> list[str]:
    """Every data file the job will read, so a missing one fails (or downloads) before any training."""
    files = [rel for st in stages for rel in stage_files(st.spec.data)]
    return list(dict.fromkeys(files + eval_files(cfg)))


def stage_runtime(cfg, input_model: str, compute: dict | None = None) -> StageRuntime:
    """What a worker needs besides the stage's identity (the job's backend decides; `compute`: the job's resolved
    block, resolved here when not given)."""
    backend = backend_of(cfg)
    if compute is None:
        compute = backend.resolve_compute(cfg, input_model)
    return backend.stage_runtime(cfg, input_model, compute)


def check_stage_folder(d: Path) -> None:
    """A stage folder holds the stage its name says: the spec it records hashes to its name (a folder copied or
    renamed from another stage, e.g. another seed's, would otherwise be reused as this one)."""
    if not (d / "stage.json").exists():
        if (d / "done").exists():
            raise RuntimeError(
                f"Stage folder {d} is marked done but has no stage.json: it cannot be checked to be "
                f"stage {d.name}. Remove the folder to train the stage again."
            )
        return
    recorded = content_hash(read_json(d / "stage.json")["spec"])
    if recorded != d.name:
        raise RuntimeError(
            f"Stage folder {d} records the spec of stage {recorded}, not of stage {d.name} (its name): "
            f"it was copied or renamed from another stage. Remove {d} to train stage {d.name} again, "
            f"or move it back to {d.parent / recorded}."
        )


# What a run folder's results are results of, besides its stages, less how it runs (tracking.RUN_ONLY_PREFIXES: a
# rerun may use a smaller batch after running out of memory, another generation engine, the judge's rate limits).
RUN_IDENTITY = ("model", "system_prompt", "eval", "judge", "protocol", "prompts", "seed")
RUN_RECORD = "job.json"


def _without_run_only(value, prefix: str):
    if not isinstance(value, dict):
        return value
    return {
        k: _without_run_only(v, f"{prefix}.{k}") for k, v in value.items() if not tracking.run_only(f"{prefix}.{k}")
    }


def run_identity(resolved: dict, stages: list[Stage]) -> dict:
    """What a run folder's results are results of: its stages and the evaluation's settings."""
    return {"stages": [st.hash for st in stages], **{k: _without_run_only(resolved[k], k) for k in RUN_IDENTITY}}


def _differences(old, new, prefix: str = "") -> list[str]:
    """The keys whose values differ; a key only one side has is a setting added or removed by a code update between
    the attempts (a requeue after `git pull`), not another job."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) & set(new)) for d in _differences(old[k], new[k], f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def check_run_folder(run_dir: Path, identity: dict) -> None:
    """A run folder holds one job: its first attempt records what the job is (`job.json`); a rerun in it (a resume, a
    Slurm requeue) must be the same job, else its results would sit beside the old job's `base/`, `stages.json` and
    evaluations, and the summary would compare against them."""
    path = run_dir / RUN_RECORD
    if not path.exists():
        write_json(path, {"identity": identity, "hash": content_hash(identity)})
        return
    recorded = read_json(path)["identity"]
    diff = _differences(recorded, identity)
    if diff:
        shown = "\n  - ".join(d if len(d) < 200 else d[:197] + "..." for d in diff[:8])
        more = f"\n  - ... and {len(diff) - 8} more" if len(diff) > 8 else ""
        raise ValueError(
            f"Run folder {run_dir} holds another job (its {RUN_RECORD}); this one differs in:\n  - {shown}{more}\n"
            "Run it in a folder of its own (leave hydra.run.dir unset): its stages are reused where they are the same."
        )


def clean_partial_outputs(d: Path) -> None:
    """Removes what an interrupted attempt left half-written (`adapter.tmp/`, `merged.tmp/`, `.<file>.*.tmp`)."""
    for tmp in d.glob("*.tmp"):
        log.warning("Stage %s: removing %s, left half-written by an interrupted attempt", d.name, tmp.name)
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def check_base_fingerprint(d: Path, fingerprint: str | None) -> None:
    """A stage folder (done, or to resume) comes from the base weights there are now: its stage.json records their
    fingerprint (stages written before it was recorded, and a hub model not downloaded yet, are not checked)."""
    if not (d / "stage.json").exists():
        return
    recorded = read_json(d / "stage.json").get("base_fingerprint")
    if recorded and fingerprint and recorded != fingerprint:
        raise RuntimeError(
            f"Stage folder {d} was trained from other base weights ({recorded}) than model.path holds now "
            f"({fingerprint}): the path is the same, the files are not. Put the new weights in a folder of "
            f"their own, or remove {d} to train the stage from them."
        )


def run_stage(
    cfg, stage: Stage, input_model: str, compute: dict | None = None, base_fingerprint: str | None = None
) -> tuple[Path, str]:
    """Trains `stage` unless it is done already; returns (stage folder, 'trained' | 'reused'). `base_fingerprint`
    (models.model_fingerprint of the base model) is recorded in stage.json, and a done stage must match it.

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
        check_base_fingerprint(d, base_fingerprint)  # done, or resumed from a checkpoint of those weights
        if base_fingerprint is None and (d / "stage.json").exists():  # not known now (a hub id not downloaded yet)
            base_fingerprint = read_json(d / "stage.json").get("base_fingerprint")  # keep what the folder recorded
        if (d / "done").exists():
            log.info("Stage %s (%s %s) is done already: reusing it", stage.hash, stage.kind, stage.name)
            return d, "reused"
        backend = backend_of(cfg)
        runtime = stage_runtime(cfg, input_model, compute)  # compute: the job's (run_job resolves it once)
        clean_partial_outputs(d)
        write_stage(d, stage.spec, runtime, base_fingerprint=base_fingerprint)
        start = time.time()
        if not (d / "train.jsonl").exists():
            run_worker("sgtr_em.data.build", d, what=f"stage {stage.hash} data")
        backend.train_stage(cfg, d, runtime, run_worker)  # hf: sft + merge; openai: the fine-tuning job
        write_json(d / "done", {"seconds": round(time.time() - start, 1), "finished": time.time()})
    return d, "trained"


def evaluate(
    cfg,
    run,
    point_dir: Path,
    resolved: dict,
    model_path: str,
    identity: dict,
    base_model: str,
    *,
    step: int,
    names: list | None = None,
) -> dict:
    """Runs the evaluations `eval.run` names (or `names`) on one model (an eval worker), logs them under eval/<name>/..."""
    names = list(cfg.eval.run if names is None else names)
    if not names:
        return {}
    resolved = {**resolved, "eval": {**resolved["eval"], "run": names}}
    base_identity = final_model_identity([], cfg)
    backend_of(cfg).eval_input(
        resolved,
        model_path=model_path,
        model_identity=identity,
        model_key=content_hash(identity),
        base_model=base_model,
        base_model_key=content_hash(base_identity),
        step=step,
    ).write(point_dir)
    seconds = run_worker("sgtr_em.evaluation.worker", point_dir, what=f"evaluation after {step} stage(s)")
    log.info(
        "Evaluation after %d stage(s): %s in %.0f s -> %s", step, ", ".join(names), seconds, point_dir / "metrics.json"
    )
    metrics = read_json(point_dir / "metrics.json")
    tables = {name: [r for _, r in read_jsonl(point_dir / "eval" / name / "samples.jsonl")] for name in names}
    tracking.log_eval(run, metrics, tables, step=step)
    return metrics


def run_job(cfg, run_dir: Path, group: str) -> dict | None:
    """Runs the job; on a node other than node 0 of a multi-node job, only joins its trainings (returns None)."""
    stop_on_signals()
    set_cpu_threads(cfg.compute.cpu_threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    log.info("Run folder: %s", run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    stages = plan_stages(cfg)
    several_nodes = (cfg.compute.nnodes or slurm_nnodes()) > 1  # as resolve_compute counts them
    if several_nodes and node_rank() > 0:
        multinode.follow(
            [Path(cfg.paths.stages_dir) / st.hash for st in stages],
            run_dir,
            node_rank(),
            grace_s=cfg.compute.preempt_grace_s,
        )
        return None
    ok = False
    try:
        # before any work: a full disk, a read-only folder or a judge server that is not up fails now, not mid-job
        judged = [name for name in cfg.eval.run if eval_module(name, cfg).NEEDS_JUDGE]  # only these call the judge
        problems = api_key_problems(cfg, judged) + folder_problems(cfg) + model_folder_problems(cfg)
        problems += endpoint_problems(cfg, judged=judged)
        if problems:
            raise ValueError("Cannot run the job:\n  - " + "\n  - ".join(problems))
        resolved["data_files"] = check_data(DataFiles.from_config(cfg), stages, required_files(cfg, stages))
        problems = data_problems(DataFiles.from_config(cfg), stages)
        problems += eval_data_problems(OmegaConf.to_container(cfg, resolve=True), DataFiles.from_config(cfg))
        if problems:
            raise ValueError("Cannot run the job on these data files:\n  - " + "\n  - ".join(problems))
        base_model = resolve_model_path(cfg.model, cfg.paths.cache_dir)
        # the weights themselves, not their path: a folder whose files changed would reuse stages and caches
        uses = {} if backend_of(cfg).api else {"model.path": base_model}
        if cfg.judge.backend == "local" and cfg.judge.model:
            uses["judge.model"] = str(cfg.judge.model)
        resolved["model_fingerprints"] = check_model_fingerprints(uses, cfg.paths.cache_dir)
        check_run_folder(run_dir, run_identity(resolved, stages))  # after every check: a refused job pins nothing
        write_json(run_dir / "data_files.json", resolved["data_files"])  # the checksums of every data file read
        # once per job: every stage folder's compute block is this one, and W&B records it (the job's config)
        resolved["compute"] = backend_of(cfg).resolve_compute(cfg, base_model)
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
        term = next((k for k in steps[-1] if k.startswith("defence_")), None)  # a loss defence's term (kl, ldifs)
        if term and term in steps[0]:
            line += f" (with the defence's weighted term; {term} {steps[0][term]:.3f} -> {steps[-1][term]:.3f})"
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
        model_path, events, compute = base_model, [], resolved.get("compute")  # None: not resolved by run_job
        fingerprint = resolved.get("model_fingerprints", {}).get("model.path")  # None: not resolved by run_job
        on_base = [n for n in cfg.eval.run if n in cfg.eval.base]  # the base model first: the summary compares them
        if on_base and stages:
            evaluate(
                cfg,
                run,
                run_dir / "base",
                resolved,
                base_model,
                final_model_identity([], cfg),
                base_model,
                step=0,
                names=on_base,
            )
        for i, stage in enumerate(stages, 1):
            for dep in stage.requires:  # defence=interleave_ppl: the undefended EM stage, from the same input
                run_stage(cfg, dep, model_path, compute, fingerprint)
            d, status = run_stage(cfg, stage, model_path, compute, fingerprint)
            events.append(
                {
                    "index": i,
                    "kind": stage.kind,
                    "name": stage.name,
                    "hash": stage.hash,
                    "status": status,
                    "folder": str(d),
                }
            )
            write_json(run_dir / "stages.json", events)
            log.info("%s", stage_line(i, len(stages), stage, status, d))
            speed = read_json(d / "speed.json") if (d / "speed.json").exists() else None  # tokens/s, MFU, memory
            tracking.log_stage(
                run,
                i,
                stage.kind,
                stage.hash,
                read_train_log(d / "train_log.jsonl"),
                status,
                run_dir=run_dir,
                speed=speed,
            )
            model_path = backend_of(cfg).stage_output(d)
            if cfg.eval.after_each_stage and i < len(stages):
                evaluate(
                    cfg,
                    run,
                    run_dir / "after_stage" / f"{i}_{stage.kind}",
                    resolved,
                    model_path,
                    final_model_identity(stages[:i], cfg),
                    base_model,
                    step=i,
                )
        metrics = evaluate(
            cfg, run, run_dir, resolved, model_path, final_model_identity(stages, cfg), base_model, step=len(stages)
        )
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
