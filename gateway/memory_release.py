"""Give freed heap memory back to the operating system once a burst of uploads
is over.

A hundred concurrent uploads allocate and free hundreds of MiB of 256 KiB
buffers; glibc keeps freed chunks in its arenas (its mmap threshold grows after
the first large free, so later buffers come from the heap), and the node's RSS
stays at its peak for good. `malloc_trim(0)` returns the free pages. Lowering
the mmap threshold instead would make every buffer an mmap/munmap pair: measured
here, twice the upload time under load. glibc only: elsewhere this does nothing.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger("hearth")

MIN_INTERVAL = 1.0  # seconds between trims

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    _malloc_trim = _libc.malloc_trim
    _malloc_trim.argtypes = [ctypes.c_size_t]
    _malloc_trim.restype = ctypes.c_int
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


class HeapTrimmer:
    """trim_soon() after work that freed a lot; the trim runs off the event loop,
    at most once per MIN_INTERVAL."""

    def __init__(self):
        self._last = 0.0
        self._task: asyncio.Task | None = None

    def trim_soon(self) -> None:
        if _malloc_trim is None or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.ensure_future(self._trim())

    async def _trim(self) -> None:
        wait = self._last + MIN_INTERVAL - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last = time.monotonic()
        await asyncio.to_thread(_malloc_trim, 0)
