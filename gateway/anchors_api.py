"""Anchors over HTTP: a CID's anchoring status and proof, and proof verification.

    GET  /api/v1/anchors/{cid}     {"cid", "status": queued|submitted|confirmed|stale, "proof", ...}
    POST /api/v1/anchors/verify    a proof document -> {"verified", "checks", "error", "details"}

Auth: a bearer token, as every other /api/v1 read (or none with [auth] anonymous_uploads).
Anchors are public facts (anyone holding a proof can check it with `hearth anchor verify` and
any RPC), but this node's answer also says whether it stores a CID, and a verification costs
the node's RPC several calls: both stay behind the same door as the rest of the API. Not
owner-scoped: an anchor belongs to the content, not to whoever uploaded it.

Everything is read from the metadata store (chain/anchor_store.py), so any worker answers; the
batcher (chain/anchoring.py) runs in the leader. A proof whose chain is not the node's chain
any more (another genesis hash: a new embedded dev chain after a restart) is `stale`, its CID
queued again here if the batcher has not done it yet.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from aiohttp import web

from chain import anchor_store as db
from chain.anchoring import Anchorer, TreeCache, proof_for
from storage.cid import CID, InvalidCID

from .auth import require_owner
from .errors import HTTPError, bad_request
from .json_body import BadJSON, parse_json
from .keys import CONFIG, METRICS, STORE

log = logging.getLogger("hearth.anchor")

ANCHORER = web.AppKey("anchorer", Anchorer)
TREES = web.AppKey("anchor_trees", TreeCache)
READERS = web.AppKey("anchor_rpc_readers", dict)  # RPC URL -> AsyncWeb3, for POST /anchors/verify
MAX_BODY = 64 * 1024
STATUS_OF_BATCH = {"batched": "queued", "submitted": "submitted", "confirmed": "confirmed"}


def _parse_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except InvalidCID as exc:
        raise bad_request(f"invalid CID {text!r}: {exc}", "invalid_cid") from None


def _chain_json(chain: dict | None, run_dir: Path) -> dict | None:
    if chain is None:
        return None
    live = not chain["dev"] or (_leader_pid(run_dir) == chain["host_pid"] and _alive(chain["host_pid"]))
    return {"chain_id": chain["chain_id"], "genesis_hash": chain["genesis_hash"], "contract": chain["contract"],
            "dev": bool(chain["dev"]), "confirmations": chain["confirmations"], "live": live}


def _same_chain(batch: dict, chain: dict | None, run_dir: Path) -> bool:
    """Is the batch on the node's current chain? A dev-chain batch only while the process that holds
    that chain is the live leader (a restart or a takeover makes a new dev chain: until the new
    leader opens it, the old one is known to be gone)."""
    if batch["dev"]:
        return (chain is not None and chain["dev"] and (batch["chain_id"], batch["genesis_hash"]) ==
                (chain["chain_id"], chain["genesis_hash"]) and _leader_pid(run_dir) == chain["host_pid"]
                and _alive(chain["host_pid"]))
    return chain is None or (batch["chain_id"], batch["genesis_hash"]) == (chain["chain_id"], chain["genesis_hash"])


def _leader_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / "leader.lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def anchor_status(app: web.Application, cid: CID) -> dict | None:
    """The answer of GET /api/v1/anchors/{cid}; None if the node never stored the CID."""
    store, key = app[STORE], cid.v1().encode()
    info = await store.run(db.anchor_of, store, key)
    if info is None:
        return None
    chain = await store.run(db.get_chain, store)
    batch = info["batch"]
    run_dir = app[CONFIG].data_dir / "run"
    if batch is not None and batch["state"] in ("submitted", "confirmed") and not _same_chain(batch, chain, run_dir):
        # anchored on a chain that is not the node's any more: stale, and anchored again
        current = (chain["chain_id"], chain["genesis_hash"]) if chain and not batch["dev"] else (None, None)
        n = await store.run(db.requeue_stale, store, batch["id"], *current)
        if n:
            log.warning("batch %d was anchored on another chain (genesis %s): stale; %d CIDs queued again",
                        batch["id"], batch["genesis_hash"], n)
            anchorer = app.get(ANCHORER)
            if anchorer is not None:
                anchorer.wake()
        info = await store.run(db.anchor_of, store, key)
        batch = info["batch"]
    out = {"cid": key, "status": "queued", "proof": None, "enqueued_at": info["enqueued_at"], "batch": None,
           "chain": _chain_json(chain, run_dir)}
    if batch is not None:
        out["status"] = STATUS_OF_BATCH[batch["state"]]
        out["batch"] = {"id": batch["id"], "state": batch["state"], "leaves": batch["leaves"]}
        out["proof"] = await proof_for(store, app[TREES], key, batch)
    elif info["stale_batch"] is not None:
        out["status"] = "stale"
        out["proof"] = await proof_for(store, app[TREES], key, info["stale_batch"])
        out["requeued"] = True  # the CID is queued for anchoring on the current chain
    if out["status"] == "confirmed" and out["proof"]["dev"]:
        out["warning"] = "anchored on the node's ephemeral embedded dev chain: this proof becomes stale when it stops"
    return out


async def get_anchor(request: web.Request) -> web.Response:
    await require_owner(request)
    cid = _parse_cid(request.match_info["cid"])
    out = await anchor_status(request.app, cid)
    if out is None:
        raise HTTPError(404, "not_found", f"{cid} is not stored on this node: nothing is anchored for it")
    return web.json_response(out)


async def verify(request: web.Request) -> web.Response:
    await require_owner(request)
    try:
        proof = parse_json(await request.read(), max_bytes=MAX_BODY)
    except BadJSON as exc:
        raise HTTPError(exc.status, "invalid_json" if exc.status == 400 else "too_large", exc.message) from None
    if not isinstance(proof, dict):
        raise bad_request("the request body must be a proof document (a JSON object)", "invalid_json")
    raw = request.query.get("min_confirmations")
    store = request.app[STORE]
    chain = await store.run(db.get_chain, store)
    if raw is not None:
        if not raw.isdigit() or not 0 <= int(raw) <= 10_000:
            raise bad_request("min_confirmations must be an integer from 0 to 10000", "invalid_parameter")
        minimum = int(raw)
    else:
        minimum = chain["confirmations"] if chain else 1
    from chain.verify import verify_proof_document

    anchorer = request.app.get(ANCHORER)
    if anchorer is not None and anchorer.chain is not None:  # the leader: its own connection
        result = await verify_proof_document(proof, "", min_confirmations=minimum, w3=anchorer.chain.w3)
    else:
        url = _rpc_url(request.app, chain)
        if url is None:
            raise HTTPError(503, "chain_unavailable", "the node's chain is not open yet; try again shortly",
                            {"Retry-After": "5"})
        result = await verify_proof_document(proof, url, min_confirmations=minimum, w3=_reader(request.app, url))
    return web.json_response(result)


def _reader(app: web.Application, url: str):
    """One AsyncWeb3 per worker and RPC URL (its HTTP session kept), closed with the app."""
    readers = app[READERS]
    w3 = readers.get(url)
    if w3 is None:
        from web3 import AsyncHTTPProvider, AsyncWeb3

        w3 = readers[url] = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 15}))
    return w3


async def _close_readers(app: web.Application) -> None:
    for w3 in app[READERS].values():
        try:
            await w3.provider.disconnect()
        except Exception:  # noqa: BLE001
            pass
    app[READERS].clear()


def _rpc_url(app: web.Application, chain: dict | None) -> str | None:
    from chain.provider import EMBEDDED, rpc_urls

    urls = rpc_urls(app[CONFIG]["chain"]["rpc_url"] or EMBEDDED)
    if urls != [EMBEDDED]:
        return urls[0]
    rpc = (chain or {}).get("rpc") or ""
    return rpc if rpc.startswith("http://127.0.0.1:") else None  # the leader's dev chain endpoint


def setup(app: web.Application, anchorer: Anchorer | None) -> None:
    if anchorer is not None:
        app[ANCHORER] = anchorer
    app[TREES] = anchorer.trees if anchorer is not None else TreeCache()
    app[READERS] = {}
    app.on_cleanup.append(_close_readers)
    app.router.add_get("/api/v1/anchors/{cid}", get_anchor)
    app.router.add_post("/api/v1/anchors/verify", verify)


def register_metrics(app: web.Application) -> None:
    """/metrics: the queue, batches by state, gas and fees (node-wide, from the store); the
    enqueue-to-confirmed histogram is the batcher's (chain/anchoring.py), in the leader."""
    m = app[METRICS]
    depth = m.gauge("hearth_anchor_queue_depth", "CIDs queued for anchoring, not yet in a batch.", node_wide=True)
    items = m.gauge("hearth_anchor_cids", "CIDs known to the anchoring service, by state.", ["state"], node_wide=True)
    batches = m.gauge("hearth_anchor_batches", "Anchoring batches by state.", ["state"], node_wide=True)
    gas = m.counter("hearth_anchor_gas_used_total", "Gas used by mined anchoring transactions.", node_wide=True)
    fees = m.counter("hearth_anchor_fees_wei_total", "Fees paid for mined anchoring transactions, in wei.",
                     node_wide=True)
    oldest = m.gauge("hearth_anchor_oldest_queued_seconds", "Age of the oldest queued CID (0: none).", node_wide=True)

    async def collect(_m) -> None:
        import time

        store = app[STORE]
        st = await store.run(db.status, store)
        depth.set(st["queue"]["queued"])
        for state in ("queued", "batched", "confirmed"):
            items.set(st["queue"][state], state=state)
        for state, n in st["batches"].items():
            batches.set(n, state=state)
        gas.set_total(st["gas_used"])
        fees.set_total(st["fees_paid_wei"])
        q = st["queue"]["oldest_queued_at"]
        oldest.set(max(0.0, time.time() - q) if q else 0)

    m.add_collector(collect)

