"""The anchoring service: the batcher that turns queued CIDs into Merkle roots on chain.

A background service of the leader process (gateway/app.py services_ctx, beside the pin
worker and the collector), not HTTP. Everything it knows is in the metadata store
(chain/anchor_store.py); the chain is asked, never trusted to remember for us.

State machine (a CID's row in anchor_queue, its batch's row in anchor_batches)::

    stored ──(same SQLite transaction as the record)──> queued
    queued ──(batch_interval_s since the oldest, or batch_max queued)──> batched
        the batch gets its root; its leaves are kept (anchor_leaves)
    batched ──(nonce + fees chosen, signed tx hash recorded BEFORE the send)──> batched+tx
    batched+tx ──(eth_sendRawTransaction accepted)──> submitted
    submitted ──(receipt: mined in block N, hash H recorded)──> submitted@N
    submitted@N ──(head - N + 1 >= confirmations, anchoredAt(root) == N)──> confirmed

Faults:

- RPC down (connection refused, timeouts, 5xx): the step fails, nothing in the store moves;
  retried with exponential backoff (1 s doubling to `max_backoff`); the chain is reopened
  (provider.py fails over between the rpc_url list). Uploads keep queueing meanwhile.
- Node killed at any point: on start every `batched` batch that already has a transaction
  recorded is looked up first — a receipt of any transaction ever sent for it (anchor_txs),
  or its root's Anchored event / anchoredAt — and only if none is found, the transaction is not
  pending, and its nonce is still unused, is it sent again at the SAME nonce (fees at least
  +12.5 % over the last ones, so it also replaces a copy a mempool we cannot see may hold).
  `submitted` batches are looked up the same way. So a root is never sent under two nonces
  while an earlier one may still be mined; and the contract records a root once anyway
  (a second anchoring writes and emits nothing), so the Anchored event count per root is 1.
- Transaction dropped (neither mined nor known to the node): sent again with the same nonce;
  if the nonce was taken by another transaction of the account: a fresh nonce.
- Transaction stuck (pending for `replace_after` seconds): replaced with the same nonce and
  EIP-1559 fees bumped by 12.5 % (what nodes require of a replacement), capped at
  max_fee_gwei; at the cap it waits. Every replacement is recorded before it is sent.
- Reorg: a mined batch whose block hash is no longer canonical at its height, or whose
  receipt is gone, goes back: to submitted@N' if the transaction is in another block, to
  submitted if it is still pending, else to batched (sent again: same root and Merkle paths;
  proofs handed out before name the old block and no longer verify; the API gives new ones).
  The latest 32 confirmed batches are watched until they are `reorg_window` blocks deep.
- Another chain (a new embedded dev chain after a restart, or a different network): on open,
  batches submitted or confirmed on a chain with another id or genesis hash become `stale`
  and their CIDs are queued again (anchor_store.set_chain); their old proofs are reported
  stale by the API, never valid. A dev-chain batch is stale for the API as soon as the process
  that held its chain is no longer the live leader (anchor_chain.host_pid), before the next
  leader opens its own.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from storage.cid import CID
from storage.metadata import MetadataStore

from . import anchor_store as db
from .merkle import MerkleTree
from .verify import PROOF_FORMAT, TREE_FORMAT

log = logging.getLogger("hearth.anchor")

FEE_BUMP_NUM, FEE_BUMP_DEN = 9, 8  # +12.5 %: geth and anvil want at least +10 % on both fees
DEV_NOTE = ("ephemeral dev chain (in-process, lost when the node stops): this proof only shows the node's "
            "own bookkeeping; it becomes stale at the next restart")


def hx(value) -> str | None:
    """0x hex of bytes / HexBytes / str."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    if hasattr(value, "to_0x_hex"):
        return value.to_0x_hex()
    return "0x" + bytes(value).hex()


def leaf_value(key: str) -> bytes:
    return CID.parse(key).v1().to_bytes()


