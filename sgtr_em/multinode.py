"""One job on several nodes of a Slurm allocation: node 0 leads, the other nodes join each training.

hydra-submitit-launcher with `nodes: N, tasks_per_node: 1` runs the same Hydra job on every node. Node 0
(SLURM_NODEID 0) runs it as usual; before each training it writes `<stage>/launch.json`: the torchrun
rendezvous (its own address, a free port) under a session id tied to this Slurm job and attempt. Every other
node plans the same stages and, for each stage not yet done, waits for that file and runs the same torchrun
line with its own node rank. Followers never build data, merge, evaluate or log to W&B. When node 0 stops
(finished or failed) it writes `<run_dir>/leader_done.json`, which releases them. Stage and run folders
must be on a filesystem every node sees, as Slurm clusters have.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

from .io import read_json, write_json
from .workers import free_port, run_worker

log = logging.getLogger("sgtr_em")

LAUNCH_FILE = "launch.json"
LEADER_DONE = "leader_done.json"


def attempt() -> str:
    """This Slurm job and attempt (a requeued job is a new attempt): a follower never joins a stale session."""
    return f"{os.environ.get('SLURM_JOB_ID', 'local')}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def leader_launch(stage_dir: Path, compute: dict) -> dict:
    """Node 0: the launch of this stage's training, published for the other nodes."""
    launch = {
        "launcher": compute["launcher"],
        "device": compute["device"],
        "nproc_per_node": compute["nproc_per_node"],
        "nnodes": compute["nnodes"],
        "node_rank": 0,
        "attempt": attempt(),
        "session": uuid.uuid4().hex,
        "master_addr": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
        "master_port": free_port(),
        "cpu_threads": compute["cpu_threads"],
    }
    if compute["nnodes"] > 1:
        write_json(stage_dir / LAUNCH_FILE, launch)
    return launch


def retire_launch(stage_dir: Path) -> None:
    (stage_dir / LAUNCH_FILE).unlink(missing_ok=True)


def follow(stage_dirs: list[Path], run_dir: Path, node_rank: int, grace_s: int, poll_s: float = 1.0) -> None:
    """Nodes 1..N-1: join every training node 0 launches, until each stage is done or node 0 stops."""
    joined: set[str] = set()
    for d in stage_dirs:
        while not (d / "done").exists():
            if (run_dir / LEADER_DONE).exists() and read_json(run_dir / LEADER_DONE)["attempt"] == attempt():
                log.info("Node %d: node 0 has stopped; so does this node", node_rank)
                return
            launch = read_json(d / LAUNCH_FILE) if (d / LAUNCH_FILE).exists() else None
            if launch and launch["attempt"] == attempt() and launch["session"] not in joined:
                joined.add(launch["session"])
                log.info("Node %d joins the training of %s (session %s)", node_rank, d.name, launch["session"])
                run_worker(
                    "sgtr_em.training.sft",
                    d,
                    what=f"stage {d.name} training (node {node_rank})",
                    launch={**launch, "node_rank": node_rank},
                    grace_s=grace_s,
                )
                continue
            time.sleep(poll_s)
    log.info("Node %d: every stage is done", node_rank)


def leader_done(run_dir: Path, ok: bool) -> None:
    write_json(run_dir / LEADER_DONE, {"ok": ok, "attempt": attempt(), "time": time.time()})
