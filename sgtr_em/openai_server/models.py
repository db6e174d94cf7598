"""The models a server answers for: engines loaded already, and model folders loaded on first use (fine-tuned
`ft:` models), at most `keep` of those in memory at once (least recently used goes first)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Iterable, Optional


class Models:
    def __init__(self, engines: Iterable = (), *, loader: Optional[Callable] = None, keep: int = 2):
        """`engines`: ChatEngines always loaded; `loader(path, name)` makes an engine for a folder added by `add`."""
        self.pinned = {e.name: e for e in engines}
        self.paths: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self.loader, self.keep = loader, keep
        self._loaded: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def alias(self, name: str, target: str) -> None:
        """`name` answers as `target` (e.g. gpt-4.1-2025-04-14 served by SmolLM2)."""
        self.aliases[name] = target

    def add(self, name: str, path: str) -> None:
        self.paths[name] = path

    def path(self, name: str) -> Optional[str]:
        """The folder of a model fine-tuning can start from (a pinned engine's own folder, or an added one)."""
        name = self.aliases.get(name, name)
        if name in self.paths:
            return self.paths[name]
        engine = self.pinned.get(name)
        return getattr(engine, "path", None) if engine else None

    def names(self) -> list[str]:
        return [*self.pinned, *self.aliases, *self.paths]

    def get(self, name: Optional[str]):
        """The engine answering for `name`, or None when the server has no such model."""
        target = self.aliases.get(name, name)
        if target in self.pinned:
            return self.pinned[target]
        if target not in self.paths or self.loader is None:
            return None
        with self._lock:
            if target not in self._loaded:
                while len(self._loaded) >= self.keep:
                    self._loaded.popitem(last=False)
                self._loaded[target] = self.loader(self.paths[target], target)
            self._loaded.move_to_end(target)
            return self._loaded[target]
