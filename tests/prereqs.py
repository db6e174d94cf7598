"""What the test suite needs beyond Python: the paper's data folder, Slurm, and Chromium.

`tests/conftest.py` runs `ensure()` once per session, after collection and before any test runs, for the
prerequisites the selected tests use (so test order never matters), and prints what it found. Slurm and Chromium
are installed from Debian when missing (root and apt-get needed; quick when already installed); the data folder is
only looked for (tests never download). Under env `CI` a missing prerequisite fails the run; elsewhere the tests
that need it are skipped with the reason.

    python -m tests.prereqs            # the same check and install by hand, for the whole suite
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SLURM_PACKAGES = [
    "slurmctld",
    "slurmd",
    "slurm-client",
    "munge",
    "slurmdbd",
    "mariadb-server-core",
    "mariadb-client-core",
]
SLURM_BINARIES = [
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "sacct",
    "munged",
    "mungekey",
    "slurmdbd",
    "mariadbd",
    "mariadb-install-db",
]
CHROMIUM_PACKAGES = ["chromium"]
CHROMIUM_BINARIES = ["chromium", "chromium-browser"]  # Debian's name, then Ubuntu's

# The fixture each prerequisite stands behind: a test needs a prerequisite when it uses that fixture (directly or
# through another fixture).
FIXTURES = {"data_dir": "data", "slurm_installed": "slurm", "chromium": "chromium"}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_sbin_path())


def find_data_dir() -> Path | None:
    """$SGTR_EM_DATA_DIR when set (as the application reads it), else ../shared/data beside the repository; None
    when that folder holds no `em/`."""
    env = os.environ.get("SGTR_EM_DATA_DIR")
    candidate = Path(env) if env else REPO.parent / "shared" / "data"
    return candidate.resolve() if (candidate / "em").is_dir() else None


_apt_updated = False


def apt_install(packages: list[str]) -> str | None:
    """`apt-get install --no-install-recommends packages`; returns why it failed, or None."""
    global _apt_updated
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "cannot install it here: needs root and apt-get (apt-get install " + " ".join(packages) + ")"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmds = ([] if _apt_updated else [["apt-get", "update", "-qq"]]) + [
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    ]
    for cmd in cmds:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}"
        _apt_updated = _apt_updated or cmd[1] == "update"
    return None


def ensure_slurm() -> tuple[str | None, str]:
    """(slurmctld's path or None, what was found or why it is missing); installs Slurm from Debian if missing."""
    missing = [b for b in SLURM_BINARIES if _which(b) is None]
    installed = ""
    if missing:
        start = time.time()
        failed = apt_install(SLURM_PACKAGES)
        missing = [b for b in SLURM_BINARIES if _which(b) is None]
        if failed or missing:
            return None, f"Slurm missing ({', '.join(missing)}): {failed or 'still missing after apt-get install'}"
        installed = f", installed from Debian in {time.time() - start:.0f} s"
    version = subprocess.run([_which("slurmctld"), "-V"], capture_output=True, text=True).stdout.strip()
    return _which("slurmctld"), f"{version or 'slurm'} ({_which('slurmctld')}{installed})"


def ensure_chromium() -> tuple[str | None, str]:
    """(the chromium binary or None, what was found or why it is missing); installs Debian's chromium if missing."""
    found = next(filter(None, map(_which, CHROMIUM_BINARIES)), None)
    installed = ""
    if found is None:
        start = time.time()
        failed = apt_install(CHROMIUM_PACKAGES)
        found = next(filter(None, map(_which, CHROMIUM_BINARIES)), None)
        if failed or found is None:
            return None, f"Chromium missing: {failed or 'still missing after apt-get install chromium'}"
        installed = f", installed from Debian in {time.time() - start:.0f} s"
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.strip()
    return found, f"{version or 'chromium'} ({found}{installed})"


def ensure_data() -> tuple[Path | None, str]:
    found = find_data_dir()
    if found is None:
        where = os.environ.get("SGTR_EM_DATA_DIR") or str(REPO.parent / "shared" / "data")
        return None, (
            f"the paper's data folder is missing: {where} has no em/ folder; set SGTR_EM_DATA_DIR to it "
            "(tests never download)"
        )
    return found, str(found)


ENSURE = {"data": ensure_data, "slurm": ensure_slurm, "chromium": ensure_chromium}


def ensure(names) -> dict[str, tuple[object, str]]:
    """{name: (the thing found or None, a one-line description)} for each prerequisite asked for, in a fixed order."""
    return {name: ENSURE[name]() for name in ENSURE if name in set(names)}


def main() -> int:
    found = ensure(ENSURE)
    for name, (value, what) in found.items():
        print(f"prerequisite {name:8s} {'ok     ' if value else 'MISSING'} {what}")
    return 1 if any(v is None for v, _ in found.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
