"""The anchoring service (chain/anchoring.py), its proofs and the verifier (chain/verify.py), on
anvil (tests/support/anvil.py) and on the embedded dev chain: batches, every proof field
tampered, the contract's verify, RPC down, a real reorg, a SIGKILLed node, a new dev chain."""
from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chain import anchor_store as db
from chain.anchoring import Anchorer, TreeCache, proof_for
from chain.merkle import leaf_hash
from chain.verify import verify_proof_document
from storage.cid import CID
from storage.metadata import MetadataStore
from tests.support.anvil import DEV_KEY

ROOT = Path(__file__).resolve().parents[1]


def cids(n: int, salt: str = "") -> list[str]:
    return [str(CID.from_digest(f"{salt}{i}".encode())) for i in range(n)]


async def anvil_chain(url: str, contract: str | None = None, confirmations: int = 1, key: str = DEV_KEY):
    """A chain.provider.Chain on anvil with anvil's first dev key (no keystore file)."""
    from eth_account import Account

    from chain.contract import AnchorContract, deploy_anchor
    from chain.provider import Chain, _genesis_hash, connect

    w3 = await connect(url)
    account = Account.from_key(key)
    chain_id = int(await w3.eth.chain_id)
    if contract is None:
        contract = await deploy_anchor(w3, account)
    return Chain(w3, chain_id, await _genesis_hash(w3), False, account, AnchorContract(w3, contract, chain_id),
                 confirmations, 100 * 10**9, rpc=url, _closers=[w3.provider.disconnect])


class Harness:
    """An Anchorer over a fresh store and an anvil, opened through anvil_chain."""

    def __init__(self, tmp_path: Path, anvil, **cfg):
        self.store = MetadataStore(tmp_path / "hearth.sqlite")
        self.store.migrate()
        self.anvil = anvil
        self.contract: str | None = None
        self.confirmations = cfg.pop("confirmations", 1)
        self.cfg = {"batch_max": 65536, "batch_interval_s": 0.2, "max_fee_gwei": 100, **cfg}
        self.anchorer = Anchorer(self.store, self.cfg, tmp_path, open_chain=self._open, poll=0.05, max_backoff=0.5)

    async def _open(self, _cfg, _dir):
        chain = await anvil_chain(self.anvil.rpc_url, self.contract, self.confirmations)
        self.contract = chain.contract.address
        return chain

    def enqueue(self, keys: list[str]) -> None:
        with self.store.transaction():
            for k in keys:
                self.store.enqueue_anchor(CID.parse(k).v1().encode())

    async def until(self, predicate, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await predicate()
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out; anchorer {self.anchorer.describe()}")

    async def confirmed(self, n: int, timeout: float = 30.0):
        async def check():
            st = await self.store.run(db.status, self.store)
            return st if st["queue"]["confirmed"] >= n else None

        return await self.until(check, timeout)

    async def proof(self, key: str) -> dict:
        key = CID.parse(key).v1().encode()
        info = await self.store.run(db.anchor_of, self.store, key)
        return await proof_for(self.store, TreeCache(), key, info["batch"])

    def events(self, root_hex: str) -> int:
        """Anchored events for a root on the anvil chain, any block."""
        topic = "0x" + __import__("eth_hash.auto", fromlist=["keccak"]).keccak(b"Anchored(bytes32,address)").hex()
        logs = self.anvil.rpc("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest", "topics": [topic, root_hex]}])
        return len(logs)

    async def close(self):
        await self.anchorer.stop()
        self.store.close()


@pytest.fixture
async def harness(tmp_path, anvil):
    made = []

    def make(**cfg):
        h = Harness(tmp_path / f"h{len(made)}", anvil, **cfg)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()


async def test_batch_of_one_and_its_proof(harness, anvil):
    h = harness()
    [key] = cids(1)
    h.enqueue([key])
    await h.anchorer.start()
    await h.confirmed(1)
    proof = await h.proof(key)
    assert proof["path"] == [] and proof["leaf"] == key and proof["block_number"] and proof["dev"] is False
    assert proof["root"] == "0x" + leaf_hash(CID.parse(key).to_bytes()).hex()
    result = await verify_proof_document(proof, anvil.rpc_url)
    assert result["verified"], result
    assert h.events(proof["root"]) == 1
