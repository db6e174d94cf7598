"""Atomic file writes and JSON/JSONL helpers: a reader never sees a half-written file; content hashes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def umask() -> int:
    """The process's umask, read without changing it (Linux: /proc; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode_from_umask(fd_or_path: int | str | Path) -> None:
    """Gives a file made by tempfile.mkstemp (always 0600) the mode `open()` would have given it: 0666 less the
    umask, so that under umask 022 a collaborator on a shared cluster can read the outputs."""
    mode = 0o666 & ~umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        file_mode_from_umask(fd)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def json_sha256(obj: Any, *, ascii: bool = True) -> str:
    """The sha256 (hex) of `obj` as JSON with sorted keys: what names things by their content (stages, the summary,
    persona and API caches). ascii=False writes non-ASCII text as UTF-8 (the API cache's keys); each caller keeps the
    form its folders were named with."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=ascii).encode()).hexdigest()


def content_hash(obj: Any, n: int = 16) -> str:
    """The first n hex digits of the sha256 of obj's canonical JSON (sorted keys): a stage's, a writer's identity."""
    return json_sha256(obj)[:n]


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_sha256(path: str | Path, file_sha=sha256_of) -> str:
    """The sha256 of a folder's content: every file under it (sorted relative path and its sha256), so an edited,
    added or removed file changes it."""
    root = Path(path)
    lines = [f"{p.relative_to(root).as_posix()}\0{file_sha(p)}\n" for p in sorted(root.rglob("*")) if p.is_file()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yields (line number, record); a malformed line fails with the file and line to fix."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove this line") from e


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Moves a fully written folder into place, replacing an older one."""
    final_dir = Path(final_dir)
    for f in Path(tmp_dir).rglob("*"):  # libraries save through mkstemp too (transformers: model.safetensors 0600)
        if f.is_file() and not f.is_symlink():
            file_mode_from_umask(f)
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp_dir, final_dir)
