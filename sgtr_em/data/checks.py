"""The parent's data check, before any model is loaded: every file a job reads is here (or is downloaded),
matches its pinned sha256, and every row of every chat dataset it trains on is well formed.

The checksums it returns go into the run's metadata (`data_files.json`, the W&B config).
"""

from __future__ import annotations

from typing import Iterable

from ..io import folder_sha256, sha256_of
from .chat_file import validate_chat_file
from .files import DataFileError, DataFiles
from .interventions import stage_files

CHAT_BUILDERS = ("em", "chat_file")


def _pins(data: dict) -> dict:
    """{path: pinned sha256} of a stage's data spec."""
    if data["type"] == "em":
        return {data["file"]: data["sha256"]}
    return dict(data.get("sha256") or {})


def check_data(files: DataFiles, stages: Iterable, required: Iterable[str]) -> dict[str, str]:
    """{path: sha256} of every data file and folder (folder_sha256) in `required`; raises naming what to fix."""
    stages = list(stages)
    pins = {rel: sha for st in stages for rel, sha in _pins(st.spec.data).items() if sha}
    chat = {st.spec.data["file"] for st in stages if st.spec.data["type"] in CHAT_BUILDERS}
    folders = {rel for st in stages if st.spec.data["type"] == "mmlu_qa" for rel in stage_files(st.spec.data)}
    out = {}
    for rel in dict.fromkeys(required):
        if rel in folders:
            out[rel] = folder_sha256(files.folder(rel))
            continue
        path = files.path(rel)
        out[rel] = sha256_of(path)
        if rel in pins and out[rel] != pins[rel]:
            raise DataFileError(
                f"{path}: its sha256 is {out[rel]}, not the pinned {pins[rel]}. The file is not the version this "
                "config names: restore it, or give your own file its own name (an em_dataset option with sha256: null)"
            )
        if rel in chat:
            validate_chat_file(path)
    return out
