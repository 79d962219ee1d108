"""File descriptors shared by every ``RowReader``, with a bounded number kept open.

A run directory can hold more checkpoints than the process may open files (1,500
``checkpoint-N/`` under the usual limit of 1,024): each is opened when read and the least
recently used idle descriptors are closed to stay under ``limit``. A descriptor in use by a
read is never closed under it; the pool only exceeds ``limit`` while that many reads run at once.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

from ..errors import InputError


def default_limit() -> int:
    """A quarter of the soft open-file limit (the rest stays free for everything else), 8..256."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(256, soft // 4)) if soft != resource.RLIM_INFINITY else 256


class FdPool:
    """``limit`` None follows ``default_limit()``, read at each open (a process may lower it)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._open: OrderedDict[str, list[int]] = OrderedDict()   # path -> [fd, reads in progress]
        self._lock = threading.Lock()

    @contextmanager
    def fd(self, path: str) -> Iterator[int]:
        """A read-only descriptor of ``path`` for the duration of the ``with`` block."""
        entry = self._acquire(path)
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1

    def _acquire(self, path: str) -> list[int]:
        with self._lock:
            entry = self._open.get(path)
            if entry is None:
                self._evict((self.limit or default_limit()) - 1)
                try:
                    entry = [os.open(path, os.O_RDONLY), 0]
                except OSError as e:
                    raise InputError(f"{path}: cannot open ({e.strerror or e})") from None
                self._open[path] = entry
            self._open.move_to_end(path)
            entry[1] += 1
            return entry

    def _evict(self, keep: int) -> None:
        """Close idle descriptors, least recently used first, until at most ``keep`` are open."""
        for path in [p for p, (_, users) in self._open.items() if users == 0]:
            if len(self._open) <= keep:
                return
            os.close(self._open.pop(path)[0])

    def close(self, paths: set[str]) -> None:
        """Close the idle descriptors of ``paths`` (a reader that is done with them)."""
        with self._lock:
            for path in paths:
                entry = self._open.get(path)
                if entry is not None and entry[1] == 0:
                    os.close(self._open.pop(path)[0])

    def open_count(self) -> int:
        return len(self._open)


POOL = FdPool()
