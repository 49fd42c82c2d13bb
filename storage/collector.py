"""The garbage collector service: runs the engine's gc when an operator asks, on
a schedule, and when the store grows past a watermark.

Modelled on Kubo's `Datastore.StorageMax` / `StorageGCWatermark` / `GCPeriod`:
with `[storage] max_bytes` = M and `gc_watermark` = W (percent), a collection
starts once the store holds more than M x W / 100 bytes (checked every
CHECK_INTERVAL seconds, and right after an upload asks for a check); with
`gc_period` = P > 0 one runs every P seconds regardless. If pinned content alone
is over the watermark, a collection cannot help: the next watermark-triggered
one waits until the store has grown by another REGROW of M (or P passes), so a
full node does not collect in a loop; a warning says so.

One collection at a time; callers that ask while one runs wait for it and get
its result. `on_collected` runs after each collection (the gateway drops what it
caches in memory: collected content must not be served from a cache). With
several workers, a collection may run in any of them (`hearth gc` reaches
whichever answers): the count and the last result are kept in `state_path`, so
every worker reports the node's.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .engine import EngineError, StorageEngine

log = logging.getLogger("hearth.gc")

CHECK_INTERVAL = 60.0
REGROW = 0.01  # of max_bytes


@dataclass
class GcResult:
    reason: str  # "operator" | "schedule" | "watermark"
    started_at: float  # unix time
    seconds: float
    removed_blocks: int
    size_before: int
    size_after: int

    @property
    def freed_bytes(self) -> int:
        return max(0, self.size_before - self.size_after)

    def as_json(self) -> dict:
        return asdict(self) | {"freed_bytes": self.freed_bytes}


class GarbageCollector:
    def __init__(self, engine: StorageEngine, *, max_bytes: int = 0, watermark: int = 90, period: float = 0,
                 on_collected: Callable[[], None] = lambda: None, check_interval: float = CHECK_INTERVAL,
                 state_path: Path | None = None):
        self.engine = engine
        self.state_path = Path(state_path) if state_path is not None else None
        self.max_bytes, self.watermark, self.period = max_bytes, watermark, period
        self.on_collected = on_collected
        self.check_interval = check_interval
        self.last: GcResult | None = None
        self.runs = 0
        self.removed_total = 0
        self._lock = asyncio.Lock()
        self._running: asyncio.Task | None = None
        self._loop_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._last_time = time.monotonic()  # the schedule counts from start-up
        self._watermark_floor = 0  # size after a gc that could not get under the watermark

    @property
    def threshold(self) -> int | None:
        """Bytes above which a collection starts, or None (no size trigger)."""
        if not self.max_bytes:
            return None
        return self.max_bytes * self.watermark // 100

    async def collect(self, reason: str = "operator") -> GcResult:
        """Run one collection (or join the one running) and return its result."""
        async with self._lock:
            if self._running is None or self._running.done():
                self._running = asyncio.ensure_future(self._collect(reason))
            task = self._running
        return await asyncio.shield(task)

    async def _collect(self, reason: str) -> GcResult:
        started, wall = time.monotonic(), time.time()
        before = await self.engine.repo_size()
        removed = await self.engine.gc()
        after = await self.engine.repo_size()
        self._last_time = time.monotonic()
        self.on_collected()
        result = GcResult(reason, wall, round(time.monotonic() - started, 3), removed, before, after)
        self.last, self.runs, self.removed_total = result, self.runs + 1, self.removed_total + removed
        if self.state_path is not None:
            await asyncio.to_thread(self._record, result)
        threshold = self.threshold
        if threshold is not None and after > threshold:
            self._watermark_floor = after
            log.warning("store still holds %d bytes after gc, over the watermark (%d%% of max_bytes %d): "
                        "pinned content fills it", after, self.watermark, self.max_bytes)
        else:
            self._watermark_floor = 0
        log.info("gc (%s): removed %d blocks, freed %d bytes in %.2f s", reason, removed, result.freed_bytes,
                 result.seconds)
        return result

    def _record(self, result: GcResult) -> None:
        state = self._read()
        state = {"runs": state.get("runs", 0) + 1, "removed_total": state.get("removed_total", 0) + result.removed_blocks,
                 "last": result.as_json()}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def _read(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    async def state(self) -> dict:
        """{"runs", "removed_total", "last"} for the whole node (every worker's collections)."""
        if self.state_path is None:
            return {"runs": self.runs, "removed_total": self.removed_total,
                    "last": self.last.as_json() if self.last else None}
        state = await asyncio.to_thread(self._read)
        return {"runs": state.get("runs", 0), "removed_total": state.get("removed_total", 0),
                "last": state.get("last")}

    # --- the background loop --------------------------------------------------------------
    def check_soon(self) -> None:
        """Look at the store size now (an upload just grew it)."""
        if self.threshold is not None:
            self._wake.set()

    async def start(self) -> None:
        if self._loop_task is None and (self.threshold is not None or self.period):
            self._loop_task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = self._running
        if running is not None and not running.done():
            # an engine gc is not interruptible midway; let it finish
            await asyncio.gather(running, return_exceptions=True)

    def _due(self, size: int | None) -> str | None:
        if self.period and time.monotonic() - self._last_time >= self.period:
            return "schedule"
        threshold = self.threshold
        if threshold is not None and size is not None and size > threshold:
            if not self._watermark_floor or size > self._watermark_floor + self.max_bytes * REGROW:
                return "watermark"
        return None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._next_wait())
            self._wake.clear()
            try:
                size = await self.engine.repo_size() if self.threshold is not None else None
                reason = self._due(size)
                if reason:
                    await self.collect(reason)
            except asyncio.CancelledError:
                raise
            except EngineError as exc:
                log.warning("gc check skipped: storage engine unavailable: %s", exc)
            except Exception:  # noqa: BLE001 - the service must outlive one bad run
                log.exception("gc failed")

    def _next_wait(self) -> float:
        wait = self.check_interval if self.threshold is not None else float("inf")
        if self.period:
            wait = min(wait, max(0.0, self.period - (time.monotonic() - self._last_time)))
        return max(wait, 0.05)
