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


TAMPER = [  # field, new value (a function of the proof), the check that must fail
    ("format", lambda p: "hearth-anchor-proof/2", "format"),
    ("tree", lambda p: "sha256 tree", "format"),
    ("leaf", lambda p: str(CID.from_digest(b"not in the batch")), "path"),
    ("root", lambda p: "0x" + "ab" * 32, "path"),
    ("path", lambda p: ["0x" + "cd" * 32] + p["path"][1:], "path"),
    ("path", lambda p: p["path"] + ["0x" + "cd" * 32], "path"),
    ("chain_id", lambda p: p["chain_id"] + 1, "chain"),
    ("genesis_hash", lambda p: "0x" + "11" * 32, "chain"),
    ("contract", lambda p: "0x" + "22" * 20, "root_on_chain"),
    ("block_number", lambda p: p["block_number"] - 1, "root_on_chain"),
    ("block_number", lambda p: p["block_number"] + 1000, "root_on_chain"),
    ("tx_hash", lambda p: "0x" + "33" * 32, "block"),
    ("block_hash", lambda p: "0x" + "44" * 32, "block"),
    ("dev", lambda p: not p["dev"], "chain"),
]


async def test_every_field_tampered_fails_with_its_reason(harness, anvil):
    h = harness()
    keys = cids(5, "tamper")
    h.enqueue(keys)
    await h.anchorer.start()
    await h.confirmed(5)
    proof = await h.proof(keys[2])
    assert len(proof["path"]) >= 2
    good = await verify_proof_document(proof, anvil.rpc_url)
    assert good["verified"] and good["error"] is None and all(good["checks"].values()), good
    seen = set()
    for field, change, check in TAMPER:
        bad = copy.deepcopy(proof)
        bad[field] = change(proof)
        result = await verify_proof_document(bad, anvil.rpc_url)
        assert not result["verified"], (field, result)
        assert result["checks"][check] is False, (field, result)
        assert result["error"].startswith(f"{check}: "), (field, result)
        seen.add(field)
    assert seen == set(proof)  # (a dev proof's `note` is the node's words, not checked)
    # too few confirmations: the block is the head
    result = await verify_proof_document(proof, anvil.rpc_url, min_confirmations=5)
    assert result["checks"]["confirmations"] is False and result["error"].startswith("confirmations: ")
    anvil.mine(4)
    assert (await verify_proof_document(proof, anvil.rpc_url, min_confirmations=5))["verified"]
    # wrong RPC: nothing listening
    result = await verify_proof_document(proof, "http://127.0.0.1:9")
    assert not result["verified"] and result["error"].startswith("chain: RPC error")


async def test_batch_of_1000_checked_by_the_contract(harness, anvil):
    h = harness()
    keys = cids(1000, "k")
    h.enqueue(keys)
    started = time.monotonic()
    await h.anchorer.start()
    st = await h.confirmed(1000)
    assert st["batches"]["confirmed"] == 1 and st["queue"]["queued"] == 0
    chain = h.anchorer.chain
    for key in keys[::97]:
        proof = await h.proof(key)
        root, path = bytes.fromhex(proof["root"][2:]), [bytes.fromhex(p[2:]) for p in proof["path"]]
        leaf = leaf_hash(CID.parse(key).to_bytes())
        assert len(path) == 10
        assert await chain.contract.verify(path, root, leaf)
        assert await chain.contract.verify_anchored(path, root, leaf) == proof["block_number"]
        assert not await chain.contract.verify(path, root, leaf_hash(b"other"))
        assert (await verify_proof_document(proof, anvil.rpc_url))["verified"]
    assert h.events(proof["root"]) == 1
    print(f"1,000 CIDs enqueued -> confirmed in {time.monotonic() - started:.2f} s")


