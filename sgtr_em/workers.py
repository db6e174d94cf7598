"""Worker subprocesses: the Hydra parent starts one per step (data, train, merge, eval) and waits.

Each worker is `python -m <module> <folder>`, reads its inputs from that folder, and frees its memory when
it exits. The training worker may instead be started by `torchrun` or `accelerate launch` (one process per
GPU, several nodes): `launch_command` builds that line; `@hydra.main` is never wrapped. A worker dies with
its parent (Linux), so killing a job never leaves training behind.

Stopping: a signalled training worker (SIGTERM, SIGUSR2: preemption, requeue, timeout) saves a checkpoint
and writes `interrupted.json`; the parent then raises `Interrupted`, not an error (as for any worker ended
by SIGTERM, SIGINT or SIGUSR2), so a requeued Slurm job records no failure and the rerun resumes. A parent
that is itself stopped gives its worker `preempt_grace_s` to do that before killing it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

from .compute import cpu_threads, thread_env

log = logging.getLogger(__name__)

INTERRUPTED_MARKER = "interrupted.json"  # written by a worker that stopped on a signal after checkpointing
# A worker ended by one of these was stopped by a scheduler or a user (preemption, requeue, Ctrl-C), not by a bug.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class Interrupted(SystemExit):
    """The job was stopped from outside (preemption, requeue, timeout, Ctrl-C) after its worker saved what it had.

    Not an error of the job: rerunning it (or Slurm's requeue) resumes. A SystemExit, so submitit records no
    failed result for a job that Slurm is requeueing.
    """


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _raise_interrupted(signum, frame):
    raise Interrupted(f"stopped by {signal.Signals(signum).name}: rerun the job in its folder to resume it")


def stop_on_signals() -> None:
    """SIGTERM/SIGUSR2 (Slurm preemption or time limit, `kill`) stop the parent as Interrupted: its worker gets
    its grace period to checkpoint and the W&B run is marked preempted. Under submitit, which handles these
    signals itself (checkpoint and requeue), nothing changes."""
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_interrupted)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def launch_command(module: str, folder: Path, launch: dict | None = None) -> list[str]:
    """The command line that runs `module folder`: plain python, torchrun or accelerate launch.

    `launch`: launcher, nproc_per_node, nnodes, and for several nodes node_rank, master_addr, master_port.
    """
    launcher = (launch or {}).get("launcher", "python")
    if launcher == "python":
        return [sys.executable, "-m", module, str(folder)]
    nproc, nnodes = launch["nproc_per_node"], launch["nnodes"]
    if nnodes > 1:
        rank, addr, port = launch["node_rank"], launch["master_addr"], launch["master_port"]
    else:
        rank, addr, port = 0, "127.0.0.1", launch.get("master_port") or free_port()
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
        if nnodes == 1:
            cmd += ["--standalone"]  # a rendezvous on a free local port
        else:
            cmd += [f"--nnodes={nnodes}", f"--node-rank={rank}", f"--master-addr={addr}", f"--master-port={port}"]
    elif launcher == "accelerate":
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            f"--num_processes={nproc * nnodes}",
            f"--num_machines={nnodes}",
            f"--machine_rank={rank}",
            f"--main_process_ip={addr}",
            f"--main_process_port={port}",
            "--mixed_precision=no",
            "--dynamo_backend=no",
        ]
        cmd += ["--cpu"] if launch.get("device") == "cpu" else ["--multi_gpu"] if nproc * nnodes > 1 else []
    else:
        raise ValueError(f"compute.launcher: unknown launcher {launcher!r} (python | torchrun | accelerate)")
    return cmd + ["-m", module, str(folder)]


CPU_THREADS: list[int | None] = [None]  # compute.cpu_threads of the running job (set_cpu_threads)


def set_cpu_threads(configured: int | None) -> None:
    """The job's compute.cpu_threads, for every worker it starts (null: the cores it is given)."""
    CPU_THREADS[0] = configured


def worker_env(grace_s: int, launch: dict | None = None) -> dict:
    env = dict(os.environ)
    # threads from the cores the job is given, not the machine's: on a shared machine a job degrades to its share
    threads = (launch or {}).get("cpu_threads") or cpu_threads(CPU_THREADS[0])
    env.update(thread_env(threads))
    if launch and launch.get("launcher", "python") == "python" and launch.get("device") == "cuda":
        # One process on a GPU: show it one GPU (the first visible one), or the Trainer wraps the model in
        # nn.DataParallel, which TRL refuses and which is slow anyway; several GPUs are torchrun's or accelerate's.
        env["CUDA_VISIBLE_DEVICES"] = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    return {
        **env,
        "TOKENIZERS_PARALLELISM": "false",
        # torchrun forwards SIGUSR2 (Slurm's warning signal) as it does SIGTERM, and waits grace_s before killing
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(grace_s),
    }


def _stop(proc: subprocess.Popen, grace_s: int) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_worker(module: str, folder: Path, *, what: str, launch: dict | None = None, grace_s: int = 90) -> float:
    """Runs `module folder` (see launch_command); returns its wall time.

    Raises Interrupted if the worker stopped on a signal after saving a checkpoint, RuntimeError (with the
    log's path) if it failed.
    """
    start = time.time()
    cmd = launch_command(module, Path(folder), launch)
    marker = Path(folder) / INTERRUPTED_MARKER
    marker.unlink(missing_ok=True)
    log.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.Popen(
        cmd, env=worker_env(grace_s, launch), preexec_fn=die_with_parent if sys.platform.startswith("linux") else None
    )
    try:
        proc.wait()
    except BaseException:  # the parent is being stopped (Ctrl-C, submitit's requeue): let the worker checkpoint
        log.warning("%s: stopping the worker (it saves a checkpoint; up to %d s)", what, grace_s)
        _stop(proc, grace_s)
        raise
    if proc.returncode != 0:
        if marker.exists() or -proc.returncode in STOP_SIGNALS:
            raise Interrupted(
                f"{what} was stopped by a signal{' after saving a checkpoint' if marker.exists() else ''}"
                f": rerun the job (or let Slurm requeue it) to resume. Log: {Path(folder) / 'worker.log'}"
            )
        hint = " (SIGKILL: out of memory?)" if proc.returncode == -signal.SIGKILL else ""
        raise RuntimeError(f"{what} failed (exit code {proc.returncode}{hint}); see {Path(folder) / 'worker.log'}")
    return time.time() - start


def worker_logging(log_file: Path) -> None:
    """Worker logs go to stderr and are appended to `log_file` (rank 0 only, when there are several)."""
    # PEFT and TRL read `model.is_gradient_checkpointing` (transformers 5 renamed it; v6 drops it): their call, not
    # ours, once per model wrapped. Our own calls use the new names (sgtr_em/training/sft.py: activation_checkpointing).
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if int(os.environ.get("RANK", "0")) == 0:
        handlers.append(logging.FileHandler(log_file))
        # the traceback that ends a worker (CUDA out of memory, a bug) goes to the log the parent's error names too,
        # not only to stderr (a job's own log, elsewhere)
        sys.excepthook = _traceback_to(handlers[-1], sys.excepthook)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


def _traceback_to(handler: logging.Handler, previous):
    def hook(kind, value, tb):
        if not issubclass(kind, KeyboardInterrupt):
            handler.handle(
                logging.LogRecord(
                    "sgtr_em.workers", logging.CRITICAL, __file__, 0, "the worker failed:", None, (kind, value, tb)
                )
            )
        previous(kind, value, tb)

    return hook