class TreeCache:
    """Built trees of recent batches, by root (a 65,536-leaf tree takes ~0.5 s to build)."""

    def __init__(self, size: int = 4):
        self.size = size
        self._trees: OrderedDict[bytes, MerkleTree] = OrderedDict()

    def put(self, root: bytes, tree: MerkleTree) -> None:
        self._trees[bytes(root)] = tree
        self._trees.move_to_end(bytes(root))
        while len(self._trees) > self.size:
            self._trees.popitem(last=False)

    async def get(self, store: MetadataStore, batch: dict) -> MerkleTree:
        root = bytes(batch["root"])
        tree = self._trees.get(root)
        if tree is None:
            keys = await store.run(db.batch_keys, store, batch["id"])
            tree = await asyncio.to_thread(lambda: MerkleTree.build([leaf_value(k) for k in keys]))
            if tree.root != root:
                raise RuntimeError(f"batch {batch['id']}: its leaves no longer give its root")
            self.put(root, tree)
        else:
            self._trees.move_to_end(root)
        return tree


async def proof_for(store: MetadataStore, trees: TreeCache, key: str, batch: dict) -> dict:
    """The proof document of CIDv1 `key` in `batch` (chain fields as far as known)."""
    tree = await trees.get(store, batch)
    path = [hx(p) for p in tree.proof(leaf_value(key))]
    out = {
        "format": PROOF_FORMAT,
        "tree": TREE_FORMAT,
        "leaf": key,
        "root": hx(batch["root"]),
        "path": path,
        "chain_id": batch["chain_id"],
        "genesis_hash": batch["genesis_hash"],
        "contract": batch["contract"],
        "tx_hash": batch["tx_hash"],
        "block_number": batch["block_number"],
        "block_hash": batch["block_hash"],
        "dev": bool(batch["dev"]),
    }
    if batch["dev"]:
        out["note"] = DEV_NOTE
    return out