@pytest.mark.skipif(os.environ.get("HEARTH_SLOW_TESTS") == "0", reason="HEARTH_SLOW_TESTS=0")
async def test_batch_of_65536(harness, anvil):
    h = harness(batch_max=65536)
    keys = cids(65536, "big")
    h.enqueue(keys)
    started = time.monotonic()
    await h.anchorer.start()
    st = await h.confirmed(65536, timeout=120)
    took = time.monotonic() - started
    assert st["batches"]["confirmed"] == 1
    proof = await h.proof(keys[12345])
    assert len(proof["path"]) == 16
    assert (await verify_proof_document(proof, anvil.rpc_url))["verified"]
    assert h.events(proof["root"]) == 1
    print(f"65,536 CIDs enqueued -> confirmed in {took:.2f} s; gas {st['gas_used']}")


async def test_batches_close_at_batch_max(harness, anvil):
    h = harness(batch_max=100, batch_interval_s=3600)
    h.enqueue(cids(250, "max"))
    await h.anchorer.start()
    st = await h.confirmed(200)
    assert st["batches"]["confirmed"] == 2 and st["queue"]["queued"] == 50  # the rest waits for the interval


async def test_rpc_down_then_anvil_restarted_with_its_state(harness, anvil_factory, tmp_path):
    """anvil stopped while a batch is in flight, CIDs queued meanwhile; anvil restarted with
    --state: every CID ends up in exactly one confirmed batch, each root anchored once."""
    chain = anvil_factory(state_path=tmp_path / "anvil-state.json")
    h = Harness(tmp_path / "h", chain, confirmations=3)
    try:
        first = cids(20, "before")
        h.enqueue(first)
        await h.anchorer.start()
        await h.until(lambda: _submitted(h))  # sent, waiting for 3 confirmations
        chain.stop()  # SIGTERM: anvil dumps its state
        h.enqueue(cids(30, "during"))
        await h.until(lambda: _async(h.anchorer.state == "backoff"))
        await asyncio.sleep(1.0)
        st = await h.store.run(db.status, h.store)
        assert st["queue"]["confirmed"] == 0
        chain.start()
        for _ in range(100):
            chain.mine(1)
            st = await h.store.run(db.status, h.store)
            if st["queue"]["confirmed"] == 50:
                break
            await asyncio.sleep(0.2)
        assert st["queue"]["confirmed"] == 50 and st["queue"]["queued"] == 0, st
        for batch in await h.store.run(db.batches_in, h.store, "confirmed"):
            assert h.events("0x" + bytes(batch["root"]).hex()) == 1
        assert (await verify_proof_document(await h.proof(first[0]), chain.rpc_url))["verified"]
    finally:
        await h.close()


async def _submitted(h) -> bool:
    return bool(await h.store.run(db.batches_in, h.store, "submitted"))


async def _async(value):
    return value


async def test_reorg_drops_an_anchored_batch_which_is_anchored_again(harness, anvil):
    h = harness()
    keys = cids(8, "reorg")
    h.enqueue(keys)
    await h.anchorer.start()
    await h.confirmed(8)
    before = await h.proof(keys[0])
    assert (await verify_proof_document(before, anvil.rpc_url))["verified"]
    assert anvil.block_number() == before["block_number"]
    anvil.reorg(1)  # the anchoring block replaced by an empty one: the transaction is gone
    result = await verify_proof_document(before, anvil.rpc_url)
    assert not result["verified"] and result["checks"]["root_on_chain"] is False
    # the batcher sees it, sends the same root again, and it is confirmed in a new block

    async def reanchored():
        info = await h.store.run(db.anchor_of, h.store, CID.parse(keys[0]).v1().encode())
        b = info["batch"]
        return b if b["state"] == "confirmed" and b["block_hash"] != before["block_hash"] else None

    batch = await h.until(reanchored)
    assert batch["reorged"] >= 1
    after = await h.proof(keys[0])
    assert after["root"] == before["root"] and after["path"] == before["path"]
    assert (await verify_proof_document(after, anvil.rpc_url))["verified"]
    assert h.events(after["root"]) == 1


