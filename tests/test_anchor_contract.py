"""contracts/Anchor.sol and chain/contract.py, chain/provider.py: the committed artifact equals a
fresh solc-js compile; deployment on anvil and on the embedded dev chain; anchor, anchoredAt,
verify, find_anchor; re-anchoring keeps the first block; gas per anchor; RPC failover."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chain.contract import ANCHOR_GAS_LIMIT, AnchorContract, ChainError, deploy_anchor, load_artifact, send_signed, suggest_fees
from chain.merkle import MerkleTree, leaf_hash
from tests.support.anvil import DEV_KEY

ROOT = Path(__file__).resolve().parent.parent
# measured: 45,874 gas for a new root (21,000 base + ~580 calldata + 22,100 for the one SSTORE
# + 1,500 for the LOG3 + dispatch), 24,130 for a root already anchored (no write, no event)
FIRST_ANCHOR_GAS_MAX = 46_500
REANCHOR_GAS_MAX = 24_500


def test_committed_artifact_equals_a_fresh_compile(tmp_path):
    out = tmp_path / "Anchor.json"
    subprocess.run(["node", str(ROOT / "scripts/compile-contracts"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    assert out.read_text() == (ROOT / "chain/artifacts/Anchor.json").read_text(), \
        "chain/artifacts/Anchor.json is stale: run scripts/compile-contracts"


def test_artifact_pins_compiler_settings_and_source():
    art = load_artifact()
    assert art["compiler"]["version"].startswith("0.8.37+")
    assert art["settings"]["evmVersion"] == "paris" and art["settings"]["optimizer"] == {"enabled": True, "runs": 10000}
    assert art["sourceSha256"] == hashlib.sha256((ROOT / "contracts/Anchor.sol").read_bytes()).hexdigest()
    names = {e.get("name") for e in art["abi"]}
    assert {"anchor", "anchoredAt", "verify", "verifyAnchored", "Anchored"} <= names
    assert art["bytecode"].startswith("0x60") and art["deployedBytecode"].startswith("0x60")


@pytest.fixture(params=["anvil", "embedded"])
async def backend(request):
    """(w3, account, chain) on anvil (via RPC, its first dev key) or the embedded dev chain."""
    if request.param == "anvil":
        from eth_account import Account
        from web3 import AsyncHTTPProvider, AsyncWeb3

        node = request.getfixturevalue("anvil")
        w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
        yield w3, Account.from_key(DEV_KEY), node
        await w3.provider.disconnect()
    else:
        from chain.provider import open_chain

        chain = await open_chain({"rpc_url": "embedded"}, "/nonexistent")
        yield chain.w3, chain.account, None
        await chain.close()


async def _anchor(w3, account, contract, root):
    max_fee, tip = await suggest_fees(w3)
    nonce = await w3.eth.get_transaction_count(account.address, "pending")
    return await send_signed(w3, account, contract.build_anchor_tx(root, nonce, max_fee, tip))


async def test_deploy_anchor_verify_and_reanchor(backend):
    w3, account, _ = backend
    chain_id = await w3.eth.chain_id
    contract = AnchorContract(w3, await deploy_anchor(w3, account), chain_id)
    assert await contract.code_matches()
    values = [os.urandom(36) for _ in range(7)]
    tree = MerkleTree.build(values)
    assert await contract.anchored_at(tree.root) == 0
    assert await contract.find_anchor(tree.root) is None

    first = await _anchor(w3, account, contract, tree.root)
    block = first["blockNumber"]
    assert await contract.anchored_at(tree.root) == block
    assert contract.anchored_roots(first) == [tree.root]
    record = await contract.find_anchor(tree.root)
    assert record.block_number == block
    assert record.tx_hash == first["transactionHash"].to_0x_hex()
    assert record.block_hash == first["blockHash"].to_0x_hex()
    # the state as of the block before the anchor
    assert await contract.anchored_at(tree.root, block_identifier=block - 1) == 0

    for v in values:
        assert await contract.verify(tree.proof(v), tree.root, leaf_hash(v))
        assert await contract.verify_anchored(tree.proof(v), tree.root, leaf_hash(v)) == block
    assert not await contract.verify(tree.proof(values[0]), tree.root, leaf_hash(values[1]))
    assert await contract.verify_anchored(tree.proof(values[0]), tree.root, leaf_hash(values[1])) == 0
    unanchored = MerkleTree.build([b"\x01\x55elsewhere"])
    assert await contract.verify_anchored([], unanchored.root, unanchored.root) == 0

    # anchoring the same root again: no overwrite, no event, less gas
    again = await _anchor(w3, account, contract, tree.root)
    assert again["blockNumber"] > block
    assert await contract.anchored_at(tree.root) == block
    assert contract.anchored_roots(again) == []
    assert (await contract.find_anchor(tree.root)).block_number == block

    print(f"gas: first anchor {first['gasUsed']}, re-anchor {again['gasUsed']} (limit {ANCHOR_GAS_LIMIT})")
    assert first["gasUsed"] <= FIRST_ANCHOR_GAS_MAX
    assert again["gasUsed"] <= REANCHOR_GAS_MAX


async def test_state_survives_an_anvil_restart_and_gas_estimate(anvil_factory, tmp_path):
    """The anvil fixture's --state: stop (state dumped), start (loaded), the anchor is still there."""
    from eth_account import Account
    from web3 import AsyncHTTPProvider, AsyncWeb3

    node = anvil_factory(state_path=tmp_path / "anvil-state.json")
    w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
    account = Account.from_key(DEV_KEY)
    try:
        contract = AnchorContract(w3, await deploy_anchor(w3, account), 31337)
        root = os.urandom(32)
        assert 45_000 < await contract.estimate_anchor_gas(root, account.address) <= 1.2 * FIRST_ANCHOR_GAS_MAX
        block = (await _anchor(w3, account, contract, root))["blockNumber"]
        node.stop()
        assert (tmp_path / "anvil-state.json").exists()
        node.start()
        assert await contract.anchored_at(root) == block
        assert (await contract.find_anchor(root)).block_number == block
    finally:
        await w3.provider.disconnect()


