"""Start-up reconciliation: make the engine's pins and the metadata store agree.

A crash can leave them apart: an upload's add pins its root in the engine before
the content record is written, so a crash in between leaves a pin that no API
can see or remove (the client never got its 201, so nothing acknowledged is
lost by dropping it). Blocks can also go missing under a record (a disk
replaced, a Kubo repo reset). At start-up, before the server accepts requests
(or, if the engine is down then, as soon as it is back):

* a pin that no live content record and no pin request wants is removed (its
  blocks become garbage for the next gc), and logged;
* a live content record, or a 'pinned' pin request, whose content has no pin is
  pinned again if its blocks are all here; a pin request whose blocks are gone
  goes back to 'queued' (the pin worker fetches it again if it can);
* a content record whose blocks are gone is reported: in the log, on /readyz and
  by `hearth repo verify`. Its record stays: the owner may upload it again.

Queued and in-progress pin requests are left to the pin worker.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field

from .cid import CID, record_key
from .engine import BlockNotFound, EngineError, StorageEngine
from .metadata import MetadataStore
from .pin_worker import PinWorker

log = logging.getLogger("hearth.reconcile")

REPORT_LIMIT = 100  # CIDs listed in a report; counts are always complete


@dataclass
class ReconcileReport:
    finished_at: float = 0.0
    seconds: float = 0.0
    engine_pins: int = 0
    records: int = 0
    removed_pins: list[str] = field(default_factory=list)
    repinned: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # CIDs of live records whose blocks are gone
    counts: dict[str, int] = field(default_factory=lambda: {"removed_pins": 0, "repinned": 0, "requeued": 0,
                                                            "missing": 0})

    def add(self, what: str, cid: str) -> None:
        self.counts[what] += 1
        items = getattr(self, what)
        if len(items) < REPORT_LIMIT:
            items.append(cid)

    def as_json(self) -> dict:
        return asdict(self)


# --- queries (on the store's thread) ---------------------------------------------------------
def _wanted_keys(store: MetadataStore) -> set[str]:
    rows = store.db.execute("SELECT key FROM content WHERE status = 'pinned' "
                            "UNION SELECT key FROM pins WHERE status != 'failed'").fetchall()
    return {r[0] for r in rows}


def _live_content_cids(store: MetadataStore) -> list[str]:
    """One CID per live content key (several owners may hold the same content)."""
    return [r[0] for r in store.db.execute("SELECT MIN(cid) FROM content WHERE status = 'pinned' GROUP BY key")]


def _pinned_requests(store: MetadataStore) -> list[dict]:
    return [dict(zip(("requestid", "cid", "key"), r)) for r in
            store.db.execute("SELECT requestid, cid, key FROM pins WHERE status = 'pinned' ORDER BY created_ns")]


async def reconcile(store: MetadataStore, engine: StorageEngine, worker: PinWorker) -> ReconcileReport:
    started = time.monotonic()
    report = ReconcileReport()
    pinned_keys: dict[str, str] = {}  # key -> a pinned CID spelling
    async for pin in engine.pins():
        if pin.type in ("recursive", "direct"):
            pinned_keys.setdefault(record_key(pin.cid), str(pin.cid))
    report.engine_pins = len(pinned_keys)

    # pins that nothing wants: release() re-checks under the content's lock
    wanted = await store.run(_wanted_keys, store)
    for key, cid in pinned_keys.items():
        if key not in wanted:
            await worker.release(cid, key)
            report.add("removed_pins", cid)
            log.warning("removed pin %s: no content record or pin request wants it (an interrupted upload?)", cid)

    # what is wanted but not pinned
    records = await store.run(_live_content_cids, store)
    report.records = len(records)
    for cid in records:
        key = record_key(cid)
        if key in pinned_keys:
            continue
        async with worker.key_lock(key):
            try:
                await engine.pin(CID.parse(cid), recursive=True, fetch=False)
            except BlockNotFound:
                report.add("missing", cid)
                log.error("content %s has a record but its blocks are missing from the store", cid)
                continue
        pinned_keys[key] = cid
        report.add("repinned", cid)
        log.warning("pinned %s again: its record was live but the engine had no pin", cid)

    for row in await store.run(_pinned_requests, store):
        key = row["key"]
        if key in pinned_keys:
            continue
        async with worker.key_lock(key):
            try:
                await engine.pin(CID.parse(row["cid"]), recursive=True, fetch=False)
                pinned_keys[key] = row["cid"]
                report.add("repinned", row["cid"])
                log.warning("pinned %s again for pin request %s: the engine had no pin", row["cid"], row["requestid"])
            except BlockNotFound:
                await store.run(store.set_pin_status, row["requestid"], "queued",
                                {"status_details": "content went missing from the store; fetching it again"})
                report.add("requeued", row["cid"])
                log.warning("pin request %s for %s is queued again: its blocks are missing", row["requestid"],
                            row["cid"])
    report.finished_at = time.time()
    report.seconds = round(time.monotonic() - started, 3)
    changes = {k: v for k, v in report.counts.items() if v}
    log.log(logging.INFO if changes else logging.DEBUG, "reconciled %d engine pins with %d live records in %.2f s%s",
            report.engine_pins, report.records, report.seconds, f": {changes}" if changes else "")
    worker.wake()
    return report


class Reconciler:
    """Runs reconcile() once at start-up; if the engine is down then, retries in the
    background until it is back. `state` and `report` are what /readyz shows."""

    RETRY = 5.0

    def __init__(self, store: MetadataStore, engine: StorageEngine, worker: PinWorker,
                 report_path: Path | None = None):
        self.store, self.engine, self.worker = store, engine, worker
        self.state = "pending"
        self.report: ReconcileReport | None = None
        self.report_path = Path(report_path) if report_path is not None else None  # for the other workers
        self._task = None

    async def run(self) -> bool:
        self.state = "running"
        try:
            self.report = await reconcile(self.store, self.engine, self.worker)
        except EngineError as exc:
            self.state = "waiting for the storage engine"
            log.warning("reconciliation postponed: storage engine unavailable: %s", exc)
            return False
        self.state = "done"
        if self.report_path is not None:
            await asyncio.to_thread(self._write, json.dumps({"state": self.state, **self.report.as_json()}))
        return True

    def _write(self, text: str) -> None:
        tmp = self.report_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.report_path)

    async def shared_report(self) -> tuple[str, dict | None]:
        """(state, report) of the node: this process's, or the one the leader wrote."""
        if self.report is not None or self.report_path is None:
            return self.state, self.report.as_json() if self.report else None
        try:
            data = json.loads(await asyncio.to_thread(self.report_path.read_text))
        except (OSError, ValueError):
            return self.state, None
        return data.pop("state", "done"), data

    async def start(self) -> None:
        if not await self.run():
            async def retry():
                while not await self.run():
                    await asyncio.sleep(self.RETRY)

            self._task = asyncio.ensure_future(retry())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
