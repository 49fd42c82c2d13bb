"""The scrubber: re-hash the embedded block store in the background, at a set
rate, and quarantine what no longer matches its hash.

With `[storage] verify_on_read = "never"` blocks are not re-hashed when they are
read (they were verified when written), so damage on disk -- a bad sector, a
torn write after a power loss, a stray edit -- is found here instead of on the
read path. The scrubber walks every block file in a stable order (shard
directory, then file name), pass after pass, hashing at most `rate` bytes per
second (each block also costs PER_BLOCK_COST, so a store of tiny blocks is not
walked at a runaway pace), and remembers where it got to in a small state file
(`scrub.json` in the data dir), so a restart carries on from there instead of
starting over. Reading and hashing run in a worker thread, a batch of about
BATCH_SECONDS worth of the rate per hop: the event loop never waits on it.

A block that does not hash to its name is moved aside (``*.corrupt``) exactly as
the read path does with verify_on_read = "always" (Blockstore._quarantine): it
is not served again (the gateway answers for content that needs it with an
error, never with its bytes), and the next upload or CAR import of that content
writes it again. Each one is logged (ERROR), counted for /metrics, and listed
with its multihash in `status()` (/readyz details, `GET /api/v1/operator/repo`,
`hearth repo stat`). `on_corrupt` is called too (the app clears its in-memory
cache there: a response built from the damaged bytes must not outlive them).

Only one process of a node runs the scrubber; the state file also carries its
counts and findings (written every SAVE_EVERY seconds, and at once when it finds
a damaged block), so `status()` in any other process of the node, or in a CLI
command beside it, reports what the running one sees.

Only sha2-256 blocks are checked (the only hash the store accepts); others are
skipped. A block removed by gc while the scrubber reads it is skipped.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..cid import CID, RAW, SHA2_256, b58encode, decode_varint
from .blockstore import SUFFIX, Blockstore, key_mh, verify_mh

log = logging.getLogger("hearth.scrub")

BATCH_SECONDS = 0.25  # hashing per thread hop: this many seconds' worth of the rate
PER_BLOCK_COST = 4096  # budget a block costs beyond its bytes (listing, open, stat)
PASS_PAUSE = 1.0  # seconds between two passes (and between looks at an empty store)
SAVE_EVERY = 5.0  # seconds between writes of the state file
STOP_WAIT = 5.0  # seconds stop() waits for the batch in progress
REPORT_LIMIT = 100  # corrupt blocks listed in status(), most recent last


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class _Step:
    cost: int = 0
    blocks: int = 0
    nbytes: int = 0
    corrupt: list[dict] = field(default_factory=list)
    pass_done: bool = False


class _Walk:
    """Every block file, in (shard, name) order, resumable after a given key. Used
    from one worker thread at a time."""

    def __init__(self, root: Path, after: str | None):
        self.root = root
        self.after = after  # resume after this key (None: from the start)
        self.shards: list[str] | None = None
        self.names: list[str] = []

    def next(self) -> tuple[str, str] | None:
        """(key, path) of the next block file, or None at the end of the pass (the next
        call starts a new pass)."""
        if self.shards is None:
            try:
                self.shards = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
            except FileNotFoundError:
                self.shards = []
            if self.after:
                shard = self.after[-3:-1]
                self.shards = [s for s in self.shards if s >= shard]
            self.shards.reverse()  # popped from the end
        while not self.names:
            if not self.shards:
                self.shards, self.after = None, None
                return None
            shard = self.shards.pop()
            try:
                names = [e.name[: -len(SUFFIX)] for e in os.scandir(os.path.join(self.root, shard))
                         if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
            except FileNotFoundError:
                names = []
            if self.after is not None:
                if shard == self.after[-3:-1]:  # the shard it stopped in: carry on after that block
                    names = [n for n in names if n > self.after]
                self.after = None
            names.sort(reverse=True)
            self.names = names
        key = self.names.pop()
        return key, os.path.join(self.root, key[-3:-1], key + SUFFIX)


class Scrubber:
    def __init__(self, store: Blockstore, state_path: Path, rate: int, *,
                 on_corrupt: Callable[[dict], None] | None = None, pass_pause: float = PASS_PAUSE):
        """rate: bytes per second to re-hash (0 = off); state_path: where the position
        is kept across restarts; on_corrupt(report): called on the event loop for each
        damaged block found."""
        self.store = store
        self.state_path = Path(state_path)
        self.rate = int(rate)
        self.on_corrupt = on_corrupt
        self.pass_pause = pass_pause
        self.running = False
        self.passes = 0  # complete passes, since the state file began
        self.checked_blocks = 0  # since this process started
        self.checked_bytes = 0
        self.corrupt_total = 0
        self.corrupt: list[dict] = []
        self.position: str | None = None  # the last block key checked
        self.last_pass_completed_at: float | None = None
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None
        self._saved_at = 0.0
        self._shared: tuple[float, dict] | None = None  # (read at, state file) for status() elsewhere
        self._load_state()
        self._walk = _Walk(self.store.root, self.position)

    # --- lifecycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self.rate <= 0 or self._task is not None:
            return
        self.running = True
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="hearth-scrubber")

    async def stop(self) -> None:
        """Let the batch in progress finish (what it found is reported), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT)
        except asyncio.TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.running = False
        await asyncio.to_thread(self._save_state)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by stop()."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stopping.wait(), seconds)
            except asyncio.TimeoutError:
                pass

    # --- the loop ----------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        budget = max(int(self.rate * BATCH_SECONDS), 1)
        while not self._stopping.is_set():
            started = loop.time()
            try:
                step = await asyncio.to_thread(self._step, budget)
            except Exception:  # noqa: BLE001 - keep scrubbing; a bug here must not stop the node
                log.exception("scrub: a step failed; trying again shortly")
                await self._pause(self.pass_pause)
                continue
            self.checked_blocks += step.blocks
            self.checked_bytes += step.nbytes
            for report in step.corrupt:
                self._report(report)
            if step.corrupt:
                self._saved_at = 0.0  # other processes of the node report it from the state file: now
            # the rate: this batch's cost is worth cost/rate seconds
            await self._pause(step.cost / self.rate - (loop.time() - started))
            now = time.time()
            if step.pass_done:
                self.passes += 1
                self.last_pass_completed_at = now
                self.position = None
            if now - self._saved_at >= SAVE_EVERY:
                await asyncio.to_thread(self._save_state)
            if step.pass_done:
                await self._pause(self.pass_pause)

    def _step(self, budget: int) -> _Step:
        """Hash blocks until `budget` is spent or the pass ends (in a worker thread)."""
        out = _Step()
        while out.cost < budget:
            item = self._walk.next()
            if item is None:
                out.pass_done = True
                break
            key, path = item
            self.position = key
            try:
                mh = key_mh(key)
            except ValueError:
                continue
            if decode_varint(mh, 0)[0] != SHA2_256:
                continue
            try:
                with open(path, "rb", buffering=0) as f:
                    data = f.read()
            except FileNotFoundError:  # collected meanwhile (or set aside by a gc sweep)
                continue
            except OSError as exc:
                log.error("scrub: cannot read block %s: %s", path, exc)
                out.cost += PER_BLOCK_COST
                continue
            out.cost += len(data) + PER_BLOCK_COST
            out.blocks += 1
            out.nbytes += len(data)
            if verify_mh(mh, data):
                continue
            moved = self.store._quarantine(path)
            out.corrupt.append({"cid": str(CID(1, RAW, mh)), "multihash": b58encode(mh), "path": path,
                                "size": len(data), "quarantined": moved, "found_at": _utc(time.time())})
        return out

    def _report(self, report: dict) -> None:
        self.corrupt_total += 1
        self.corrupt.append(report)
        del self.corrupt[:-REPORT_LIMIT]
        log.error("scrub: block %s (multihash %s, %d bytes) does not match its hash: %s; content that needs it "
                  "is not served until it is uploaded or imported again", report["cid"], report["multihash"],
                  report["size"], f"moved aside to {report['path']}.corrupt" if report["quarantined"]
                  else "it was gone before it could be moved aside")
        if self.on_corrupt is not None:
            try:
                self.on_corrupt(report)
            except Exception:  # noqa: BLE001
                log.exception("scrub: on_corrupt callback failed")

    # --- state --------------------------------------------------------------------------
    def _load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("scrub: ignoring unreadable state file %s (%s): starting a new pass", self.state_path, exc)
            return
        if not isinstance(state, dict):
            return
        position = state.get("position")
        if isinstance(position, str) and position:
            self.position = position
        if isinstance(state.get("passes"), int):
            self.passes = state["passes"]
        if isinstance(state.get("last_pass_completed_at"), (int, float)):
            self.last_pass_completed_at = float(state["last_pass_completed_at"])

    def _save_state(self) -> None:
        state = {"position": self.position, "passes": self.passes,
                 "last_pass_completed_at": self.last_pass_completed_at,
                 # what status() elsewhere reports while this process scrubs
                 "pid": os.getpid() if self.running else None, "rate": self.rate,
                 "checked_blocks": self.checked_blocks, "checked_bytes": self.checked_bytes,
                 "corrupt_total": self.corrupt_total, "corrupt": self._public_corrupt()}
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_path)
            self._saved_at = time.time()
        except OSError as exc:
            log.warning("scrub: cannot save state to %s: %s", self.state_path, exc)

    # --- reporting -------------------------------------------------------------------------
    def _public_corrupt(self) -> list[dict]:
        return [{k: r[k] for k in ("cid", "multihash", "size", "found_at")} for r in self.corrupt]

    def status(self) -> dict:
        """For /readyz details, the operator API and `hearth repo stat`: this process's
        scrubber if it runs here, else the one another process of the node runs (as the
        state file says), else the state it was left in."""
        if self.running or self.rate <= 0:
            view = {"state": "running" if self.running else "off", "passes": self.passes,
                    "last_pass_completed_at": self.last_pass_completed_at, "position": self.position,
                    "checked_blocks": self.checked_blocks, "checked_bytes": self.checked_bytes,
                    "corrupt_total": self.corrupt_total, "corrupt": self._public_corrupt(), "rate": self.rate}
        else:
            view = dict(self._shared_state())
            pid = view.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
                view["state"] = "running"
            else:  # nobody scrubs now: where it got to, and what this process found if it ran it
                view.update(state="stopped", pid=None, checked_blocks=self.checked_blocks,
                            checked_bytes=self.checked_bytes, corrupt_total=self.corrupt_total,
                            corrupt=self._public_corrupt(), rate=self.rate)
        last = view.get("last_pass_completed_at")
        out = {"state": view["state"], "rate_bytes_per_s": view.get("rate", self.rate),
               "passes": view.get("passes", 0), "last_pass_completed_at": _utc(last) if last else None,
               "position": view.get("position"), "checked_blocks": view.get("checked_blocks", 0),
               "checked_bytes": view.get("checked_bytes", 0), "corrupt_blocks": view.get("corrupt_total", 0),
               "corrupt": view.get("corrupt", [])}
        if view.get("pid") and view["state"] == "running" and not self.running:
            out["pid"] = view["pid"]
        return out

    def _shared_state(self) -> dict:
        """The state file as the running scrubber last wrote it (re-read at most once a second)."""
        now = time.monotonic()
        if self._shared is None or now - self._shared[0] > 1.0:
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = {}
            self._shared = (now, state if isinstance(state, dict) else {})
        return self._shared[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
