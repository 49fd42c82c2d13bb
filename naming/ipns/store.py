"""IPNS records and keys in the metadata store (tables made by storage/metadata.py,
migration 3). Plain functions over `store.db`, run on the store's thread
(`await store.run(fn, store, ...)`), as storage/reconcile.py does.

    ipns_records  one row per name: the best record this node has (received through
                  the routing API, published with its own keys, or found by Kubo), kept
                  verified. A record replaces the row only if it is newer: a higher
                  sequence, or the same sequence with a later EOL (boxo's order); an
                  expired row no longer blocks an older sequence.
    ipns_keys     the node's IPNS keys: owner (the token name that created it; "@node"
                  for the operator's), name, type, public key, the sealed private key
                  (identity/keyring.py), and what the republisher needs (the lifetime
                  of the last publish and when to sign again).
"""
from __future__ import annotations

import time

from storage.metadata import MetadataStore, utcnow

from .record import Record, RecordInvalid, format_rfc3339_ns

NODE_OWNER = "@node"  # keys made by the operator (CLI, operator.key); token names cannot start with "@"
SELF = "self"  # the node's peer key (gateway/peer_id.py), as Kubo's `self`


# --- records ----------------------------------------------------------------------------------
def get_record(store: MetadataStore, name: str) -> dict | None:
    row = store.db.execute("SELECT name, record, sequence, eol_ns, ttl_ns, value, source, updated_at "
                           "FROM ipns_records WHERE name = ?", [name]).fetchone()
    if row is None:
        return None
    return dict(zip(("name", "record", "sequence", "eol_ns", "ttl_ns", "value", "source", "updated_at"), row))


def offer_record(store: MetadataStore, name: str, record: Record, source: str, now_ns: int | None = None) -> str:
    """Keep `record` (verified for `name`) if it is newer than the stored one:
    "stored", or "unchanged" for the very record already kept. RecordInvalid("sequence")
    if the stored, unexpired record is newer or as new."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    with store.transaction():
        current = get_record(store, name)
        if current is not None and current["eol_ns"] > now_ns:
            if current["record"] == record.raw:
                return "unchanged"
            if (record.sequence, record.eol_ns) <= (current["sequence"], current["eol_ns"]):
                raise RecordInvalid(
                    "sequence", f"this node has a newer record for {name} (sequence {current['sequence']}, valid "
                                f"until {format_rfc3339_ns(current['eol_ns'])}); a record must have a higher "
                                f"sequence, or the same sequence and a later EOL, than {record.sequence}")
        _write(store, name, record, source)
    return "stored"


def _write(store: MetadataStore, name: str, record: Record, source: str) -> None:
    store.db.execute(
        "INSERT INTO ipns_records (name, record, sequence, eol_ns, ttl_ns, value, source, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET record = excluded.record, "
        "sequence = excluded.sequence, eol_ns = excluded.eol_ns, ttl_ns = excluded.ttl_ns, value = excluded.value, "
        "source = excluded.source, updated_at = excluded.updated_at",
        [name, record.raw, record.sequence, record.eol_ns, record.ttl_ns, record.value_text, source, utcnow()])


def record_counts(store: MetadataStore, now_ns: int | None = None) -> dict:
    now_ns = time.time_ns() if now_ns is None else now_ns
    valid, expired = store.db.execute("SELECT SUM(eol_ns > ?), SUM(eol_ns <= ?) FROM ipns_records",
                                      [now_ns, now_ns]).fetchone()
    return {"valid": valid or 0, "expired": expired or 0}


# --- keys -------------------------------------------------------------------------------------
_KEY_COLUMNS = ("id", "owner", "name", "type", "ipns_name", "public_key", "sealed_private", "created_at",
                "lifetime_s", "republish_at_ns")


def _key_row(row) -> dict | None:
    return dict(zip(_KEY_COLUMNS, row)) if row is not None else None


def insert_key(store: MetadataStore, owner: str, name: str, key_type: str, ipns_name: str, public_key: bytes,
               sealed_private: str) -> dict:
    with store.transaction():
        if store.db.execute("SELECT 1 FROM ipns_keys WHERE owner = ? AND name = ?", [owner, name]).fetchone():
            raise ValueError(f"a key named {name!r} already exists")
        store.db.execute(
            "INSERT INTO ipns_keys (owner, name, type, ipns_name, public_key, sealed_private, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", [owner, name, key_type, ipns_name, public_key, sealed_private, utcnow()])
    return get_key(store, owner, name)


def get_key(store: MetadataStore, owner: str, name: str) -> dict | None:
    return _key_row(store.db.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM ipns_keys WHERE owner = ? AND name = ?",
                                     [owner, name]).fetchone())


def list_keys(store: MetadataStore, owner: str | None = None) -> list[dict]:
    sql = f"SELECT {', '.join(_KEY_COLUMNS)} FROM ipns_keys"
    args: list = []
    if owner is not None:
        sql += " WHERE owner = ?"
        args.append(owner)
    return [_key_row(r) for r in store.db.execute(sql + " ORDER BY owner, name", args)]


def reseal_key(store: MetadataStore, key_id: int, sealed_private: str) -> None:
    store.db.execute("UPDATE ipns_keys SET sealed_private = ? WHERE id = ?", [sealed_private, key_id])


def set_republish(store: MetadataStore, key_id: int, lifetime_s: int, republish_at_ns: int) -> None:
    store.db.execute("UPDATE ipns_keys SET lifetime_s = ?, republish_at_ns = ? WHERE id = ?",
                     [lifetime_s, republish_at_ns, key_id])


def due_keys(store: MetadataStore, now_ns: int, limit: int = 100) -> list[dict]:
    return [_key_row(r) for r in store.db.execute(
        f"SELECT {', '.join(_KEY_COLUMNS)} FROM ipns_keys WHERE republish_at_ns IS NOT NULL AND republish_at_ns <= ? "
        "ORDER BY republish_at_ns LIMIT ?", [now_ns, limit])]


def next_republish_ns(store: MetadataStore) -> int | None:
    return store.db.execute("SELECT MIN(republish_at_ns) FROM ipns_keys").fetchone()[0]