async def test_stuck_transaction_replaced_with_a_fee_bump(harness, anvil):
    h = harness()
    h.anchorer.replace_after = 0.5
    h.contract = await _deploy(anvil.rpc_url)
    anvil.set_automine(False)
    h.enqueue(cids(3, "stuck"))
    await h.anchorer.start()
    await h.until(lambda: _async(h.anchorer.replacements >= 1))
    [batch] = await h.store.run(db.batches_in, h.store, "submitted")
    txs = await h.store.run(db.batch_txs, h.store, batch["id"])
    assert len(txs) >= 2 and len({t["nonce"] for t in txs}) == 1
    assert txs[1]["max_fee"] > txs[0]["max_fee"] and txs[1]["priority_fee"] > txs[0]["priority_fee"]
    anvil.set_automine(True)
    anvil.mine(1)
    await h.confirmed(3)
    [batch] = await h.store.run(db.batches_in, h.store, "confirmed")
    assert batch["tx_hash"] == txs[-1]["tx_hash"] or batch["tx_hash"] in {t["tx_hash"] for t in txs}
    assert h.events("0x" + bytes(batch["root"]).hex()) == 1


class Crash(BaseException):
    """Stops the batcher's task where it is raised, as a kill would (not an Exception: no retry)."""


@pytest.mark.parametrize("point", ["after_prepare", "after_send", "after_mined"])
async def test_crash_at_every_point_never_anchors_twice(harness, anvil, tmp_path, point):
    """The batcher dies after recording the transaction but before sending it, after sending it
    but before recording `submitted`, or after it is mined but before confirmation; a new
    batcher on the same store finishes the job with one transaction per batch, one event per root."""
    from chain import anchoring

    h = harness(confirmations=2)
    keys = cids(10, point)
    h.enqueue(keys)
    a = h.anchorer
    if point == "after_prepare":
        async def broadcast(self, batch, signed, tx_hash):
            raise Crash
        patch = ("_broadcast", broadcast)
    elif point == "after_send":
        real = anchoring.Anchorer._broadcast

        async def broadcast(self, batch, signed, tx_hash):
            await real(self, batch, signed, tx_hash)
            raise Crash
        patch = ("_broadcast", broadcast)
    else:
        real = anchoring.Anchorer._mined

        async def mined(self, batch, found):
            await real(self, batch, found)
            raise Crash
        patch = ("_mined", mined)
    setattr(a, patch[0], patch[1].__get__(a))
    await a.start()
    await h.until(lambda: _async(a._task.done()))
    assert isinstance(a._task.exception(), Crash)
    await a.stop()
    # a new batcher (a restarted node) on the same store and chain
    h.anchorer = Anchorer(h.store, h.cfg, tmp_path, open_chain=h._open, poll=0.05, max_backoff=0.5)
    await h.anchorer.start()
    for _ in range(100):
        anvil.mine(1)
        st = await h.store.run(db.status, h.store)
        if st["queue"]["confirmed"] == 10:
            break
        await asyncio.sleep(0.1)
    assert st["queue"]["confirmed"] == 10 and st["batches"]["confirmed"] == 1, st
    [batch] = await h.store.run(db.batches_in, h.store, "confirmed")
    assert h.events("0x" + bytes(batch["root"]).hex()) == 1
    account = h.anchorer.chain.account.address
    assert int(anvil.rpc("eth_getTransactionCount", [account, "latest"]), 16) == 2  # the deploy and ONE anchor
    assert (await verify_proof_document(await h.proof(keys[3]), anvil.rpc_url, min_confirmations=2))["verified"]


# --- the node: API, SIGKILL, the embedded dev chain ----------------------------------------------------
PASSPHRASE = "test passphrase, not a secret"


async def _deploy(url: str) -> str:
    chain = await anvil_chain(url)
    try:
        return chain.contract.address
    finally:
        await chain.close()


def _node_key(data_dir: Path) -> None:
    from chain.keystore import import_private_key

    import_private_key(data_dir / "chain" / "key.json", DEV_KEY, PASSPHRASE)


