"""Garbage collection (mark and sweep), safe against writes in progress in any
process that shares the block store (several `hearth serve` workers, the CLI).

Invariant: gc never removes a block reachable from a pin, nor a block that a
write in progress (an add, a CAR import, a pin that fetches or checks blocks)
has written or relies on, whichever process runs it.

Mechanism: Kubo's. Every write holds the store lock shared from before its first
block until its pin is recorded (`StoreLock.shared()`); a collection holds it
exclusively for its whole mark and sweep (`StoreLock.exclusive()`). So a gc sees
every write either finished (its pin marked) or not begun, in any process. The
lock is flock(2) on `run/store.lock`, one open file per holder. A collection
that waits first takes `run/gc-intent.lock`, which every new write passes
through, so writes arriving meanwhile queue behind the gc rather than starving
it (writer preference, as Go's RWMutex that Kubo's GC lock is). The cost, also
Kubo's: a collection waits for the writes in progress to finish, and writes that
arrive while it waits or runs wait for it.

Mark reads only what it must: raw-codec CIDs have no links and are never read;
a dag-pb block whose first byte is 0x0a starts with Data, and since dag-pb puts
Links before Data such a block (a CIDv0 file leaf) has no links: 1 byte is read.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import os
from pathlib import Path

from .. import dagpb
from ..cid import CID, DAG_PB, IDENTITY
from .blockstore import Blockstore
from .pins import DIRECT


_holding: contextvars.ContextVar[bool] = contextvars.ContextVar("hearth_store_lock_held", default=False)


class StoreLock:
    """Shared for writes, exclusive for gc, across processes (flock).

    A process holds one shared flock on `store.lock` for all its writes in progress
    (counted here), taken when the first starts and let go when the last ends, on a
    file opened once: a write costs no file operation on the event loop, only a
    non-blocking flock on the common path. A collection opens the files afresh (in
    its thread), so it also waits for this process's own writes."""

    def __init__(self, run_dir: Path):
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.main = run_dir / "store.lock"
        self.intent = run_dir / "gc-intent.lock"
        self._main_fd = self._open(self.main)
        self._intent_fd = self._open(self.intent)
        self._writers = 0
        self._first = asyncio.Lock()  # one 0 -> 1 transition at a time

    @staticmethod
    def _open(path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @staticmethod
    async def _flock(fd: int, mode: int) -> None:
        """Take a flock without blocking a thread: the common case (no gc about) takes it
        at once; otherwise poll. A blocking flock in the default executor would be a
        deadlock: enough writes waiting there fill the pool, and the write the gc waits
        for can then never run its own threaded steps. Polling also leaves nothing
        behind when the waiting task is cancelled (a thread would take the lock later,
        for nobody)."""
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)

    @contextlib.asynccontextmanager
    async def shared(self):
        """Held by a write from before its first block until its pin is recorded. A
        task that holds it already (an upload around its add) holds it again at once:
        waiting behind a gc that waits for it would deadlock."""
        if _holding.get():
            yield
            return
        token = _holding.set(True)
        try:
            async with self._shared():
                yield
        finally:
            _holding.reset(token)

    @contextlib.asynccontextmanager
    async def _shared(self):
        # pass through the intent lock: waits while a gc (any process) wants the store
        await self._flock(self._intent_fd, fcntl.LOCK_SH)
        fcntl.flock(self._intent_fd, fcntl.LOCK_UN)
        async with self._first:
            if self._writers == 0:
                await self._flock(self._main_fd, fcntl.LOCK_SH)
            self._writers += 1
        try:
            yield
        finally:
            self._writers -= 1
            if self._writers == 0:
                fcntl.flock(self._main_fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def exclusive(self):
        """Blocking: held by a collection for its whole mark and sweep."""
        intent = self._open(self.intent)
        main = self._open(self.main)
        try:
            fcntl.flock(intent, fcntl.LOCK_EX)
            fcntl.flock(main, fcntl.LOCK_EX)
            yield
        finally:
            os.close(main)
            os.close(intent)

    def close(self) -> None:
        for fd in (self._main_fd, self._intent_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def block_links(store: Blockstore, cid: CID) -> list[CID] | None:
    """Links of a stored block; None if the block is absent."""
    if cid.codec != DAG_PB or cid.hash_code == IDENTITY:
        return [] if cid.hash_code == IDENTITY or store.has(cid.multihash) else None
    head = store.get_unverified_head(cid.multihash, 1)
    if head is None:
        return None
    if head in (b"", b"\x0a"):
        return []
    data = store.read_unverified(cid.multihash)
    if data is None:
        return None
    try:
        return [l.cid for l in dagpb.decode_node(data).links]
    except dagpb.InvalidNode:
        return []


def mark(store: Blockstore, pins: list[tuple[CID, str]]) -> set[bytes]:
    """Multihashes of every block reachable from the pins (missing blocks skipped)."""
    marked: set[bytes] = set()
    for root, type_ in pins:
        if type_ == DIRECT:
            marked.add(root.multihash)
            continue
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.multihash in marked:
                continue
            marked.add(cid.multihash)
            links = block_links(store, cid)
            if links:
                stack.extend(links)
    return marked


def sweep(store: Blockstore, marked: set[bytes]) -> int:
    removed = 0
    for mh, path in store.iter_keys():
        if mh not in marked and store.remove(path):
            removed += 1
    return removed


def collect(store: Blockstore, pins, lock: StoreLock) -> int:
    """A whole collection (blocking): wait for the writes in progress, mark, sweep."""
    with lock.exclusive():
        marked = mark(store, pins())
        removed = sweep(store, marked)
        store.remove_stale_temps()
        return removed
