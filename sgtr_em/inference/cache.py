"""On-disk cache of judge and API calls, and the token/cost accounting that goes into metrics.json.

A call's key is the sha256 of everything that determines its answer (model, prompt or messages, parameters),
so a rerun, or another job that asks the same question, makes no call. One small JSON file per key, written
atomically, so concurrent jobs can share the folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..io import atomic_write_text, json_sha256


class DiskCache:
    def __init__(self, folder: Optional[str | Path]):
        self.folder = Path(folder) if folder else None  # None: caching off

    @staticmethod
    def key(obj: Any) -> str:
        return json_sha256(obj, ascii=False)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any:
        if self.folder is None:
            return None
        path = self._path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def put(self, key: str, value: Any) -> None:
        if self.folder is not None:
            atomic_write_text(self._path(key), json.dumps(value, ensure_ascii=False))


@dataclass
class Usage:
    """Calls made (cache hits excluded), tokens, and their price."""

    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    rate_limited: int = 0  # 429 answers (the SDK retried them)
    rate_wait_s: float = 0.0  # seconds calls waited for the rate-limit buckets (summed over concurrent calls)

    def add_call(self, prompt_tokens: int, completion_tokens: int, prices: tuple[float, float] = (0.0, 0.0)) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.cost_usd += (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6

    def as_dict(self) -> dict:
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6), "rate_wait_s": round(self.rate_wait_s, 3)}

    def minus(self, before: Usage) -> Usage:
        """The usage since the snapshot `before` (a copy taken earlier)."""
        return Usage(*(a - b for a, b in zip(asdict(self).values(), asdict(before).values())))

    def copy(self) -> Usage:
        return Usage(**asdict(self))