async def test_api_on_anvil(node_factory, anvil, tmp_path, monkeypatch):
    from tests.gateway_helpers import upload
    from tests.test_openapi_strict import _check

    contract = await _deploy(anvil.rpc_url)
    monkeypatch.setenv("HEARTH_CHAIN_PASSPHRASE", PASSPHRASE)
    key_file = tmp_path / "key.json"
    from chain.keystore import import_private_key

    import_private_key(key_file, DEV_KEY, PASSPHRASE)
    client = await node_factory("embedded", chain__rpc_url=[anvil.rpc_url], chain__anchor_contract=contract,
                                chain__keystore=str(key_file), chain__batch_interval_s=1, chain__confirmations=1)
    rec = await upload(client, b"anchor me", "a.txt", cid_version=0)
    v0 = rec["cid"]
    v1 = CID.parse(v0).v1().encode()
    assert v0.startswith("Qm")
    resp = await client.get(f"/api/v1/anchors/{v0}")
    assert resp.status == 401
    _check("/api/v1/anchors/{cid}", "get", resp, await resp.read())
    resp = await client.get(f"/api/v1/anchors/{v0}", headers=client.auth)
    first = await resp.json()
    _check("/api/v1/anchors/{cid}", "get", resp, json.dumps(first).encode())
    assert first["status"] in ("queued", "submitted", "confirmed") and first["cid"] == v1
    # a PSA pin of content the node has is anchored too
    resp = await client.post("/psa/pins", data=json.dumps({"cid": "bafkqaaa"}).encode(), headers=client.auth)
    assert resp.status == 202

    async def confirmed(cid):
        for _ in range(200):
            resp = await client.get(f"/api/v1/anchors/{cid}", headers=client.auth)
            if resp.status == 200:
                body = await resp.json()
                if body["status"] == "confirmed":
                    _check("/api/v1/anchors/{cid}", "get", resp, json.dumps(body).encode())
                    return body
            await asyncio.sleep(0.1)
        raise AssertionError(await resp.text())

    by_v0, by_v1 = await confirmed(v0), await confirmed(v1)
    assert by_v0 == by_v1 and by_v0["proof"]["leaf"] == v1 and by_v0["proof"]["dev"] is False
    pinned = await confirmed("bafkqaaa")
    assert pinned["proof"]["leaf"] == "bafkqaaa"
    resp = await client.post("/api/v1/anchors/verify", data=json.dumps(by_v0["proof"]).encode(), headers=client.auth)
    body = await resp.read()
    _check("/api/v1/anchors/verify", "post", resp, body)
    assert json.loads(body)["verified"], body
    bad = dict(by_v0["proof"], leaf=str(CID.from_digest(b"x")))
    out = await (await client.post("/api/v1/anchors/verify", data=json.dumps(bad).encode(), headers=client.auth)).json()
    assert not out["verified"] and out["error"].startswith("path: ")
    for url, data, status in [("/api/v1/anchors/nope", None, 400), (f"/api/v1/anchors/{CID.from_digest(b'no')}", None, 404),
                              ("/api/v1/anchors/verify", b"[1]", 400), ("/api/v1/anchors/verify", b"{", 400)]:
        resp = await (client.post(url, data=data, headers=client.auth) if data else client.get(url, headers=client.auth))
        assert resp.status == status
        _check(url if "verify" in url else "/api/v1/anchors/{cid}", "post" if data else "get", resp, await resp.read())
    metrics = await (await client.get("/metrics")).text()
    assert "hearth_anchor_queue_depth 0" in metrics
    assert 'hearth_anchor_batches{state="confirmed"}' in metrics and "hearth_anchor_gas_used_total" in metrics
    assert "hearth_anchor_enqueue_to_confirmed_seconds_count" in metrics


def _db_batches(data_dir: Path) -> list[dict]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "hearth.sqlite", timeout=10)
    try:
        rows = conn.execute("SELECT id, state, tx_hash, nonce FROM anchor_batches").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [dict(zip(("id", "state", "tx_hash", "nonce"), r)) for r in rows]


