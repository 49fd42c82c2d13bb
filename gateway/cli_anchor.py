"""`hearth anchor verify PROOF.json --rpc URL` and `hearth anchor status` (hooked in by
gateway/cli_chain.py).

verify needs nothing from a node or its database: the proof document and an RPC URL of the
chain it names (chain/verify.py). status reads the data dir's metadata store (safe beside a
running node: SQLite WAL).
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

from .config import Config


def add_anchor_parsers(asub, common) -> None:
    verify = asub.add_parser("verify", help="check an anchor proof (from GET /api/v1/anchors/{cid}) against a chain: "
                                            "Merkle path, chain id and genesis, anchoredAt(root), block, confirmations; "
                                            "exit 0 if verified, 1 if not")
    verify.add_argument("proof", metavar="PROOF.json", help="the proof document, or the whole GET /api/v1/anchors "
                                                            "answer (its \"proof\" is used); - for stdin")
    verify.add_argument("--rpc", metavar="URL", required=True, help="an RPC URL of the proof's chain")
    verify.add_argument("--min-confirmations", type=int, default=1, metavar="N", help="confirmations wanted (1)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(anchor_handler=cmd_verify)
    common(verify)
    status = asub.add_parser("status", help="the anchoring queue, batches, last confirmed batch, and the chain "
                                            "(dev or not), from the data dir")
    status.add_argument("--json", action="store_true")
    status.set_defaults(anchor_handler=cmd_status)
    common(status)


def cmd_verify(args, config: Config) -> int:
    from chain.verify import verify_proof_document

    try:
        text = sys.stdin.read() if args.proof == "-" else open(args.proof, encoding="utf-8").read()
        doc = json.loads(text)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the proof: {exc}", file=sys.stderr)
        return 2
    if isinstance(doc, dict) and isinstance(doc.get("proof"), dict) and "status" in doc:
        doc = doc["proof"]  # the whole API answer
    result = asyncio.run(verify_proof_document(doc, args.rpc, min_confirmations=args.min_confirmations))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, ok in result["checks"].items():
            print(f"{name:<14} {'ok' if ok else 'FAILED' if ok is False else '-'}")
        d = result["details"]
        if "confirmations" in d:
            print(f"{'block':<14} {doc.get('block_number')} ({d['confirmations']} confirmations, head {d.get('head')})")
        if isinstance(doc, dict) and doc.get("dev"):
            print("note           the proof says: ephemeral embedded dev chain")
        print("verified" if result["verified"] else f"NOT verified: {result['error']}")
    return 0 if result["verified"] else 1


def _ago(t: float | None) -> str:
    if not t:
        return "-"
    return f"{max(0.0, time.time() - t):.0f} s ago"


def cmd_status(args, config: Config) -> int:
    from chain import anchor_store as db
    from storage.metadata import MetadataStore

    store = MetadataStore(config.data_dir / "hearth.sqlite")
    try:
        store.migrate()
        st = db.status(store)
    finally:
        store.close()
    last = st["last_confirmed"]
    if last is not None:
        last = {k: (("0x" + bytes(v).hex()) if isinstance(v, (bytes, memoryview)) else v) for k, v in last.items()}
        st["last_confirmed"] = last
    try:
        st["service"] = json.loads((config.data_dir / "run" / "anchoring.json").read_text())
    except (OSError, ValueError):
        st["service"] = None
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    svc = st["service"]
    if svc is not None:
        line = f"{svc['state']} since {_ago(svc['since'])} (pid {svc['pid']})"
        print(f"service         {line}" + (f": {svc['error']}" if svc.get("error") else ""))
    chain = st["chain"]
    q, b = st["queue"], st["batches"]
    if chain is None:
        print("chain           not opened yet (the node has not started its anchoring service)")
    else:
        kind = "EPHEMERAL embedded dev chain (in the node's process; lost when it stops)" if chain["dev"] else "rpc"
        print(f"chain           {chain['chain_id']} genesis {chain['genesis_hash']} ({kind})")
        print(f"contract        {chain['contract']}, account {chain['account']}, {chain['confirmations']} confirmations")
        if chain["dev"] and chain["rpc"]:
            print(f"dev chain rpc   {chain['rpc']} (read-only, while the node runs)")
    print(f"queue           {q['queued']} queued (oldest {_ago(q['oldest_queued_at'])}), {q['batched']} in batches, "
          f"{q['confirmed']} confirmed")
    print(f"batches         {b['batched']} batched, {b['submitted']} submitted, {b['confirmed']} confirmed, "
          f"{b['stale']} stale")
    print(f"spent           {st['gas_used']} gas, {st['fees_paid_wei'] / 1e18:.9f} ETH "
          f"({st['replacements']} replacements, {st['reorgs']} reorgs)")
    if last:
        print(f"last confirmed  batch {last['id']}: {last['leaves']} CIDs, block {last['block_number']} "
              f"({last['block_hash']}), tx {last['tx_hash']}, {_ago(last['confirmed_at'])}")
    else:
        print("last confirmed  -")
    return 0
