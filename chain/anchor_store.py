"""The anchoring queue, batches and nonces in the metadata store (tables made by
storage/metadata.py, migration 4; the queue is written by `MetadataStore.enqueue_anchor`
in the same transaction as each content record and pinned pin request). Plain functions
over `store.db`, run on the store's thread (`await store.run(fn, store, ...)`), as
naming/ipns/store.py does. The state machine they serve is in chain/anchoring.py.

    anchor_queue   one row per content root (key = CIDv1): queued, batched (in batch_id,
                   whatever that batch's state), confirmed; stale_batch_id: the batch of an
                   anchoring on a chain that is no longer the node's (its proof is stale)
    anchor_batches root, leaves, state (batched -> submitted -> confirmed, or stale), the
                   transaction last sent for it (hash, nonce, EIP-1559 fees), where it was
                   mined (block number and hash), what it cost, and the chain it is on
    anchor_leaves  (batch, key): a batch's leaves, kept when its CIDs are queued again
    anchor_txs     every transaction ever sent for a batch (replacements too)
    anchor_nonces  the next nonce of the node's account per chain
    anchor_chain   the chain the batcher last opened (what proofs are judged against)
"""
from __future__ import annotations

import time

from storage.metadata import MetadataStore

BATCH_COLUMNS = ("id", "root", "leaves", "state", "created_at", "tx_hash", "nonce", "max_fee", "priority_fee",
                 "submitted_at", "block_number", "block_hash", "confirmed_at", "gas_used", "fee_paid", "chain_id",
                 "genesis_hash", "contract", "account", "dev", "replaced", "reorged")
CHAIN_COLUMNS = ("chain_id", "genesis_hash", "contract", "account", "dev", "confirmations", "rpc", "updated_at",
                 "host_pid")


def _batch(row) -> dict | None:
    return dict(zip(BATCH_COLUMNS, row)) if row is not None else None


def _select_batches(store: MetadataStore, where: str, args: list) -> list[dict]:
    sql = f"SELECT {', '.join(BATCH_COLUMNS)} FROM anchor_batches WHERE {where}"
    return [_batch(r) for r in store.db.execute(sql, args).fetchall()]


# --- the chain ----------------------------------------------------------------------------------
def get_chain(store: MetadataStore) -> dict | None:
    row = store.db.execute(f"SELECT {', '.join(CHAIN_COLUMNS)} FROM anchor_chain WHERE id = 1").fetchone()
    return dict(zip(CHAIN_COLUMNS, row)) if row else None


def set_chain(store: MetadataStore, ident: dict) -> dict:
    """Record the chain the batcher opened, and judge every batch against it: a batch submitted
    or confirmed on another chain (another chain id or genesis hash: a new embedded dev chain
    after a restart, or another network) is `stale` and its CIDs are queued again; a batch only
    prepared for another chain (nonce, signed transaction) is prepared again. Returns
    {"stale_batches", "requeued", "reprepared"}."""
    now = time.time()
    with store.transaction():
        store.db.execute(
            "INSERT INTO anchor_chain (id, chain_id, genesis_hash, contract, account, dev, confirmations, rpc, updated_at, "
            "host_pid) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET chain_id = excluded.chain_id, "
            "genesis_hash = excluded.genesis_hash, contract = excluded.contract, account = excluded.account, "
            "dev = excluded.dev, confirmations = excluded.confirmations, rpc = excluded.rpc, "
            "updated_at = excluded.updated_at, host_pid = excluded.host_pid",
            [ident["chain_id"], ident["genesis_hash"], ident["contract"], ident["account"], int(ident["dev"]),
             ident["confirmations"], ident.get("rpc", ""), now, int(ident.get("host_pid") or 0)])
        other = "(chain_id IS NOT ? OR genesis_hash IS NOT ?)"
        stale = [r[0] for r in store.db.execute(
            f"SELECT id FROM anchor_batches WHERE state IN ('submitted', 'confirmed') AND {other}",
            [ident["chain_id"], ident["genesis_hash"]]).fetchall()]
        requeued = 0
        for bid in stale:
            requeued += _requeue_batch(store, bid, now)
        cur = store.db.execute(
            "UPDATE anchor_batches SET tx_hash = NULL, nonce = NULL, max_fee = NULL, priority_fee = NULL, "
            f"chain_id = NULL, genesis_hash = NULL, contract = NULL, account = NULL WHERE state = 'batched' "
            f"AND chain_id IS NOT NULL AND {other}", [ident["chain_id"], ident["genesis_hash"]])
    return {"stale_batches": len(stale), "requeued": requeued, "reprepared": cur.rowcount}