def _wait(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def _http(node, method: str, path: str, body: bytes | None = None):
    import urllib.request

    req = urllib.request.Request(node.url + path, data=body, method=method, headers=node.auth)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_node_killed_between_send_and_confirmation(anvil, tmp_path):
    """SIGKILL while the anchor transaction is pending (automine off), restart: the node finds its
    transaction instead of sending another; SIGKILL again while it awaits confirmations,
    restart: confirmed, one transaction and one Anchored event."""
    from tests.support.node import NodeProcess

    contract = asyncio.run(_deploy(anvil.rpc_url))
    data_dir = tmp_path / "data"
    _node_key(data_dir)
    env = {"HEARTH_CHAIN_RPC_URL": anvil.rpc_url, "HEARTH_CHAIN_ANCHOR_CONTRACT": contract,
           "HEARTH_CHAIN_PASSPHRASE": PASSPHRASE, "HEARTH_CHAIN_BATCH_INTERVAL_S": "1",
           "HEARTH_CHAIN_CONFIRMATIONS": "3"}
    node = NodeProcess(data_dir, env=env).start()
    try:
        anvil.set_automine(False)
        cids_ = [_http(node, "POST", f"/api/v1/content?filename=f{i}", f"kill {i}".encode())["cid"] for i in range(5)]
        _wait(lambda: [b for b in _db_batches(data_dir) if b["tx_hash"]])
        time.sleep(0.3)
        node.kill()  # the transaction is in anvil's pool, not mined
        [batch] = _db_batches(data_dir)
        assert batch["state"] in ("batched", "submitted")
        assert len(anvil.rpc("txpool_content")["pending"]) == 1
        node.start()
        _wait(lambda: _db_batches(data_dir)[0]["state"] == "submitted")
        anvil.mine(1)  # mined; 1 of 3 confirmations
        time.sleep(1.0)
        node.kill()
        node.start()
        anvil.set_automine(True)
        anvil.mine(2)

        def confirmed():
            out = [_http(node, "GET", f"/api/v1/anchors/{c}") for c in cids_]
            return out if all(o["status"] == "confirmed" for o in out) else None

        answers = _wait(confirmed)
        roots = {a["proof"]["root"] for a in answers}
        assert len(roots) == 1
        topic = "0x" + __import__("eth_hash.auto", fromlist=["keccak"]).keccak(b"Anchored(bytes32,address)").hex()
        logs = anvil.rpc("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest", "topics": [topic, roots.pop()]}])
        assert len(logs) == 1
        from eth_account import Account

        sent = int(anvil.rpc("eth_getTransactionCount", [Account.from_key(DEV_KEY).address, "latest"]), 16)
        assert sent == 2  # the deploy and one anchor
        assert answers[0]["proof"]["tx_hash"] == batch["tx_hash"]
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "anchor", "status", "--data-dir", str(data_dir)],
                             cwd=ROOT, capture_output=True, text=True, env=node.env, timeout=60)
        assert "1 confirmed, 0 stale" in out.stdout, out
    finally:
        node.stop()