async def test_zero_root_is_refused(backend):
    w3, account, _ = backend
    contract = AnchorContract(w3, await deploy_anchor(w3, account), await w3.eth.chain_id)
    with pytest.raises(Exception):
        await _anchor(w3, account, contract, bytes(32))
    assert await contract.anchored_at(bytes(32)) == 0


async def test_gas_per_anchor_does_not_depend_on_batch_size(anvil):
    """One transaction per batch: the cost is one root whatever the number of CIDs under it."""
    from eth_account import Account
    from web3 import AsyncHTTPProvider, AsyncWeb3

    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    account = Account.from_key(DEV_KEY)
    try:
        contract = AnchorContract(w3, await deploy_anchor(w3, account), 31337)
        gas = {}
        for n in (1, 100, 10_000, 65_536):
            tree = MerkleTree.build(os.urandom(36) for _ in range(n))
            gas[n] = (await _anchor(w3, account, contract, tree.root))["gasUsed"]
        print("gas per batch:", gas, {n: round(g / n, 3) for n, g in gas.items()})
        assert max(gas.values()) - min(gas.values()) <= 200  # calldata zero bytes vary a little
        assert gas[65_536] / 65_536 < 1  # under 1 gas per CID
    finally:
        await w3.provider.disconnect()


def test_build_anchor_tx_needs_no_rpc():
    class NoRPC:
        class eth:
            @staticmethod
            def contract(address, abi):
                from web3 import Web3

                return Web3().eth.contract(address=address, abi=abi)

    contract = AnchorContract(NoRPC(), "0x5FbDB2315678afecb367f032d93F642f64180aa3", 31337)
    root = bytes(range(32))
    tx = contract.build_anchor_tx(root, nonce=5, max_fee=3 * 10**9, priority_fee=10**9)
    assert tx["data"] == "0x" + load_artifact_selector("anchor(bytes32)") + root.hex()
    assert (tx["nonce"], tx["chainId"], tx["type"], tx["gas"]) == (5, 31337, 2, ANCHOR_GAS_LIMIT)
    with pytest.raises(ValueError):
        contract.build_anchor_tx(root, 0, 1, 2)  # tip above the max fee
    with pytest.raises(ValueError):
        contract.build_anchor_tx(root[:31], 0, 2, 1)


def load_artifact_selector(signature: str) -> str:
    from web3 import Web3

    return Web3.keccak(text=signature)[:4].hex()


