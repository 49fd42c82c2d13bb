"""The pin index: which roots are pinned, recursively or directly.

Stored in SQLite (stdlib ``sqlite3``, ``data_dir/pins.sqlite``), chosen over a
JSON file because each pin/unpin is one small atomic, durable transaction
(WAL journal) that survives a crash mid-write, without rewriting the whole index
on every change, and lookups stay fast with many pins. Only the pin roots are
stored; "indirect" pins are derived by walking the DAG (gc's mark phase).

Keys are the binary CID, so a CIDv0 and a CIDv1 of the same root are distinct
pins (as in Kubo); gc works on multihashes, so either protects the blocks.

All methods block: call them through ``asyncio.to_thread``.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..cid import CID

RECURSIVE = "recursive"
DIRECT = "direct"


class PinIndex:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS pins (cid BLOB PRIMARY KEY, type TEXT NOT NULL)")

    def add(self, cids: list[CID], type_: str) -> None:
        """Insert pins; a recursive pin replaces a direct one, never the reverse."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for cid in cids:
                    key = cid.to_bytes()
                    if type_ == DIRECT:
                        self._db.execute("INSERT OR IGNORE INTO pins (cid, type) VALUES (?, ?)", (key, DIRECT))
                    else:
                        self._db.execute("INSERT OR REPLACE INTO pins (cid, type) VALUES (?, ?)", (key, RECURSIVE))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove(self, cid: CID) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM pins WHERE cid = ?", (cid.to_bytes(),))
            return cur.rowcount > 0

    def get(self, cid: CID) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT type FROM pins WHERE cid = ?", (cid.to_bytes(),)).fetchone()
        return row[0] if row else None

    def all(self) -> list[tuple[CID, str]]:
        with self._lock:
            rows = self._db.execute("SELECT cid, type FROM pins ORDER BY rowid").fetchall()
        return [(CID.from_bytes(bytes(k)), t) for k, t in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM pins").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
