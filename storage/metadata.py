"""The metadata store: the one module that owns Hearth's SQLite schema.

One database file in the data dir, WAL mode, versioned migrations applied at
start-up. sqlite-utils is synchronous, so the server reaches this store through
`MetadataStore.run`, which executes on one dedicated thread (SQLite work never
runs on the event loop, and a single writer thread means no lock contention).
Writes that belong together happen inside one `with db.conn:` transaction.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlite_utils

from .cid import record_key

T = TypeVar("T")

# Each migration is a list of SQL statements; index + 1 is its version.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE tokens (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""",
        # One row per (owner, content). `key` is the CIDv1 of the root, so a CIDv0
        # and the CIDv1 of the same root name the same record.
        """CREATE TABLE content (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL,
            cid TEXT NOT NULL,
            owner TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            size INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pinned', 'removed')),
            created_at TEXT NOT NULL,
            removed_at TEXT,
            UNIQUE (owner, key)
        )""",
        "CREATE INDEX content_owner_id ON content (owner, id)",
        "CREATE INDEX content_key ON content (key)",
        # Pinning Services API pin requests.
        """CREATE TABLE pins (
            requestid TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            cid TEXT NOT NULL,
            key TEXT NOT NULL,
            name TEXT,
            status TEXT NOT NULL CHECK (status IN ('queued', 'pinning', 'pinned', 'failed')),
            created TEXT NOT NULL,
            created_ns INTEGER NOT NULL,
            origins TEXT NOT NULL DEFAULT '[]',
            meta TEXT NOT NULL DEFAULT '{}',
            info TEXT NOT NULL DEFAULT '{}',
            attempts INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX pins_owner_created ON pins (owner, created_ns)",
        "CREATE INDEX pins_status ON pins (status)",
        "CREATE INDEX pins_key ON pins (key)",
    ],
    [
        # operator tokens may also run gc and read the repo's state (/api/v1/operator/...)
        "ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'user' CHECK (scope IN ('user', 'operator'))",
    ],
    [
        # IPNS (naming/ipns/store.py keeps the queries): the best verified record per name
        # (canonical k51... text), from the routing API, the node's own keys, or Kubo
        """CREATE TABLE ipns_records (
            name TEXT PRIMARY KEY,
            record BLOB NOT NULL,
            sequence INTEGER NOT NULL,
            eol_ns INTEGER NOT NULL,
            ttl_ns INTEGER NOT NULL,
            value TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('routing', 'publish', 'republish', 'kubo')),
            updated_at TEXT NOT NULL
        )""",
        # the node's IPNS keys, private halves sealed (identity/keyring.py); owner: the token
        # name that made it, '@node' for the operator's
        """CREATE TABLE ipns_keys (
            id INTEGER PRIMARY KEY,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            type TEXT NOT NULL,
            ipns_name TEXT NOT NULL,
            public_key BLOB NOT NULL,
            sealed_private TEXT NOT NULL,
            created_at TEXT NOT NULL,
            lifetime_s INTEGER,
            republish_at_ns INTEGER,
            UNIQUE (owner, name)
        )""",
        "CREATE INDEX ipns_keys_republish ON ipns_keys (republish_at_ns)",
    ],
    [
        # On-chain anchoring (chain/anchoring.py drives the state machine; chain/anchor_store.py keeps
        # the queries). One queue row per content root: `key` is its CIDv1 (the record key), so a
        # CIDv0 and its CIDv1 are one leaf; the Merkle leaf is that CIDv1's binary form. A row is
        # written in the same transaction as the content record or the pinned pin request.
        """CREATE TABLE anchor_queue (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL UNIQUE,
            enqueued_at REAL NOT NULL,
            state TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'batched', 'confirmed')),
            batch_id INTEGER,
            stale_batch_id INTEGER
        )""",
        "CREATE INDEX anchor_queue_state ON anchor_queue (state, id)",
        "CREATE INDEX anchor_queue_batch ON anchor_queue (batch_id)",
        # one transaction per batch; tx_hash/nonce/fees: the latest transaction sent for it
        """CREATE TABLE anchor_batches (
            id INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            leaves INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('batched', 'submitted', 'confirmed', 'stale')),
            created_at REAL NOT NULL,
            tx_hash TEXT,
            nonce INTEGER,
            max_fee INTEGER,
            priority_fee INTEGER,
            submitted_at REAL,
            block_number INTEGER,
            block_hash TEXT,
            confirmed_at REAL,
            gas_used INTEGER,
            fee_paid INTEGER,
            chain_id INTEGER,
            genesis_hash TEXT,
            contract TEXT,
            account TEXT,
            dev INTEGER NOT NULL DEFAULT 0,
            replaced INTEGER NOT NULL DEFAULT 0,
            reorged INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX anchor_batches_state ON anchor_batches (state, id)",
        "CREATE INDEX anchor_batches_root ON anchor_batches (root)",
        # which leaves a batch holds (kept when its CIDs are queued again: a stale proof is still shown)
        """CREATE TABLE anchor_leaves (
            batch_id INTEGER NOT NULL,
            key TEXT NOT NULL,
            PRIMARY KEY (batch_id, key)
        ) WITHOUT ROWID""",
        "CREATE INDEX anchor_leaves_key ON anchor_leaves (key)",
        # every transaction sent for a batch (replacements too): looked up before anything is resent
        """CREATE TABLE anchor_txs (
            tx_hash TEXT PRIMARY KEY,
            batch_id INTEGER NOT NULL,
            nonce INTEGER NOT NULL,
            max_fee INTEGER NOT NULL,
            priority_fee INTEGER NOT NULL,
            sent_at REAL NOT NULL
        )""",
        "CREATE INDEX anchor_txs_batch ON anchor_txs (batch_id)",
        # the next nonce of the node's account on a chain (a chain: its id and genesis hash)
        """CREATE TABLE anchor_nonces (
            chain_id INTEGER NOT NULL,
            genesis_hash TEXT NOT NULL,
            account TEXT NOT NULL,
            next_nonce INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (chain_id, genesis_hash, account)
        )""",
        # the chain the batcher last opened (one row): what proofs are judged stale against
        """CREATE TABLE anchor_chain (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            chain_id INTEGER NOT NULL,
            genesis_hash TEXT NOT NULL,
            contract TEXT NOT NULL,
            account TEXT NOT NULL,
            dev INTEGER NOT NULL,
            confirmations INTEGER NOT NULL,
            rpc TEXT NOT NULL DEFAULT '',
            updated_at REAL NOT NULL
        )""",
        # what the node stored before anchoring existed is anchored too
        """INSERT OR IGNORE INTO anchor_queue (key, enqueued_at, state)
           SELECT key, CAST(strftime('%s', 'now') AS REAL), 'queued' FROM
           (SELECT key, MIN(id) AS o FROM content GROUP BY key
            UNION ALL SELECT key, 1e18 FROM pins WHERE status = 'pinned' GROUP BY key) ORDER BY o""",
    ],
    [
        # the process holding the embedded dev chain (0: a real chain): once it is gone, so is the
        # chain, and proofs on it are stale even before the next leader opens its own
        "ALTER TABLE anchor_chain ADD COLUMN host_pid INTEGER NOT NULL DEFAULT 0",
    ],
    [
        # ENS answers (naming/ens.py): a name's resolver and contenthash as last resolved, so the
        # cache (and a last good answer while the RPC fails) survives restarts
        """CREATE TABLE ens_cache (
            name TEXT PRIMARY KEY,
            answer TEXT NOT NULL,
            fetched_at REAL NOT NULL
        )""",
    ],
]


