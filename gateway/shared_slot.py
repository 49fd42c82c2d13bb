"""An 8-byte value in a file under the data dir's run/ that every worker process
of a node maps in memory: reading it is a memory access, changing it a short
flock'd write. For the few things workers must agree on without a round trip:
the response-cache generation (gateway/cache.py) and the pace of the connection
pressure log (gateway/server.py)."""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path


class SharedSlot:
    def __init__(self, path: Path, fmt: str = "<Q"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fmt = fmt
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < 8:
            os.ftruncate(self._fd, 8)
        self._map = mmap.mmap(self._fd, 8)

    @property
    def value(self):
        return struct.unpack_from(self.fmt, self._map)[0]

    def update(self, change) -> tuple[object, object]:
        """Set the value to change(old) under the lock; (old, new)."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            old = self.value
            new = change(old)
            struct.pack_into(self.fmt, self._map, 0, new)
            return old, new
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