def test_embedded_dev_chain_end_to_end_with_a_restart(tmp_path):
    """The default, rpc_url = "embedded": anchored and verified (API, and the CLI through the dev
    chain's loopback RPC); after a restart (a new dev chain) the old proof is stale, never valid,
    and the content is anchored again on the new chain."""
    from tests.support.node import NodeProcess

    data_dir = tmp_path / "data"
    node = NodeProcess(data_dir, env={"HEARTH_CHAIN_BATCH_INTERVAL_S": "1"}).start()
    try:
        cid = _http(node, "POST", "/api/v1/content?filename=dev.txt", b"dev chain")["cid"]
        first = _wait(lambda: (lambda a: a if a["status"] == "confirmed" else None)(
            _http(node, "GET", f"/api/v1/anchors/{cid}")))
        proof = first["proof"]
        assert proof["dev"] is True and "ephemeral" in proof["note"] and first["chain"]["dev"] is True
        for _ in range(4):  # any worker answers
            assert _http(node, "POST", "/api/v1/anchors/verify", json.dumps(proof).encode())["verified"]
        (tmp_path / "proof.json").write_text(json.dumps(proof))
        status = json.loads(subprocess.run([sys.executable, "-m", "gateway.cli", "anchor", "status", "--json",
                                            "--data-dir", str(data_dir)], cwd=ROOT, capture_output=True, text=True,
                                           timeout=60).stdout)
        rpc = status["chain"]["rpc"]
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "anchor", "verify", str(tmp_path / "proof.json"),
                              "--rpc", rpc], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip().endswith("verified"), out
        (tmp_path / "notdev.json").write_text(json.dumps(dict(proof, dev=False)))
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "anchor", "verify", str(tmp_path / "notdev.json"),
                              "--rpc", rpc], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "NOT verified: chain: the proof says dev=false" in out.stdout, out
        node.stop()
        # a new dev chain; batches closing only hourly: the CID waits, stale
        node.env["HEARTH_CHAIN_BATCH_INTERVAL_S"] = "3600"
        node.start()
        stale = _http(node, "GET", f"/api/v1/anchors/{cid}")
        assert stale["status"] == "stale" and stale["requeued"] is True
        assert stale["proof"]["genesis_hash"] == proof["genesis_hash"]
        # the new leader may not have opened its dev chain yet: the old one is known to be gone anyway
        assert stale["chain"]["live"] is False or stale["chain"]["genesis_hash"] != proof["genesis_hash"]
        result = _http(node, "POST", "/api/v1/anchors/verify", json.dumps(proof).encode())
        assert not result["verified"] and result["error"].startswith("chain: ")
        node.stop()
        node.env["HEARTH_CHAIN_BATCH_INTERVAL_S"] = "1"
        node.start()
        again = _wait(lambda: (lambda a: a if a["status"] == "confirmed" else None)(
            _http(node, "GET", f"/api/v1/anchors/{cid}")))
        assert again["proof"]["genesis_hash"] == again["chain"]["genesis_hash"] != proof["genesis_hash"]
        assert _http(node, "POST", "/api/v1/anchors/verify", json.dumps(again["proof"]).encode())["verified"]
    finally:
        node.stop()


def test_migration_queues_what_was_stored_before(tmp_path):
    """Content records and pinned pin requests from before anchoring existed are queued by the
    migration, once per CIDv1; a later upload of the same root adds nothing."""
    import storage.metadata as m

    store = MetadataStore(tmp_path / "old.sqlite")
    saved = list(m.MIGRATIONS)
    try:
        m.MIGRATIONS[:] = saved[:3]
        store.migrate()
    finally:
        m.MIGRATIONS[:] = saved
    v0 = "QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"
    v1 = CID.parse(v0).v1().encode()
    for owner, cid in [("a", v0), ("b", v1)]:
        store.db.execute("INSERT INTO content (key, cid, owner, size, status, created_at) VALUES (?, ?, ?, 1, 'pinned', 'x')",
                         [v1, cid, owner])
    pinned = store.create_pin("a", "bafkqaaa", None, [], {})
    store.create_pin("a", "bafkqaab", None, [], {})  # queued: not stored yet, not anchored
    store.db.execute("UPDATE pins SET status = 'pinned' WHERE requestid = ?", [pinned["requestid"]])
    store.migrate()
    assert [r[0] for r in store.db.execute("SELECT key FROM anchor_queue ORDER BY id")] == [v1, "bafkqaaa"]
    store.put_content("c", v0, "again", 1)
    store.set_pin_status(pinned["requestid"], "pinned")
    assert store.db.execute("SELECT COUNT(*) FROM anchor_queue").fetchone()[0] == 2
    store.close()


async def test_rpc_down_at_start_then_up(anvil_factory, tmp_path):
    chain = anvil_factory()
    chain.stop()
    h = Harness(tmp_path / "h", chain)
    try:
        h.enqueue(cids(4, "down"))
        await h.anchorer.start()
        await h.until(lambda: _async(h.anchorer.state == "backoff"))
        assert "Connect" in (h.anchorer.last_error or "") or "RPC" in (h.anchorer.last_error or "")
        state = json.loads((tmp_path / "h" / "run" / "anchoring.json").read_text())
        assert state["state"] == "backoff" and state["error"]
        chain.start()
        await h.confirmed(4)
    finally:
        await h.close()