def utcnow() -> str:
    """RFC 3339 UTC with millisecond precision, as the PSA spec's examples."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class MetadataStore:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearth-db")
        self._local = threading.local()

    # --- plumbing ---------------------------------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=True, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT/ROLLBACK: all or nothing."""
        return _Transaction(self.db.conn)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        def _close():
            db = getattr(self._local, "db", None)
            if db is not None:
                db.conn.close()
                self._local.db = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)

    # --- schema -----------------------------------------------------------------
    def migrate(self) -> int:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            with self.transaction():
                for sql in statements:
                    db.execute(sql)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            current = version
        return current

    def schema_version(self) -> int:
        return self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0

    # --- tokens -----------------------------------------------------------------
    def create_token(self, name: str, scope: str = "user") -> str:
        if name.startswith("@"):  # reserved for owners that are not tokens ("@node": the operator's IPNS keys)
            raise ValueError("token names may not start with '@'")
        token = "hearth_" + secrets.token_urlsafe(32)
        with self.transaction():
            if self.db.execute("SELECT 1 FROM tokens WHERE name = ?", [name]).fetchone():
                raise ValueError(f"a token named {name!r} already exists")
            self.db["tokens"].insert({"name": name, "token_hash": hash_token(token), "created_at": utcnow(),
                                      "scope": scope})
        return token

    def list_tokens(self) -> list[dict]:
        return list(self.db.query("SELECT name, scope, created_at, last_used_at, revoked_at FROM tokens ORDER BY id"))

    def is_operator_token(self, token: str) -> bool:
        return self.db.execute("SELECT 1 FROM tokens WHERE token_hash = ? AND revoked_at IS NULL AND scope = 'operator'",
                               [hash_token(token)]).fetchone() is not None

    def revoke_token(self, name: str) -> bool:
        with self.transaction():
            cur = self.db.execute("UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", [utcnow(), name])
            return cur.rowcount > 0

    def check_token(self, token: str) -> str | None:
        """The token's name if it is valid and not revoked."""
        row = self.db.execute(
            "SELECT id, name, last_used_at FROM tokens WHERE token_hash = ? AND revoked_at IS NULL", [hash_token(token)]
        ).fetchone()
        if row is None:
            return None
        now = utcnow()
        if row[2] is None or row[2][:16] != now[:16]:  # touch at most once a minute
            self.db.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", [now, row[0]])
        return row[1]

    # --- content records ----------------------------------------------------------
    def put_content(self, owner: str, cid: str, name: str, size: int) -> dict:
        key = record_key(cid)
        now = utcnow()
        with self.transaction():
            existing = self.db.execute("SELECT id FROM content WHERE owner = ? AND key = ?", [owner, key]).fetchone()
            if existing:
                self.db.execute(
                    "UPDATE content SET cid = ?, name = ?, size = ?, status = 'pinned', removed_at = NULL WHERE id = ?",
                    [cid, name, size, existing[0]],
                )
                rid = existing[0]
            else:
                rid = self.db["content"].insert(
                    {"key": key, "cid": cid, "owner": owner, "name": name, "size": size, "status": "pinned", "created_at": now}
                ).last_pk
            self.enqueue_anchor(key)
        return self.get_content_by_id(rid)

    def enqueue_anchor(self, key: str) -> None:
        """Queue a stored root for on-chain anchoring (chain/anchoring.py). Call inside the
        transaction that records it. `key` is the CIDv1 (record_key): one leaf per root,
        whatever version it was stored under; a root already queued or anchored stays as it is."""
        self.db.execute("INSERT INTO anchor_queue (key, enqueued_at, state) VALUES (?, ?, 'queued') "
                        "ON CONFLICT (key) DO NOTHING", [key, time.time()])

    def get_content_by_id(self, rid: int) -> dict:
        return dict(self.db["content"].get(rid))

    def get_content(self, owner: str, cid: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM content WHERE owner = ? AND key = ?", [owner, record_key(cid)]))
        return rows[0] if rows else None

    def list_content(self, owner: str, limit: int, cursor: int | None) -> list[dict]:
        if cursor is None:
            sql, args = "SELECT * FROM content WHERE owner = ? ORDER BY id DESC LIMIT ?", [owner, limit]
        else:
            sql, args = "SELECT * FROM content WHERE owner = ? AND id < ? ORDER BY id DESC LIMIT ?", [owner, cursor, limit]
        return list(self.db.query(sql, args))

    def remove_content(self, owner: str, cid: str) -> dict | None:
        """Mark removed; the record, or None. Whether the content may be unpinned is
        decided by `is_key_wanted`, under the caller's per-content lock."""
        with self.transaction():
            row = self.get_content(owner, cid)
            if row is None:
                return None
            if row["status"] != "removed":
                self.db.execute("UPDATE content SET status = 'removed', removed_at = ? WHERE id = ?", [utcnow(), row["id"]])
        return self.get_content_by_id(row["id"])

    def is_key_wanted(self, key: str) -> bool:
        if self.db.execute("SELECT 1 FROM content WHERE key = ? AND status = 'pinned' LIMIT 1", [key]).fetchone():
            return True
        return bool(self.db.execute("SELECT 1 FROM pins WHERE key = ? AND status != 'failed' LIMIT 1", [key]).fetchone())

    # --- pin requests (Pinning Services API) ------------------------------------------
    def _new_pin_row(self, owner: str, cid: str, name: str | None, origins: list[str], meta: dict) -> dict:
        """A fresh 'queued' row. Call inside a transaction: `created` is made unique per owner
        (millisecond precision; PSA pagination by `before` needs unique values)."""
        ms = time.time_ns() // 1_000_000
        last = self.db.execute("SELECT MAX(created_ns) FROM pins WHERE owner = ?", [owner]).fetchone()[0]
        if last is not None and last // 1_000_000 >= ms:
            ms = last // 1_000_000 + 1
        created = (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        return {
            "requestid": str(uuid.uuid4()),
            "owner": owner,
            "cid": cid,
            "key": record_key(cid),
            "name": name,
            "status": "queued",
            "created": created,
            "created_ns": ms * 1_000_000,
            "origins": json.dumps(origins),
            "meta": json.dumps(meta),
            "info": "{}",
            "updated_at": utcnow(),
        }

    def create_pin(self, owner: str, cid: str, name: str | None, origins: list[str], meta: dict) -> dict:
        with self.transaction():
            row = self._new_pin_row(owner, cid, name, origins, meta)
            self.db["pins"].insert(row)
        return self._pin_row(row)

    def get_pin(self, owner: str, requestid: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM pins WHERE owner = ? AND requestid = ?", [owner, requestid]))
        return self._pin_row(rows[0]) if rows else None

    def replace_pin(self, owner: str, requestid: str, cid: str, name: str | None, origins: list[str], meta: dict) -> tuple[dict, dict] | None:
        """Atomically delete requestid and create its replacement. Returns (old, new)."""
        with self.transaction():
            old = self.get_pin(owner, requestid)
            if old is None:
                return None
            self.db.execute("DELETE FROM pins WHERE requestid = ?", [requestid])
            row = self._new_pin_row(owner, cid, name, origins, meta)
            self.db["pins"].insert(row)
        return old, self._pin_row(row)

    def delete_pin(self, owner: str, requestid: str) -> dict | None:
        """Delete a pin request; the deleted row, or None."""
        with self.transaction():
            old = self.get_pin(owner, requestid)
            if old is None:
                return None
            self.db.execute("DELETE FROM pins WHERE requestid = ?", [requestid])
        return old

    def list_pins(self, owner: str, *, cids: list[str] | None = None, name: str | None = None, match: str = "exact",
                  statuses: list[str] | None = None, before: str | None = None, after: str | None = None,
                  meta: dict | None = None, limit: int = 10) -> tuple[int, list[dict]]:
        where, args = ["owner = ?"], [owner]
        if cids:
            keys = [record_key(c) for c in cids]
            where.append(f"key IN ({','.join('?' * len(keys))})")
            args += keys
        if name is not None:
            # SQLite's lower() folds ASCII only: case-insensitive matching uses Python's casefold
            self.db.conn.create_function("hearth_fold", 1, _fold, deterministic=True)
            if match == "exact":
                where.append("name = ?")
                args.append(name)
            elif match == "iexact":
                where.append("hearth_fold(name) = ?")
                args.append(_fold(name))
            elif match == "partial":
                where.append("instr(name, ?) > 0")
                args.append(name)
            else:  # ipartial
                where.append("instr(hearth_fold(name), ?) > 0")
                args.append(_fold(name))
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if before is not None:
            where.append("created < ?")
            args.append(before)
        if after is not None:
            where.append("created > ?")
            args.append(after)
        if meta:
            for k, v in meta.items():
                # json_each, not json_extract: a JSON path cannot name every key (quotes, dots...)
                where.append("EXISTS (SELECT 1 FROM json_each(pins.meta) WHERE json_each.key = ? AND json_each.value = ? "
                             "AND json_each.type = 'text')")
                args += [k, v]
        clause = " AND ".join(where)
        count = self.db.execute(f"SELECT COUNT(*) FROM pins WHERE {clause}", args).fetchone()[0]
        rows = self.db.query(f"SELECT * FROM pins WHERE {clause} ORDER BY created_ns DESC LIMIT ?", args + [limit])
        return count, [self._pin_row(r) for r in rows]

    def pins_to_work(self, limit: int = 100) -> list[dict]:
        """Queued requests, and any left 'pinning' by a previous run (a crash mid-pin)."""
        rows = self.db.query("SELECT * FROM pins WHERE status IN ('queued', 'pinning') ORDER BY created_ns LIMIT ?", [limit])
        return [self._pin_row(r) for r in rows]

    def set_pin_status(self, requestid: str, status: str, info: dict | None = None) -> bool:
        with self.transaction():
            sets, args = ["status = ?", "updated_at = ?"], [status, utcnow()]
            if info is not None:
                sets.append("info = ?")
                args.append(json.dumps(info))
            if status == "pinning":
                sets.append("attempts = attempts + 1")
            cur = self.db.execute(f"UPDATE pins SET {', '.join(sets)} WHERE requestid = ?", args + [requestid])
            if status == "pinned" and cur.rowcount:  # the content is stored: anchor it
                self.enqueue_anchor(self.db.execute("SELECT key FROM pins WHERE requestid = ?", [requestid]).fetchone()[0])
            return cur.rowcount > 0

    def pin_status_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT status, COUNT(*) FROM pins GROUP BY status").fetchall()}

    @staticmethod
    def _pin_row(row: dict) -> dict:
        out = dict(row)
        for k in ("origins", "meta", "info"):
            if isinstance(out.get(k), str):
                out[k] = json.loads(out[k])
        return out


def _fold(text: str | None) -> str | None:
    return text.casefold() if isinstance(text, str) else text


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.nested = False

    def __enter__(self):
        self.nested = self.conn.in_transaction
        if not self.nested:
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.nested:
            return False
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return False


MAX_CURSOR_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY range
_CURSOR_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")  # base64url, unpadded
_CURSOR_MAX_LEN = 26  # 19 decimal digits


def encode_cursor(rid: int) -> str:
    if not 1 <= rid <= MAX_CURSOR_ID:
        raise ValueError(f"cursor id out of range: {rid}")
    return base64.urlsafe_b64encode(str(rid).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The row id in a cursor made by encode_cursor. Only canonical cursors are
    accepted: the id is in 1..2**63-1 (anything larger would overflow SQLite's
    integer binding) and re-encoding it gives the same string back."""
    if not isinstance(cursor, str) or not 1 <= len(cursor) <= _CURSOR_MAX_LEN or not set(cursor) <= _CURSOR_CHARS:
        raise ValueError("invalid cursor")
    try:
        digits = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except Exception:
        raise ValueError("invalid cursor") from None
    if not (1 <= len(digits) <= 19 and digits.isdigit() and digits[0] != "0"):
        raise ValueError("invalid cursor")
    value = int(digits)
    if value > MAX_CURSOR_ID or encode_cursor(value) != cursor:
        raise ValueError("invalid cursor")
    return value