def _requeue_batch(store: MetadataStore, batch_id: int, now: float) -> int:
    store.db.execute("UPDATE anchor_batches SET state = 'stale' WHERE id = ?", [batch_id])
    cur = store.db.execute("UPDATE anchor_queue SET state = 'queued', batch_id = NULL, stale_batch_id = ?, "
                           "enqueued_at = ? WHERE batch_id = ?", [batch_id, now, batch_id])
    return cur.rowcount


def requeue_stale(store: MetadataStore, batch_id: int, chain_id: int | None, genesis_hash: str | None) -> int:
    """Mark one batch stale (anchored on a chain that is not (chain_id, genesis_hash); None: on a
    dev chain whose process is gone) and queue its CIDs again, unless that already happened. The
    CIDs requeued."""
    with store.transaction():
        row = store.db.execute("SELECT state, chain_id, genesis_hash FROM anchor_batches WHERE id = ?",
                               [batch_id]).fetchone()
        if row is None or row[0] not in ("submitted", "confirmed") or (row[1], row[2]) == (chain_id, genesis_hash):
            return 0
        return _requeue_batch(store, batch_id, time.time())


def has_work(store: MetadataStore) -> bool:
    """Anything queued or batched, ever: the batcher opens the chain only then (a confirmed batch
    counts: after a restart on a new dev chain it is stale, and its CIDs are anchored again)."""
    return store.db.execute("SELECT EXISTS (SELECT 1 FROM anchor_queue)").fetchone()[0] == 1


# --- the queue ----------------------------------------------------------------------------------
def queue_state(store: MetadataStore) -> dict:
    """{"depth": queued CIDs, "oldest": enqueued_at of the oldest queued (or None)}."""
    depth, oldest = store.db.execute(
        "SELECT COUNT(*), MIN(enqueued_at) FROM anchor_queue WHERE state = 'queued'").fetchone()
    return {"depth": depth, "oldest": oldest}


def take_queued(store: MetadataStore, limit: int) -> list[tuple[int, str]]:
    """The oldest queued CIDs, (id, key), at most limit."""
    return store.db.execute("SELECT id, key FROM anchor_queue WHERE state = 'queued' ORDER BY id LIMIT ?",
                            [limit]).fetchall()


def create_batch(store: MetadataStore, items: list[tuple[int, str]], root: bytes) -> int:
    """Close a batch: the items (from take_queued, still queued: only the batcher moves queued
    rows) become `batched` in it, in one transaction."""
    now = time.time()
    with store.transaction():
        bid = store.db.execute("INSERT INTO anchor_batches (root, leaves, state, created_at) VALUES (?, ?, 'batched', ?)",
                               [root, len(items), now]).lastrowid
        store.db.conn.executemany("INSERT OR IGNORE INTO anchor_leaves (batch_id, key) VALUES (?, ?)",
                             [(bid, key) for _id, key in items])
        store.db.conn.executemany("UPDATE anchor_queue SET state = 'batched', batch_id = ? WHERE id = ? AND state = 'queued'",
                             [(bid, i) for i, _key in items])
    return bid


def batch_keys(store: MetadataStore, batch_id: int) -> list[str]:
    return [r[0] for r in store.db.execute("SELECT key FROM anchor_leaves WHERE batch_id = ?", [batch_id]).fetchall()]


def batches_in(store: MetadataStore, *states: str) -> list[dict]:
    return _select_batches(store, f"state IN ({','.join('?' * len(states))}) ORDER BY id", list(states))


def get_batch(store: MetadataStore, batch_id: int) -> dict | None:
    rows = _select_batches(store, "id = ?", [batch_id])
    return rows[0] if rows else None


