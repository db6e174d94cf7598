"""A real single-node Slurm cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) in a temporary folder.

Debian's packages are installed before the test session when missing (`tests/prereqs.py`); every daemon runs in the foreground
as a child of the test session, on free ports, and is stopped by its PID. The settings are those of
`LOCAL_SLURM.md` in the project's shared notes (accounting through slurmdbd, so submitit sees job states;
fast requeue: KillWait=5, cred_expire=10, short scheduler intervals).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check, timeout: float, logs: list[Path]) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.3)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs if p.exists())
    raise RuntimeError(f"local Slurm: {what} not ready after {timeout:.0f} s\n{tails}")


class LocalSlurm:
    def __init__(self, root: Path):
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "etc" / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.mysql_socket = root / "mysql" / "mysqld.sock"
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]),
        }

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> LocalSlurm:
        for sub in ("etc", "munge", "mysql", "mysql/data", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o755)  # munged refuses a socket folder others cannot enter
        self._start_munge()
        self._start_mariadb()
        ports = {"ctld": _free_port(), "d": _free_port(), "dbd": _free_port()}
        self._write_configs(ports)
        self._spawn("slurmdbd", ["slurmdbd", "-D"], env={**self.env, "MYSQL_UNIX_PORT": str(self.mysql_socket)})
        _wait("slurmdbd", lambda: self._port_open(ports["dbd"]), 60, [self.log("slurmdbd")])
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        _wait("slurmctld", lambda: self._run(["scontrol", "ping"]).returncode == 0, 60, [self.log("slurmctld")])
        self._spawn("slurmd", ["slurmd", "-D"])
        _wait(
            "the node",
            lambda: "idle" in self._run(["sinfo", "-h", "-o", "%T"]).stdout,
            90,
            [self.log("slurmctld"), self.log("slurmd")],
        )
        return self

    def stop(self) -> None:
        if self.procs:  # cancel what still runs (a failed test's jobs): slurmstepd outlives slurmd otherwise
            self._run(["scancel", f"--user={os.getuid()}"])  # KillWait=5: SIGKILL 5 s after SIGTERM
            deadline = time.time() + 30
            while time.time() < deadline and self._run(["squeue", "-h"]).stdout.strip():
                time.sleep(0.5)
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()

    # -- helpers ------------------------------------------------------------------------------------------
    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, **kw)

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None) -> None:
        out = open(self.log(name + ".out"), "w")  # noqa: SIM115 (the daemon's stdout, open while it runs)
        self.procs.append(
            (
                name,
                subprocess.Popen(
                    cmd, env=env or self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                ),
            )
        )

    @staticmethod
    def _port_open(port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        self._run(["mungekey", "--create", f"--keyfile={key}", "--force"], check=True)
        key.chmod(0o400)
        self._spawn(
            "munged",
            [
                "munged",
                "-F",
                "--force",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--log-file={self.log('munged')}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        _wait("munged", self.munge_socket.exists, 20, [self.log("munged"), self.log("munged.out")])

    def _start_mariadb(self) -> None:
        data = self.root / "mysql" / "data"
        self._run(
            [
                "mariadb-install-db",
                "--auth-root-authentication-method=socket",
                f"--datadir={data}",
                "--user=root",
                "--skip-test-db",
            ],
            check=True,
        )
        self._spawn(
            "mariadbd",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.mysql_socket}",
                "--skip-networking",
                "--user=root",
                f"--pid-file={self.root / 'mysql' / 'pid'}",
                f"--log-error={self.log('mariadbd')}",
            ],
        )
        _wait("MariaDB", self.mysql_socket.exists, 60, [self.log("mariadbd")])

    def _write_configs(self, ports: dict) -> None:
        cpus = os.cpu_count() or 1
        mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
        r, munge = self.root, self.munge_socket
        self.conf.write_text(f"""\
ClusterName=sgtrtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ports["ctld"]}
SlurmdPort={ports["d"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge},cred_expire=10
CredType=cred/munge
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={ports["dbd"]}
AccountingStoragePass={munge}
JobAcctGatherType=jobacct_gather/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
SchedulerParameters=sched_interval=10,bf_interval=5
StateSaveLocation={r / "state"}
SlurmdSpoolDir={r / "spool"}
SlurmctldPidFile={r / "slurmctld.pid"}
SlurmdPidFile={r / "slurmd.pid"}
SlurmctldLogFile={self.log("slurmctld")}
SlurmdLogFile={self.log("slurmd")}
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        dbd = self.conf.with_name("slurmdbd.conf")
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={munge}
DbdHost=localhost
DbdPort={ports["dbd"]}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={r / "slurmdbd.pid"}
LogFile={self.log("slurmdbd")}
""")
        dbd.chmod(0o600)
