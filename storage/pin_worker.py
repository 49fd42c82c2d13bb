"""The pin worker: background tasks that carry Pinning Services API requests
from 'queued' to 'pinned' or 'failed'.

One dispatcher task takes work from the metadata store (`pins_to_work`: queued
requests, and any left 'pinning' by a run that stopped mid-pin, so nothing is
lost across restarts) and runs up to `[pinning] workers` pins at once, each
bounded by `[pinning] pin_timeout`. It wakes as soon as a request is created
(`wake()`) and polls otherwise.

If the storage engine is unavailable (Kubo down), the request goes back to
'queued' and the worker backs off: a request is never marked failed because the
engine could not be reached.

Decisions to pin or unpin some content are serialised with a per-key lock: a
release() that finds nothing wanting the content unpins it under that lock, and
a request becomes 'pinned' only after its pin was made (again) under it. The
long part of a pin, fetching, runs outside the lock (see _process).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pathlib import Path
from typing import Callable

from .cid import CID, DAG_PB
from .content_locks import ContentLocks
from .engine import BlockNotFound, EngineError, EngineTimeout, EngineUnavailable, StorageEngine
from .metadata import MetadataStore

log = logging.getLogger("hearth.pinning")

POLL_INTERVAL = 30.0  # seconds between looks at the queue when nothing wakes the worker
MAX_BACKOFF = 30.0  # ceiling of the engine-unavailable backoff


def spellings(cid: CID) -> list[CID]:
    """Every CID under which an engine may hold a pin of this content: Kubo keeps the
    CIDv0 and the CIDv1 of one dag-pb root as two pins, and requests may use either."""
    out = [cid.v1()]
    if cid.codec == DAG_PB and cid.multihash[:2] == b"\x12\x20" and len(cid.multihash) == 34:
        out.append(CID(0, DAG_PB, cid.multihash))
    return out


class PinWorker:
    """on_released is called after content was unpinned (it may now be collected:
    whoever caches it in memory should drop it)."""

    def __init__(self, store: MetadataStore, engine: StorageEngine, *, workers: int = 4, pin_timeout: float = 600,
                 poll_interval: float = POLL_INTERVAL, on_released: Callable[[], None] = lambda: None,
                 lock_dir: Path | None = None):
        self.store, self.engine = store, engine
        # per-content locks across processes (several workers share one store)
        self.locks = ContentLocks(lock_dir if lock_dir is not None else store.path.parent / "run" / "locks")
        self.on_released = on_released
        self.workers = max(1, int(workers))
        self.pin_timeout: float | None = float(pin_timeout) if pin_timeout else None  # 0: no limit
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task | None = None
        self._active: dict[str, asyncio.Task] = {}  # requestid -> its pin task
        self._backoff = 0.0
        self._backoff_until = 0.0
        # replaced requests whose old content is released once the replacement settles
        self._deferred: dict[str, list[tuple[str, str]]] = {}  # new requestid -> [(old cid, old key)]
        self._pending_unpins: dict[str, str] = {}  # key -> cid: unpins that failed for want of the engine

    # --- lifecycle ------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    async def start(self) -> None:
        if self.running:
            return
        self._backoff, self._backoff_until = 0.0, 0.0
        self._dispatcher = asyncio.create_task(self._run(), name="hearth-pin-dispatcher")

    async def stop(self) -> None:
        """Stop taking work and cancel pins in flight (their requests go back to 'queued')."""
        task, self._dispatcher = self._dispatcher, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        active = list(self._active.values())
        for t in active:
            t.cancel()
        if active:
            await asyncio.gather(*active, return_exceptions=True)
        self._active.clear()

    def wake(self) -> None:
        """Look at the queue now (a request was created)."""
        self._wake.set()

    # --- hooks for the API --------------------------------------------------------------
    async def cancel(self, requestid: str) -> None:
        """Abort the pin in flight for a request that was deleted or replaced."""
        task = self._active.get(requestid)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def replaced(self, old: dict, new: dict) -> list[tuple[str, str]]:
        """Bookkeeping for a replace. The old request's content, if it was pinned, stays
        pinned until the new request settles (the spec: a replace must not let blocks common
        to both be collected); so does whatever the old request itself was holding.
        Returns what can be released right away."""
        held = self._deferred.pop(old["requestid"], [])
        now: list[tuple[str, str]] = []
        if old["status"] == "pinned":
            held.append((old["cid"], old["key"]))
        else:
            now.append((old["cid"], old["key"]))
        if held:
            self._deferred[new["requestid"]] = held
        return now

    async def forget(self, requestid: str) -> None:
        """The request settled or is gone: release what it was holding for a replace."""
        for cid, key in self._deferred.pop(requestid, []):
            await self.release(cid, key)

    async def release(self, cid: str, key: str) -> bool:
        """Unpin content from the engine if no live record or pin request wants it.
        Returns False if the engine could not be reached (it is retried later)."""
        store = self.store
        async with self._key_lock(key):
            if await store.run(store.is_key_wanted, key):
                self._pending_unpins.pop(key, None)
                return True
            try:
                for spelling in spellings(CID.parse(cid)):
                    await self.engine.unpin(spelling)
            except EngineError as exc:
                log.warning("could not unpin %s (will retry): %s", cid, exc)
                self._pending_unpins[key] = cid
                return False
            self._pending_unpins.pop(key, None)
            self.on_released()
            return True

    # --- the dispatcher --------------------------------------------------------------------
    async def _run(self) -> None:
        store = self.store
        while True:
            self._wake.clear()
            try:
                if time.monotonic() >= self._backoff_until:
                    await self._retry_unpins()
                    free = self.workers - len(self._active)
                    if free > 0:
                        rows = await store.run(store.pins_to_work, len(self._active) + free)
                        for row in rows:
                            if free <= 0:
                                break
                            if row["requestid"] in self._active:
                                continue
                            self._spawn(row)
                            free -= 1
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the worker must outlive a db hiccup
                log.exception("pin dispatcher error")
                await asyncio.sleep(1)
            delay = self.poll_interval
            if self._backoff_until > time.monotonic():
                delay = self._backoff_until - time.monotonic()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))

    def _spawn(self, row: dict) -> None:
        rid = row["requestid"]
        task = asyncio.create_task(self._process(row), name=f"hearth-pin-{rid}")
        self._active[rid] = task

        def done(t: asyncio.Task, rid=rid) -> None:
            if self._active.get(rid) is t:
                del self._active[rid]
            self._wake.set()

        task.add_done_callback(done)

    async def _retry_unpins(self) -> None:
        for key, cid in list(self._pending_unpins.items()):
            if not await self.release(cid, key):
                self._engine_down()
                return

    def _engine_down(self) -> None:
        self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
        self._backoff_until = time.monotonic() + self._backoff

    # --- one request -------------------------------------------------------------------------
    async def _process(self, row: dict) -> None:
        store, engine = self.store, self.engine
        rid, cid_text, key = row["requestid"], row["cid"], row["key"]
        settled = False
        try:
            if not await store.run(store.set_pin_status, rid, "pinning", {}):
                return  # deleted meanwhile
            cid = CID.parse(cid_text)
            # where the client says the data is: the engine dials (Kubo) or fetches from (embedded) them
            origins = [o for o in row.get("origins") or [] if isinstance(o, str)]
            # The fetch runs outside the content's lock: it may take up to pin_timeout, and
            # deletes and uploads of the same content must not wait for it. While this request
            # is 'pinning' it counts as wanting the content, so no release() unpins it; one that
            # decided before this request existed may still unpin it under us, so the pin is
            # made again, locally and quickly, under the lock before the request is 'pinned'.
            if self.pin_timeout is None:
                await engine.pin(cid, recursive=True, fetch=True, origins=origins)
            else:
                await asyncio.wait_for(engine.pin(cid, recursive=True, fetch=True, origins=origins),
                                       self.pin_timeout)
            async with self._key_lock(key):
                await engine.pin(cid, recursive=True, fetch=False)
                still_there = await store.run(store.set_pin_status, rid, "pinned", {})
            settled = True
            self._backoff = 0.0
            if not still_there:  # deleted while pinning: do not leave an orphan pin behind
                await self.release(cid_text, key)
            log.info("pinned %s (request %s)", cid_text, rid)
        except EngineUnavailable as exc:
            # never 'failed' because the engine is down: back to the queue, back off
            log.warning("storage engine unavailable, request %s stays queued: %s", rid, exc)
            await store.run(store.set_pin_status, rid, "queued",
                            {"status_details": f"waiting for the storage engine: {exc}"})
            self._engine_down()
        except asyncio.TimeoutError:
            settled = True
            await self._fail(rid, f"timed out after {self.pin_timeout:g}s: {cid_text} could not be retrieved")
        except (BlockNotFound, EngineTimeout, EngineError, ValueError) as exc:
            settled = True
            self._backoff = 0.0
            await self._fail(rid, str(exc) or exc.__class__.__name__)
        except asyncio.CancelledError:
            # deleted/replaced (the row is gone: no-op) or shutting down (back to the queue)
            with contextlib.suppress(Exception):
                await asyncio.shield(store.run(store.set_pin_status, rid, "queued", {}))
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("pinning %s (request %s) failed unexpectedly", cid_text, rid)
            settled = True
            await self._fail(rid, f"internal error: {exc.__class__.__name__}")
        finally:
            if settled:
                await self.forget(rid)

    async def _fail(self, rid: str, message: str) -> None:
        store = self.store
        log.info("pin request %s failed: %s", rid, message)
        await store.run(store.set_pin_status, rid, "failed", {"error": message})

    def key_lock(self, key: str):
        """Serialise pin/unpin decisions about one piece of content (also used by the
        upload API, so an upload and a PSA delete of the same content cannot cross)."""
        return self._key_lock(key)

    def _key_lock(self, key: str):
        return self.locks.hold(key)