def recent_confirmed(store: MetadataStore, chain_id: int, genesis_hash: str, limit: int = 32) -> list[dict]:
    """The latest confirmed batches on this chain (the ones a reorg could still touch)."""
    return _select_batches(store, "state = 'confirmed' AND chain_id = ? AND genesis_hash = ? ORDER BY id DESC LIMIT ?",
                           [chain_id, genesis_hash, limit])


def batch_txs(store: MetadataStore, batch_id: int) -> list[dict]:
    cols = ("tx_hash", "nonce", "max_fee", "priority_fee", "sent_at")
    return [dict(zip(cols, r)) for r in store.db.execute(
        f"SELECT {', '.join(cols)} FROM anchor_txs WHERE batch_id = ? ORDER BY sent_at", [batch_id]).fetchall()]


def in_flight_nonces(store: MetadataStore, chain_id: int, genesis_hash: str, account: str,
                     but: int | None = None) -> list[int]:
    """Nonces held by this account's batches (but batch `but`) not yet confirmed on this chain."""
    return [r[0] for r in store.db.execute(
        "SELECT nonce FROM anchor_batches WHERE state IN ('batched', 'submitted') AND nonce IS NOT NULL "
        "AND chain_id = ? AND genesis_hash = ? AND account = ? AND id IS NOT ?",
        [chain_id, genesis_hash, account, but]).fetchall()]


def get_nonce(store: MetadataStore, chain_id: int, genesis_hash: str, account: str) -> int | None:
    row = store.db.execute("SELECT next_nonce FROM anchor_nonces WHERE chain_id = ? AND genesis_hash = ? AND account = ?",
                           [chain_id, genesis_hash, account]).fetchone()
    return row[0] if row else None


