"""The republisher: a background service (leader worker only, gateway/app.py
services_ctx) that keeps the node's own records from expiring. Each key's record
is signed again (same value and sequence, a new EOL `lifetime` ahead) once half of
its lifetime has passed. It wakes when the earliest republish time comes, and at
least every `poll` seconds (a worker that is not the leader may have published).
"""
from __future__ import annotations

import asyncio
import logging
import time

from storage.metadata import MetadataStore

from . import store as db
from .keystore import Keystore

log = logging.getLogger("hearth.ipns")


class Republisher:
    def __init__(self, store: MetadataStore, keystore: Keystore, poll: float = 60.0):
        self.store = store
        self.keystore = keystore
        self.poll = poll
        self.runs = 0
        self.republished = 0
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A record was published in this process: look at the schedule again."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run_once(self) -> list[str]:
        names = await self.store.run(self.keystore.republish_due, self.store)
        self.runs += 1
        self.republished += len(names)
        for name in names:
            log.debug("republished the IPNS record of %s", name)
        return names

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
                nxt = await self.store.run(db.next_republish_ns, self.store)
            except asyncio.CancelledError:
                raise
            except Exception:  # a key that cannot be opened, a busy database: try again later
                log.exception("IPNS republishing failed; retrying in %s s", self.poll)
                nxt = None
            wait = self.poll
            if nxt is not None:
                wait = min(wait, max(0.05, (nxt - time.time_ns()) / 1e9))
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass
