"""The anchoring service end to end on anvil: CIDs queued in the metadata store (as uploads queue
them), the batcher (chain/anchoring.py) closes one batch, sends it, awaits 1 confirmation.

    .venv/bin/python bench/bench_anchoring.py [--sizes 1,1000,65536] [--json out.json]

Per size: seconds from enqueue to confirmed (all CIDs), CIDs per second, gas of the batch and per
CID, the proof (bytes of its path), a proof for the API (cold: tree rebuilt from the store; warm:
cached), the off-chain verification (Merkle path only) and the full verification
(verify_proof_document: 6 checks over the RPC), and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chain import anchor_store as db  # noqa: E402
from chain.anchoring import Anchorer, TreeCache, proof_for  # noqa: E402
from chain.merkle import leaf_hash, verify_proof  # noqa: E402
from chain.verify import verify_proof_document  # noqa: E402
from storage.cid import CID  # noqa: E402
from storage.metadata import MetadataStore  # noqa: E402
from tests.support.anvil import DEV_KEY, Anvil  # noqa: E402


async def chain_on(url: str, contract: str | None):
    from eth_account import Account

    from chain.contract import AnchorContract, deploy_anchor
    from chain.provider import Chain, _genesis_hash, connect

    w3 = await connect(url)
    account = Account.from_key(DEV_KEY)
    chain_id = int(await w3.eth.chain_id)
    contract = contract or await deploy_anchor(w3, account)
    return Chain(w3, chain_id, await _genesis_hash(w3), False, account, AnchorContract(w3, contract, chain_id), 1,
                 100 * 10**9, rpc=url, _closers=[w3.provider.disconnect])


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def one(size: int, anvil: Anvil, workdir: Path) -> dict:
    store = MetadataStore(workdir / f"s{size}.sqlite")
    store.migrate()
    keys = [CID.from_digest(f"bench-{size}-{i}".encode()).encode() for i in range(size)]
    contract = {}

    async def opener(_cfg, _dir):
        c = await chain_on(anvil.rpc_url, contract.get("a"))
        contract["a"] = c.contract.address
        return c

    # the chain opened (contract deployed) before the clock starts
    await (await opener(None, None)).close()
    with store.transaction():
        for k in keys:
            store.enqueue_anchor(k)
    anchorer = Anchorer(store, {"batch_max": max(size, 1), "batch_interval_s": 0}, workdir, open_chain=opener,
                        poll=0.02)
    started = time.perf_counter()
    await anchorer.start()
    while True:
        st = await store.run(db.status, store)
        if st["queue"]["confirmed"] == size:
            break
        await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    info = await store.run(db.anchor_of, store, keys[size // 2])
    t = time.perf_counter()
    proof = await proof_for(store, TreeCache(), keys[size // 2], info["batch"])
    cold = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(100):
        await proof_for(store, anchorer.trees, keys[size // 2], info["batch"])
    warm = (time.perf_counter() - t) / 100
    root = bytes.fromhex(proof["root"][2:])
    path = [bytes.fromhex(p[2:]) for p in proof["path"]]
    t = time.perf_counter()
    for _ in range(1000):
        assert verify_proof(root, leaf_hash(CID.parse(proof["leaf"]).to_bytes()), path)
    offchain = (time.perf_counter() - t) / 1000
    t = time.perf_counter()
    result = await verify_proof_document(proof, anvil.rpc_url)
    full = time.perf_counter() - t
    assert result["verified"], result
    await anchorer.stop()
    store.close()
    return {"cids": size, "enqueue_to_confirmed_s": round(took, 3), "cids_per_s": round(size / took, 1),
            "gas": st["gas_used"], "gas_per_cid": round(st["gas_used"] / size, 3),
            "proof_path_bytes": 32 * len(proof["path"]), "proof_json_bytes": len(json.dumps(proof)),
            "proof_cold_ms": round(cold * 1000, 2), "proof_warm_ms": round(warm * 1000, 3),
            "verify_offchain_us": round(offchain * 1e6, 1), "verify_full_ms": round(full * 1000, 1),
            "peak_rss_mib": round(rss_mib(), 1)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,1000,65536")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in args.sizes.split(",")]:
            anvil = Anvil().start()
            try:
                rows.append(await one(size, anvil, Path(tmp)))
            finally:
                anvil.cleanup()
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