def prepare_tx(store: MetadataStore, batch_id: int, chain: dict, nonce: int, max_fee: int, priority_fee: int,
               tx_hash: str, replacing: bool = False) -> None:
    """Record the transaction about to be sent for a batch (before it is sent: a crash after the
    send finds its hash), and the account's next nonce, in one transaction."""
    now = time.time()
    with store.transaction():
        store.db.execute(
            "UPDATE anchor_batches SET tx_hash = ?, nonce = ?, max_fee = ?, priority_fee = ?, chain_id = ?, "
            "genesis_hash = ?, contract = ?, account = ?, dev = ?, replaced = replaced + ? WHERE id = ?",
            [tx_hash, nonce, max_fee, priority_fee, chain["chain_id"], chain["genesis_hash"], chain["contract"],
             chain["account"], int(chain["dev"]), int(replacing), batch_id])
        store.db.execute("INSERT OR IGNORE INTO anchor_txs (tx_hash, batch_id, nonce, max_fee, priority_fee, sent_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [tx_hash, batch_id, nonce, max_fee, priority_fee, now])
        store.db.execute(
            "INSERT INTO anchor_nonces (chain_id, genesis_hash, account, next_nonce, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (chain_id, genesis_hash, account) DO UPDATE SET "
            "next_nonce = MAX(next_nonce, excluded.next_nonce), updated_at = excluded.updated_at",
            [chain["chain_id"], chain["genesis_hash"], chain["account"], nonce + 1, now])


def mark_submitted(store: MetadataStore, batch_id: int) -> None:
    with store.transaction():
        store.db.execute("UPDATE anchor_batches SET state = 'submitted', submitted_at = COALESCE(submitted_at, ?) "
                         "WHERE id = ? AND state = 'batched'", [time.time(), batch_id])


def mark_mined(store: MetadataStore, batch_id: int, tx_hash: str, block_number: int, block_hash: str,
               gas_used: int, fee_paid: int) -> None:
    """The batch's root is in block (number, hash) through tx_hash (still awaiting confirmations)."""
    with store.transaction():
        store.db.execute("UPDATE anchor_batches SET state = 'submitted', tx_hash = ?, block_number = ?, block_hash = ?, "
                         "gas_used = ?, fee_paid = ?, submitted_at = COALESCE(submitted_at, ?) WHERE id = ?",
                         [tx_hash, block_number, block_hash, gas_used, fee_paid, time.time(), batch_id])


def mark_confirmed(store: MetadataStore, batch_id: int) -> list[float]:
    """Confirmed: the batch's CIDs too. Returns their enqueued_at (for the latency metric)."""
    now = time.time()
    with store.transaction():
        store.db.execute("UPDATE anchor_batches SET state = 'confirmed', confirmed_at = ? WHERE id = ?", [now, batch_id])
        times = [r[0] for r in store.db.execute("SELECT enqueued_at FROM anchor_queue WHERE batch_id = ? "
                                                "AND state = 'batched'", [batch_id]).fetchall()]
        store.db.execute("UPDATE anchor_queue SET state = 'confirmed' WHERE batch_id = ?", [batch_id])
    return [now - t for t in times]


def unmine(store: MetadataStore, batch_id: int, keep_nonce: bool) -> None:
    """A reorg took the batch's transaction out of the chain (or moved it): back to `submitted`
    without a block if it may still be mined, else to `batched`, to be sent again. Its CIDs are
    `batched` again (not confirmed)."""
    with store.transaction():
        if keep_nonce:
            store.db.execute("UPDATE anchor_batches SET state = 'submitted', block_number = NULL, block_hash = NULL, "
                             "confirmed_at = NULL, reorged = reorged + 1 WHERE id = ?", [batch_id])
        else:
            # nonce and tx kept: sent again as the very same transaction if its nonce is free again
            store.db.execute("UPDATE anchor_batches SET state = 'batched', block_number = NULL, block_hash = NULL, "
                             "confirmed_at = NULL, submitted_at = NULL, reorged = reorged + 1 WHERE id = ?", [batch_id])
        store.db.execute("UPDATE anchor_queue SET state = 'batched' WHERE batch_id = ?", [batch_id])


def to_batched(store: MetadataStore, batch_id: int, clear_nonce: bool) -> None:
    """The batch's transaction is gone (dropped, or its nonce was used by another): send again."""
    with store.transaction():
        sets = "state = 'batched', block_number = NULL, block_hash = NULL, submitted_at = NULL"
        if clear_nonce:
            sets += ", nonce = NULL, tx_hash = NULL, max_fee = NULL, priority_fee = NULL"
        store.db.execute(f"UPDATE anchor_batches SET {sets} WHERE id = ?", [batch_id])


# --- reading --------------------------------------------------------------------------------------
def anchor_of(store: MetadataStore, key: str) -> dict | None:
    """What the node knows about one CIDv1's anchoring: its queue row, the batch it is in (if
    any) and the stale batch of an earlier anchoring (if any)."""
    row = store.db.execute("SELECT id, key, enqueued_at, state, batch_id, stale_batch_id FROM anchor_queue WHERE key = ?",
                           [key]).fetchone()
    if row is None:
        return None
    out = dict(zip(("id", "key", "enqueued_at", "state", "batch_id", "stale_batch_id"), row))
    out["batch"] = get_batch(store, out["batch_id"]) if out["batch_id"] else None
    out["stale_batch"] = get_batch(store, out["stale_batch_id"]) if out["stale_batch_id"] else None
    return out


def status(store: MetadataStore) -> dict:
    """What `hearth anchor status` and /metrics show."""
    db = store.db
    items = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM anchor_queue GROUP BY state").fetchall()}
    batches = {r[0]: r[1] for r in db.execute("SELECT state, COUNT(*) FROM anchor_batches GROUP BY state").fetchall()}
    gas, fees, replaced, reorged = db.execute(
        "SELECT COALESCE(SUM(gas_used), 0), COALESCE(SUM(fee_paid), 0), COALESCE(SUM(replaced), 0), "
        "COALESCE(SUM(reorged), 0) FROM anchor_batches WHERE state IN ('confirmed', 'stale')").fetchone()
    last = _select_batches(store, "state = 'confirmed' ORDER BY confirmed_at DESC LIMIT 1", [])
    oldest = db.execute("SELECT MIN(enqueued_at) FROM anchor_queue WHERE state = 'queued'").fetchone()[0]
    return {
        "queue": {"queued": items.get("queued", 0), "batched": items.get("batched", 0),
                  "confirmed": items.get("confirmed", 0), "oldest_queued_at": oldest},
        "batches": {s: batches.get(s, 0) for s in ("batched", "submitted", "confirmed", "stale")},
        "gas_used": gas, "fees_paid_wei": fees, "replacements": replaced, "reorgs": reorged,
        "last_confirmed": last[0] if last else None,
        "chain": get_chain(store),
    }