class Anchorer:
    """The batcher. `open_chain(chain_cfg, data_dir)` -> chain.provider.Chain (injectable for
    tests); `metrics`: gateway.metrics.Metrics or None."""

    def __init__(self, store: MetadataStore, chain_cfg: dict, data_dir: Path, *, metrics=None,
                 open_chain: Callable[..., Any] | None = None, poll: float | None = None,
                 replace_after: float = 60.0, reorg_window: int = 64, max_backoff: float = 30.0):
        self.store = store
        self.cfg = chain_cfg
        self.data_dir = Path(data_dir)
        self.batch_max = max(1, int(chain_cfg.get("batch_max", 65536)))
        self.batch_interval = max(0.0, float(chain_cfg.get("batch_interval_s", 60)))
        self.confirmations = max(1, int(chain_cfg.get("confirmations", 1)))
        gwei = chain_cfg.get("max_fee_gwei") or 0
        self.max_fee_cap = int(float(gwei) * 10**9) if gwei else None
        self.poll = poll if poll is not None else min(max(self.batch_interval / 4, 0.05), 2.0)
        self.replace_after = replace_after
        self.reorg_window = reorg_window
        self.max_backoff = max_backoff
        self._open_chain = open_chain
        self._bridge = None
        self.rpc_for_others = ""  # an RPC URL other processes may verify against (the dev chain's bridge)
        self.chain = None
        self.ident: dict | None = None
        self.trees = TreeCache()
        self.state = "stopped"  # stopped, idle (nothing to anchor, chain not opened), connecting, running, backoff
        self.state_path = self.data_dir / "run" / "anchoring.json"  # for `hearth anchor status`
        self._shown: tuple | None = None
        self.last_error: str | None = None
        self.sent = self.replacements = self.reorgs = self.steps = 0
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._latency = None
        if metrics is not None:
            self._latency = metrics.histogram(
                "hearth_anchor_enqueue_to_confirmed_seconds",
                "Seconds from a CID's enqueueing to the confirmation of the batch that anchors it.",
                buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600, 21600, 86400))

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_chain()
        self._set("stopped")

    def wake(self) -> None:
        self._wake.set()

    async def _close_chain(self) -> None:
        chain, self.chain = self.chain, None
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            await bridge.stop()
            self.rpc_for_others = ""
        if chain is not None:
            try:
                out = chain.close()
                if asyncio.iscoroutine(out):
                    await out
            except Exception:  # noqa: BLE001
                log.debug("closing the chain failed", exc_info=True)

    async def _connect(self) -> None:
        opener = self._open_chain
        if opener is None:
            from .provider import open_chain as opener
        self._set("connecting")
        # the first import of web3 / eth-tester / py-evm takes ~1 s of CPU: on a thread, not on the
        # event loop of a worker that also serves requests
        await asyncio.to_thread(_preload, self.cfg)
        chain = await opener(self.cfg, self.data_dir)
        self.chain = chain
        if chain.dev:  # other processes reach the in-process chain through a read-only loopback endpoint
            from .dev_rpc import DevRPC

            self._bridge = DevRPC(chain.w3)
            self.rpc_for_others = await self._bridge.start()
        account = chain.account.address
        contract = chain.contract.address
        # the chain's own rule (0 on the embedded dev chain: mined is enough) over the config's
        self.confirmations = max(1, int(getattr(chain, "confirmations", self.confirmations) or 0))
        if getattr(chain, "max_fee_wei", None):
            self.max_fee_cap = int(chain.max_fee_wei)
        self.ident = {"chain_id": int(chain.chain_id), "genesis_hash": hx(chain.genesis_hash), "contract": contract,
                      "account": account, "dev": bool(chain.dev), "confirmations": self.confirmations,
                      "rpc": self.rpc_for_others or getattr(chain, "rpc", "") or "",
                      "host_pid": os.getpid() if chain.dev else 0}
        result = await self.store.run(db.set_chain, self.store, self.ident)
        if chain.dev:
            log.warning("anchoring on an EPHEMERAL embedded dev chain (chain id %s, genesis %s): its anchors and "
                        "proofs are lost when the node stops; set [chain] rpc_url to anchor for real",
                        self.ident["chain_id"], self.ident["genesis_hash"])
        else:
            log.info("anchoring on chain %s (genesis %s), contract %s, account %s", self.ident["chain_id"],
                     self.ident["genesis_hash"], contract, account)
        if result["stale_batches"]:
            log.warning("%d batches were anchored on another chain: their proofs are stale; %d CIDs queued again",
                        result["stale_batches"], result["requeued"])

    async def _loop(self) -> None:
        backoff = 1.0
        while True:
            try:
                if self.chain is None:
                    if not await self.store.run(db.has_work, self.store):
                        # nothing stored yet: web3 and the chain stay unloaded (~70 MiB with the dev chain)
                        self._set("idle")
                        await self._sleep(max(self.poll, 1.0))
                        continue
                    await self._connect()
                self._set("running")
                await self.step()
                self.steps += 1
                if self.last_error:
                    log.info("anchoring works again")
                self.last_error = None
                backoff = 1.0
                wait = self.poll
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - RPC down, a busy database: nothing moved, retry
                message = f"{type(exc).__name__}: {exc}"[:500]
                if message != self.last_error:
                    log.warning("anchoring step failed (retrying in %.0f s, backoff): %s", backoff, message,
                                exc_info=log.isEnabledFor(logging.DEBUG))
                self.last_error = message
                self._set("backoff")
                wait, backoff = backoff, min(backoff * 2, self.max_backoff)
                if self.chain is not None and _is_connection_error(exc):
                    await self._close_chain()  # reopen: provider.py fails over between rpc_url entries
            await self._sleep(wait)

    def _set(self, state: str) -> None:
        """The service's state, also in run/anchoring.json (what `hearth anchor status` shows)."""
        self.state = state
        shown = (state, self.last_error if state == "backoff" else None)
        if shown == self._shown:
            return
        self._shown = shown
        try:
            import json
            import os

            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"state": shown[0], "error": shown[1], "since": time.time(), "pid": os.getpid()}))
            os.replace(tmp, self.state_path)
        except OSError:
            log.debug("cannot write %s", self.state_path, exc_info=True)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    # --- one step ----------------------------------------------------------------------------------
    async def step(self) -> None:
        """Close due batches, send what is batched, follow what is submitted, watch for reorgs."""
        await self.close_batches()
        batched = await self.store.run(db.batches_in, self.store, "batched", "submitted")
        head = None
        if batched:
            head = await self.chain.w3.eth.block_number
        for batch in batched:
            if batch["state"] == "batched":
                await self._send(batch)
            else:
                await self._follow(batch, head)
        await self._watch_confirmed(head)

    async def close_batches(self, force: bool = False) -> list[int]:
        made = []
        while True:
            q = await self.store.run(db.queue_state, self.store)
            if q["depth"] == 0:
                return made
            due = force or q["depth"] >= self.batch_max or time.time() - q["oldest"] >= self.batch_interval
            if not due:
                return made
            items = await self.store.run(db.take_queued, self.store, self.batch_max)
            tree = await asyncio.to_thread(lambda: MerkleTree.build([leaf_value(k) for _i, k in items]))
            bid = await self.store.run(db.create_batch, self.store, items, tree.root)
            self.trees.put(tree.root, tree)
            log.info("batch %d closed: %d CIDs, root %s", bid, len(items), hx(tree.root))
            made.append(bid)

    async def _lookup(self, batch: dict) -> dict | None:
        """Where the batch's root is mined, from the receipts of every transaction sent for it,
        else from the root's Anchored event: {"tx_hash", "block_number", "block_hash", "receipt"}."""
        w3 = self.chain.w3
        for tx in reversed(await self.store.run(db.batch_txs, self.store, batch["id"])):
            receipt = await _receipt(w3, tx["tx_hash"])
            if receipt is not None:
                return {"tx_hash": hx(receipt["transactionHash"]), "block_number": int(receipt["blockNumber"]),
                        "block_hash": hx(receipt["blockHash"]), "receipt": receipt}
        found = await self.chain.contract.find_anchor(bytes(batch["root"]))
        if found is not None:
            tx_hash, number, block_hash = found
            receipt = await _receipt(w3, tx_hash)
            return {"tx_hash": hx(tx_hash), "block_number": int(number), "block_hash": hx(block_hash),
                    "receipt": receipt}
        return None

    async def _send(self, batch: dict) -> None:
        chain, ident = self.chain, self.ident
        w3, account = chain.w3, chain.account
        root = bytes(batch["root"])
        found = await self._lookup(batch)  # a crash after a send, or the root anchored already
        if found is not None:
            await self._mined(batch, found)
            return
        replaying = False
        if batch["nonce"] is not None and batch["tx_hash"]:
            if batch["chain_id"] == ident["chain_id"] and await _tx_known(w3, batch["tx_hash"]):
                await self.store.run(db.mark_submitted, self.store, batch["id"])  # sent before a crash, pending
                return
            used = await w3.eth.get_transaction_count(account.address, "latest")
            if batch["nonce"] >= used:
                replaying = True  # the nonce is still free: send at that nonce again
            else:
                log.warning("batch %d: nonce %d was used by another transaction; taking a new one",
                            batch["id"], batch["nonce"])
        if replaying:
            # same nonce (only one transaction of that nonce can ever be mined); fees as the chain
            # wants them now but never below a bump of the last ones, so it also replaces a copy
            # that some mempool we cannot see may still hold
            nonce = batch["nonce"]
            max_fee, priority = await self._fees(at_least=(batch["max_fee"], batch["priority_fee"]))
        else:
            nonce = await self._next_nonce(batch["id"])
            max_fee, priority = await self._fees()
        tx = chain.contract.build_anchor_tx(root, nonce, max_fee, priority)
        signed = account.sign_transaction(tx)
        tx_hash = hx(signed.hash)
        await self.store.run(db.prepare_tx, self.store, batch["id"], ident, nonce, max_fee, priority, tx_hash)
        await self._broadcast(batch, signed, tx_hash)
        await self.store.run(db.mark_submitted, self.store, batch["id"])
        self.sent += 1
        log.info("batch %d sent: tx %s, nonce %d, max fee %s wei, tip %s wei%s", batch["id"], tx_hash, nonce,
                 max_fee, priority, " (again, same nonce)" if replaying else "")

    async def _broadcast(self, batch: dict, signed, tx_hash: str) -> None:
        try:
            await self.chain.w3.eth.send_raw_transaction(signed.raw_transaction)
        except Exception as exc:  # noqa: BLE001
            text = str(exc).lower()
            if "already known" in text or "already imported" in text or "known transaction" in text:
                return  # the node has it: as good as sent
            if "nonce too low" in text or "nonce is too low" in text:
                return  # mined already, or taken: the next step's lookup decides
            raise

    async def _next_nonce(self, batch_id: int) -> int:
        """The account's pending nonce, above every nonce our other unconfirmed batches hold."""
        ident = self.ident
        pending = await self.chain.w3.eth.get_transaction_count(ident["account"], "pending")
        held = await self.store.run(db.in_flight_nonces, self.store, ident["chain_id"], ident["genesis_hash"],
                                    ident["account"], batch_id)
        return max([pending] + [n + 1 for n in held])

    async def _fees(self, at_least: tuple[int, int] | None = None) -> tuple[int, int]:
        from .contract import suggest_fees

        max_fee, priority = await suggest_fees(self.chain.w3, self.max_fee_cap)
        if at_least is not None:
            max_fee = max(max_fee, at_least[0] * FEE_BUMP_NUM // FEE_BUMP_DEN + 1)
            priority = max(priority, at_least[1] * FEE_BUMP_NUM // FEE_BUMP_DEN + 1)
            if self.max_fee_cap is not None:
                max_fee = min(max_fee, self.max_fee_cap)
            priority = min(priority, max_fee)
        return max_fee, priority

    async def _mined(self, batch: dict, found: dict) -> None:
        receipt = found.get("receipt")
        gas_used = fee = None
        if receipt is not None:
            if int(receipt.get("status", 1)) != 1:
                log.error("batch %d: transaction %s reverted; sending the batch again", batch["id"], found["tx_hash"])
                await self.store.run(db.to_batched, self.store, batch["id"], True)
                return
            gas_used = int(receipt["gasUsed"])
            fee = gas_used * int(receipt.get("effectiveGasPrice") or 0)
        if (batch["block_hash"], batch["tx_hash"]) != (found["block_hash"], found["tx_hash"]):
            await self.store.run(db.mark_mined, self.store, batch["id"], found["tx_hash"], found["block_number"],
                                 found["block_hash"], gas_used if gas_used is not None else batch["gas_used"],
                                 fee if fee is not None else batch["fee_paid"])
            log.info("batch %d mined in block %d (%s), tx %s", batch["id"], found["block_number"],
                     found["block_hash"], found["tx_hash"])

    async def _follow(self, batch: dict, head: int) -> None:
        """A submitted batch: mined yet? confirmed? dropped? stuck?"""
        w3 = self.chain.w3
        found = await self._lookup(batch)
        if found is not None:
            await self._mined(batch, found)
            confirmations = head - found["block_number"] + 1
            if confirmations >= self.confirmations:
                # the contract must say so at that block, and the block must still be canonical
                block = await w3.eth.get_block(found["block_number"])
                if hx(block["hash"]) != found["block_hash"]:
                    return  # reorg in progress: look again next step
                at = await self.chain.contract.anchored_at(bytes(batch["root"]), found["block_number"])
                if at != found["block_number"]:
                    log.error("batch %d: anchoredAt(root) is %d, not its block %d", batch["id"], at,
                              found["block_number"])
                    return
                latencies = await self.store.run(db.mark_confirmed, self.store, batch["id"])
                if self._latency is not None:
                    for seconds in latencies:
                        self._latency.observe(seconds)
                log.info("batch %d confirmed (%d confirmations): %d CIDs anchored in block %d", batch["id"],
                         confirmations, len(latencies), found["block_number"])
            return
        if batch["block_hash"]:  # it was mined, and no longer is: a reorg
            self.reorgs += 1
            log.warning("batch %d: its transaction %s is no longer in block %s (reorg)", batch["id"],
                        batch["tx_hash"], batch["block_number"])
            await self.store.run(db.unmine, self.store, batch["id"], True)
        if batch["tx_hash"] and await _tx_known(w3, batch["tx_hash"]):
            age = time.time() - max(t["sent_at"] for t in await self.store.run(db.batch_txs, self.store, batch["id"]))
            if age >= self.replace_after:
                await self._replace(batch)
            return
        # neither mined nor pending: dropped (by the mempool, or by a reorg): send again
        log.warning("batch %d: transaction %s was dropped; sending again", batch["id"], batch["tx_hash"])
        await self.store.run(db.to_batched, self.store, batch["id"], False)
        fresh = await self.store.run(db.get_batch, self.store, batch["id"])
        await self._send(fresh)

    async def _replace(self, batch: dict) -> None:
        old = (batch["max_fee"], batch["priority_fee"])
        max_fee, priority = await self._fees(at_least=old)
        if (max_fee, priority) <= old or max_fee <= old[0]:
            log.warning("batch %d: transaction %s is stuck and its fees are at max_fee_gwei (%s wei): waiting",
                        batch["id"], batch["tx_hash"], self.max_fee_cap)
            return
        tx = self.chain.contract.build_anchor_tx(bytes(batch["root"]), batch["nonce"], max_fee, priority)
        signed = self.chain.account.sign_transaction(tx)
        tx_hash = hx(signed.hash)
        await self.store.run(db.prepare_tx, self.store, batch["id"], self.ident, batch["nonce"], max_fee, priority,
                             tx_hash, True)
        await self._broadcast(batch, signed, tx_hash)
        self.replacements += 1
        log.warning("batch %d: transaction %s stuck for %.0f s, replaced by %s (same nonce %d, max fee %d -> %d wei)",
                    batch["id"], batch["tx_hash"], self.replace_after, tx_hash, batch["nonce"], old[0], max_fee)

    async def _watch_confirmed(self, head: int | None) -> None:
        """Confirmed batches in the last reorg_window blocks: still in their block?"""
        recent = await self.store.run(db.recent_confirmed, self.store, self.ident["chain_id"],
                                      self.ident["genesis_hash"])
        if not recent:
            return
        if head is None:
            head = await self.chain.w3.eth.block_number
        hashes: dict[int, str] = {}
        for batch in recent:
            if head - batch["block_number"] >= self.reorg_window:
                continue
            n = batch["block_number"]
            if n not in hashes:
                block = await self.chain.w3.eth.get_block(n) if n <= head else None
                hashes[n] = hx(block["hash"]) if block else None
            if hashes[n] == batch["block_hash"]:
                continue
            self.reorgs += 1
            found = await self._lookup(batch)
            log.warning("batch %d: block %d (%s) is no longer canonical (reorg)%s", batch["id"], n,
                        batch["block_hash"], f"; its root is now in block {found['block_number']}" if found else "")
            pending = batch["tx_hash"] and await _tx_known(self.chain.w3, batch["tx_hash"])
            await self.store.run(db.unmine, self.store, batch["id"], bool(found or pending))
            if found:
                fresh = await self.store.run(db.get_batch, self.store, batch["id"])
                await self._mined(fresh, found)
            elif not pending:
                await self.store.run(db.to_batched, self.store, batch["id"], False)

    # --- for the API and the CLI -----------------------------------------------------------------------
    def describe(self) -> dict:
        return {"state": self.state, "error": self.last_error, "chain": self.ident, "sent": self.sent,
                "replacements": self.replacements, "reorgs": self.reorgs}


def _preload(cfg: dict) -> None:
    import web3  # noqa: F401
    import eth_account  # noqa: F401
    from web3.providers import eth_tester  # noqa: F401  (web3's tester provider, not eth-tester itself)

    urls = cfg.get("rpc_url") or "embedded"
    if urls == "embedded" or urls == ["embedded"]:
        import eth_tester as _tester  # noqa: F401
        from eth_tester import PyEVMBackend  # noqa: F401
        import eth.vm.forks  # noqa: F401  (py-evm: the bulk of it)


async def _receipt(w3, tx_hash):
    from web3.exceptions import TransactionNotFound

    try:
        return await w3.eth.get_transaction_receipt(tx_hash)
    except TransactionNotFound:
        return None


async def _tx_known(w3, tx_hash) -> bool:
    from web3.exceptions import TransactionNotFound

    try:
        return await w3.eth.get_transaction(tx_hash) is not None
    except TransactionNotFound:
        return False


def _is_connection_error(exc: BaseException) -> bool:
    import aiohttp

    if isinstance(exc, (OSError, asyncio.TimeoutError, aiohttp.ClientError)):
        return True
    name = type(exc).__name__
    return "Connection" in name or "Timeout" in name or "ProviderConnection" in name
