"""The data directory: find a file, or download it from its pinned source and check its sha256.

Lookup order for a relative path such as `em/extreme_sports.jsonl`: `paths.data_dir`, then the download
cache (`paths.cache_dir/data`), then a download from the source named in `manifest.yaml`.
"""

from __future__ import annotations

import gzip
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import yaml
from filelock import FileLock
from tqdm import tqdm

from ..io import file_mode_from_umask, sha256_of

log = logging.getLogger(__name__)
MANIFEST = Path(__file__).with_name("manifest.yaml")


class DataFileError(RuntimeError):
    """A data file is missing, cannot be downloaded, or fails its checksum."""


def _check_sha(path: str, pinned: str, rel: str, url: str) -> None:
    got = sha256_of(path)
    if got != pinned:
        raise DataFileError(
            f"{rel}: downloaded from {url}, but its sha256 is {got}, not the pinned {pinned}. "
            "The source changed or the download was corrupted; nothing was kept."
        )


def _gunzip_in_place(path: str) -> None:
    with gzip.open(path, "rb") as f:
        data = f.read()
    Path(path).write_bytes(data)


def load_manifest() -> dict[str, dict]:
    return yaml.safe_load(MANIFEST.read_text())["files"]


@dataclass
class DataFiles:
    data_dir: Path
    cache_dir: Path
    sources: Mapping[str, str] = field(default_factory=dict)
    download: bool = True
    timeout_s: float = 60.0
    manifest: dict = field(default_factory=load_manifest)

    @classmethod
    def from_config(cls, cfg) -> DataFiles:
        return cls(
            data_dir=Path(cfg.paths.data_dir),
            cache_dir=Path(cfg.paths.cache_dir) / "data",
            sources=dict(cfg.download.sources),
            download=cfg.download.enabled,
            timeout_s=cfg.download.timeout_s,
        )

    def path(self, rel: str) -> Path:
        """The local path of data file `rel`, downloading it first when it is missing."""
        for base in (self.data_dir, self.cache_dir):
            if (base / rel).is_file():
                return base / rel
        entry = self.manifest.get(rel)
        if entry is None or not entry.get("source") or not self.download:
            raise DataFileError(self._missing_message(rel, entry))
        return self._download(rel, entry)

    def folder(self, rel: str) -> Path:
        """A folder of the data directory (e.g. mmlu/test); folders are never downloaded."""
        if not (self.data_dir / rel).is_dir():
            raise DataFileError(
                f"Data folder {rel!r} is not in the data directory {self.data_dir}. {self._how_to_fix(rel)}."
            )
        return self.data_dir / rel

    def url(self, rel: str) -> str:
        entry = self.manifest[rel]
        base = self.sources.get(entry["source"])
        if not base:
            raise DataFileError(f"download.sources has no base URL for source {entry['source']!r} (needed by {rel})")
        return base.rstrip("/") + "/" + entry["remote"]

    def _download(self, rel: str, entry: dict) -> Path:
        dest = self.cache_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if dest.is_file():
                return dest
            url = self.url(rel)
            log.info("Downloading %s from %s", rel, url)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
            file_mode_from_umask(fd)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    total = int(resp.headers.get("Content-Length") or entry.get("bytes") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {rel}") as bar:
                        for block in iter(lambda: resp.read(1 << 16), b""):
                            out.write(block)
                            bar.update(len(block))
                if entry.get("compression") == "gzip":
                    _check_sha(tmp, entry["download_sha256"], rel, url)
                    _gunzip_in_place(tmp)
                _check_sha(tmp, entry["sha256"], rel, url)
                os.replace(tmp, dest)
            except (urllib.error.URLError, OSError, EOFError) as e:
                raise DataFileError(f"{rel}: download from {url} failed ({e}). {self._how_to_fix(rel)}") from e
            finally:
                Path(tmp).unlink(missing_ok=True)
        return dest

    def _how_to_fix(self, rel: str) -> str:
        return (
            f"Put the file at {self.data_dir / rel} (set SGTR_EM_DATA_DIR or paths.data_dir to a folder laid out "
            "like the paper's data: articles/, summaries/, em/, eval/)"
        )

    def _missing_message(self, rel: str, entry: dict | None) -> str:
        msg = f"Data file {rel!r} is not in the data directory {self.data_dir}."
        if entry is None:
            return f"{msg} It is not a known data file either (sgtr_em/data/manifest.yaml). {self._how_to_fix(rel)}."
        if entry.get("source") and not self.download:
            return f"{msg} Downloads are off (download.enabled=false): {self._how_to_fix(rel)}, or turn them on."
        return f"{msg} It has no public download URL ({entry.get('note', 'see the data README')}). {self._how_to_fix(rel)}."
