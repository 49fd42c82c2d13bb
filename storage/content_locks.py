"""Per-content locks that hold across processes: the decision to pin or unpin
some content (an upload recording it, a delete releasing it, the pin worker,
start-up reconciliation) is made by one holder at a time, whichever `hearth
serve` worker it runs in.

In a process, an asyncio.Lock per content key; across processes, flock(2) on
one of STRIPES lock files (`run/locks/NNNN`) chosen by the key's hash, opened
afresh for each hold (a flock belongs to an open file, so two holders in one
process exclude each other too). Two keys sharing a stripe wait for each other
a little; nothing else.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
from collections import defaultdict
from pathlib import Path

STRIPES = 1024


class ContentLocks:
    def __init__(self, lock_dir: Path):
        self.dir = Path(lock_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = defaultdict(int)

    def _stripe(self, key: str) -> Path:
        n = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % STRIPES
        return self.dir / f"{n:04d}"

    @contextlib.asynccontextmanager
    async def hold(self, key: str):
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            async with lock:
                fd = os.open(self._stripe(key), os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # another process decides about it now
                        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                    yield
                finally:
                    os.close(fd)
        finally:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                self._locks.pop(key, None)