async def test_open_chain_embedded_is_ephemeral(caplog):
    from chain.provider import open_chain

    with caplog.at_level("WARNING", logger="hearth.chain"):
        one = await open_chain({"rpc_url": "embedded"}, "/nonexistent")
        two = await open_chain({"rpc_url": "embedded"}, "/nonexistent")
    try:
        assert one.dev and one.confirmations == 0 and one.describe()["ephemeral"]
        assert one.genesis_hash != two.genesis_hash  # a new chain each time, even in the same second
        assert await one.contract.code_matches()
        assert "EPHEMERAL dev chain" in caplog.text
    finally:
        await one.close()
        await two.close()
    with pytest.raises(ChainError, match="anchor_contract"):
        await open_chain({"rpc_url": "embedded", "anchor_contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}, "/x")
    with pytest.raises(ChainError, match="chain_id"):
        await open_chain({"rpc_url": "embedded", "chain_id": 1}, "/x")


@pytest.fixture
def keyed_data_dir(tmp_path):
    from chain.keystore import import_private_key

    import_private_key(tmp_path / "chain/key.json", DEV_KEY, "pw")
    return tmp_path


async def test_open_chain_over_rpc_with_failover(anvil, keyed_data_dir, caplog):
    from chain.keystore import load_account
    from chain.provider import RPCUnavailable, connect, open_chain

    w3 = await connect(anvil.rpc_url)
    address = await deploy_anchor(w3, load_account(keyed_data_dir / "chain/key.json", "pw"))
    await w3.provider.disconnect()
    env = {"HEARTH_CHAIN_PASSPHRASE": "pw"}
    dead = "http://127.0.0.1:9/v3/SECRET-API-KEY"
    cfg = {"rpc_url": [dead, anvil.rpc_url], "anchor_contract": address, "confirmations": 2, "rpc_timeout": 5}
    with caplog.at_level("INFO", logger="hearth.chain"):
        chain = await open_chain(cfg, keyed_data_dir, env)
    try:
        assert (chain.chain_id, chain.dev, chain.confirmations) == (31337, False, 2)
        assert chain.genesis_hash == anvil.rpc("eth_getBlockByNumber", ["0x0", False])["hash"]
        assert chain.contract.address == address and chain.account.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        assert "SECRET-API-KEY" not in caplog.text and "now using" in caplog.text
        root = os.urandom(32)
        receipt = await _anchor(chain.w3, chain.account, chain.contract, root)
        assert await chain.contract.anchored_at(root) == receipt["blockNumber"]
        # anvil stops: every URL fails, one error naming them (redacted); back: it answers again
        anvil.stop()
        with pytest.raises(RPCUnavailable) as err:
            await chain.w3.eth.block_number
        assert "SECRET" not in str(err.value) and "127.0.0.1:9" in str(err.value)
        anvil.start()
        assert await chain.w3.eth.block_number >= 0
    finally:
        await chain.close()
    with pytest.raises(ChainError, match="not \\[chain\\] chain_id 1"):
        await open_chain(dict(cfg, chain_id=1), keyed_data_dir, env)
    with pytest.raises(ChainError, match="anchor_contract is empty"):
        await open_chain(dict(cfg, anchor_contract=""), keyed_data_dir, env)
    with pytest.raises(ChainError, match="no contract"):
        await open_chain(dict(cfg, anchor_contract="0x" + "11" * 20), keyed_data_dir, env)
    with pytest.raises(RPCUnavailable):
        await open_chain(dict(cfg, rpc_url=[dead]), keyed_data_dir, env)


async def test_failover_skips_a_url_on_another_chain(anvil_factory, keyed_data_dir):
    from chain.keystore import load_account
    from chain.provider import connect, open_chain

    main, other = anvil_factory(), anvil_factory(chain_id=5)
    w3 = await connect(main.rpc_url)
    address = await deploy_anchor(w3, load_account(keyed_data_dir / "chain/key.json", "pw"))
    await w3.provider.disconnect()
    backup = anvil_factory()  # same chain id (31337) but never checked until needed
    chain = await open_chain({"rpc_url": [main.rpc_url, other.rpc_url, backup.rpc_url], "anchor_contract": address,
                              "rpc_timeout": 5}, keyed_data_dir, {"HEARTH_CHAIN_PASSPHRASE": "pw"})
    try:
        main.stop()
        # chain 5 is skipped (wrong chain id), the backup answers
        assert await chain.w3.eth.chain_id == 31337
        assert chain.w3.provider.current == 2
    finally:
        await chain.close()


def test_chain_config_keys():
    from gateway.config import ConfigError, load_config

    c = load_config(None, env={})["chain"]
    assert (c["rpc_url"], c["chain_id"], c["anchor_contract"], c["keystore"], c["confirmations"], c["batch_max"],
            c["batch_interval_s"], c["max_fee_gwei"]) == ("embedded", 0, "", "", 2, 65536, 60, 100)
    c = load_config(None, env={"HEARTH_CHAIN_RPC_URL": "https://a.example/k, http://127.0.0.1:8545"})["chain"]
    assert c["rpc_url"] == ["https://a.example/k", "http://127.0.0.1:8545"]
    c = load_config(None, env={"HEARTH_CHAIN_RPC_URL": '["https://a.example"]'})["chain"]
    assert c["rpc_url"] == "https://a.example"
    from chain.provider import rpc_urls

    assert rpc_urls("https://a.example") == ["https://a.example"] and rpc_urls(["a", "b"]) == ["a", "b"]
    for var, value in [("RPC_URL", "embedded,https://a.example"), ("RPC_URL", "ws://x.example"),
                       ("ANCHOR_CONTRACT", "0x1234"), ("BATCH_MAX", "0"), ("CONFIRMATIONS", "-1"),
                       ("MAX_FEE_GWEI", "0")]:
        with pytest.raises(ConfigError):
            load_config(None, env={f"HEARTH_CHAIN_{var}": value})


def test_chain_modules_import_no_web3():
    """Importing chain.* (as a worker that never anchors might) loads neither web3, eth-account nor eth-tester."""
    code = ("import sys; import chain.provider, chain.contract, chain.keystore, chain.merkle, gateway.cli_chain; "
            "print(json.dumps([m for m in ('web3', 'eth_account', 'eth_tester', 'eth') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert json.loads(out.stdout) == []
