"""Check an anchor proof with nothing but an RPC URL: no node, no database.

    result = await verify_proof_document(proof, "https://rpc.example")
    {"verified": bool, "checks": {"format", "path", "chain", "root_on_chain", "block",
     "confirmations"}, "error": "<check>: <reason>" | None, "details": {...}}

Each check is True (passed), False (failed) or None (not reached: its inputs were
unusable). What each one establishes:

- format: the document is a proof this verifier reads (format, tree, leaf a CID, root and path
  items bytes32, chain id, hashes, contract address, block number).
- path: the Merkle path takes the leaf (the binary CIDv1 of `leaf`, hashed as an OpenZeppelin
  StandardMerkleTree leaf) to `root` (computed here, no chain call).
- chain: the RPC serves the proof's chain: eth_chainId is `chain_id` and block 0 hashes to
  `genesis_hash` (a proof from an ephemeral dev chain that no longer exists fails here); and
  `dev` (the node's embedded eth-tester chain) agrees with web3_clientVersion, when it answers.
- root_on_chain: the contract at `contract` says that `root` was first anchored at `block_number`
  (anchoredAt, read at the head: the first block never changes, and a pruned RPC can answer).
- block: `block_hash` is the canonical block at `block_number`, and `tx_hash` is a successful
  transaction in it that emitted the contract's Anchored(root) event.
- confirmations: head - block_number + 1 >= min_confirmations.

`note` is the node's words about its chain, shown, not checked.
"""
from __future__ import annotations

import re
import time
from typing import Any

from .merkle import leaf_hash, verify_proof

PROOF_FORMAT = "hearth-anchor-proof/1"
TREE_FORMAT = 'OpenZeppelin StandardMerkleTree, leaf encoding ["bytes"] (binary CIDv1)'
CHECKS = ("format", "path", "chain", "root_on_chain", "block", "confirmations")
_B32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _format_errors(proof: Any) -> str | None:
    if not isinstance(proof, dict):
        return "the proof is not a JSON object"
    if proof.get("format") != PROOF_FORMAT:
        return f"format is {proof.get('format')!r}, this verifier reads {PROOF_FORMAT!r}"
    if proof.get("tree") != TREE_FORMAT:
        return f"tree is {proof.get('tree')!r}, this verifier reads {TREE_FORMAT!r}"
    for name in ("root", "genesis_hash", "tx_hash", "block_hash"):
        if not isinstance(proof.get(name), str) or not _B32.match(proof[name]):
            return f"{name} must be a 0x-prefixed 32-byte hex string"
    path = proof.get("path")
    if not isinstance(path, list) or len(path) > 256 or not all(isinstance(p, str) and _B32.match(p) for p in path):
        return "path must be a list of 0x-prefixed 32-byte hex strings"
    if not isinstance(proof.get("contract"), str) or not _ADDR.match(proof["contract"]):
        return "contract must be a 0x-prefixed 20-byte address"
    if "dev" in proof and not isinstance(proof["dev"], bool):
        return "dev must be true or false"
    for name in ("chain_id", "block_number"):
        if type(proof.get(name)) is not int or proof[name] < 0:
            return f"{name} must be a non-negative integer"
    try:
        from storage.cid import CID

        cid = CID.parse(proof.get("leaf"))
    except Exception as exc:  # noqa: BLE001
        return f"leaf is not a CID: {exc}"
    if cid.version != 1:
        return "leaf must be a CIDv1"
    return None


async def verify_proof_document(proof: dict, rpc_url: str, *, min_confirmations: int = 1, w3=None,
                                timeout: float = 15) -> dict:
    """The checks above against the chain at rpc_url (or an AsyncWeb3 given as w3)."""
    checks: dict[str, bool | None] = dict.fromkeys(CHECKS)
    errors: dict[str, str] = {}
    details: dict[str, Any] = {}
    started = time.perf_counter()

    def fail(name: str, reason: str) -> None:
        checks[name] = False
        errors.setdefault(name, reason)

    def result() -> dict:
        first = next((f"{n}: {errors[n]}" for n in CHECKS if n in errors), None)
        details["seconds"] = round(time.perf_counter() - started, 4)
        return {"verified": first is None and all(checks[n] is True for n in CHECKS), "checks": checks,
                "error": first, "details": details}

    problem = _format_errors(proof)
    if problem:
        fail("format", problem)
        return result()
    checks["format"] = True

    from storage.cid import CID

    root = bytes.fromhex(proof["root"][2:])
    leaf = leaf_hash(CID.parse(proof["leaf"]).v1().to_bytes())
    path = [bytes.fromhex(p[2:]) for p in proof["path"]]
    details["leaf_hash"] = "0x" + leaf.hex()
    if verify_proof(root, leaf, path):
        checks["path"] = True
    else:
        fail("path", "the Merkle path does not lead from the leaf to the root")

    own = w3 is None
    if own:
        from web3 import AsyncHTTPProvider, AsyncWeb3

        w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        await _chain_checks(w3, proof, root, min_confirmations, checks, fail, details)
    except Exception as exc:  # noqa: BLE001 - the RPC failed: say which check could not run
        pending = next((n for n in CHECKS if checks[n] is None), "chain")
        fail(pending, f"RPC error: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        if own:
            try:
                await w3.provider.disconnect()
            except Exception:  # noqa: BLE001
                pass
    return result()


async def _chain_checks(w3, proof, root: bytes, min_confirmations: int, checks, fail, details) -> None:
    from web3.exceptions import TransactionNotFound

    from .contract import AnchorContract, _hex

    chain_id = int(await w3.eth.chain_id)
    genesis = await w3.eth.get_block(0)
    details["rpc_chain_id"] = chain_id
    if chain_id != proof["chain_id"]:
        fail("chain", f"the RPC serves chain {chain_id}, the proof is for chain {proof['chain_id']}")
    elif _hex(genesis["hash"]).lower() != proof["genesis_hash"].lower():
        fail("chain", f"chain {chain_id} has genesis {_hex(genesis['hash'])}, the proof's is {proof['genesis_hash']} "
                      "(another chain with the same id, or a dev chain that no longer exists)")
    else:
        checks["chain"] = True
    if checks["chain"] is True and isinstance(proof.get("dev"), bool):
        # `dev` says "the node's embedded (eth-tester) dev chain": the client says whether it is one
        try:
            client = str(await w3.client_version)
        except Exception:  # noqa: BLE001 - a node without web3_clientVersion: not checkable
            client = None
        details["client"] = client
        if client is not None and client.startswith("EthereumTester") != proof["dev"]:
            fail("chain", f"the proof says dev={str(proof['dev']).lower()}, but the RPC's client is {client[:80]!r}")
    if checks["chain"] is not True:
        return  # the other checks would be answered by the wrong chain

    head = int(await w3.eth.block_number)
    number = proof["block_number"]
    details["head"] = head
    contract = AnchorContract(w3, proof["contract"], chain_id)
    if number > head:
        fail("root_on_chain", f"block {number} is beyond the chain's head {head}")
        fail("block", f"block {number} is beyond the chain's head {head}")
    elif not await w3.eth.get_code(contract.address):
        fail("root_on_chain", f"no contract at {contract.address}")
    else:
        # read at the head, not at the stated block: the contract keeps a root's FIRST block forever,
        # so this says the same, and a pruned (non-archive) RPC can answer it for an old proof
        at = await contract.anchored_at(root)
        details["anchored_at"] = at
        if at == 0:
            fail("root_on_chain", f"the contract has no anchoring of root {proof['root']}")
        elif at != number:
            fail("root_on_chain", f"the contract says the root was first anchored at block {at}, not {number}")
        else:
            checks["root_on_chain"] = True

    if number <= head:
        block = await w3.eth.get_block(number)
        canonical = _hex(block["hash"]).lower()
        try:
            receipt = await w3.eth.get_transaction_receipt(proof["tx_hash"])
        except TransactionNotFound:
            receipt = None
        if canonical != proof["block_hash"].lower():
            fail("block", f"block {number} is {canonical} on this chain, not {proof['block_hash']} (reorged away, or "
                          "not this block)")
        elif receipt is None:
            fail("block", f"transaction {proof['tx_hash']} is not on this chain")
        elif int(receipt["blockNumber"]) != number or _hex(receipt["blockHash"]).lower() != canonical:
            fail("block", f"transaction {proof['tx_hash']} is in block {int(receipt['blockNumber'])}, not {number}")
        elif int(receipt["status"]) != 1:
            fail("block", f"transaction {proof['tx_hash']} failed")
        elif root not in contract.anchored_roots(receipt):
            fail("block", f"transaction {proof['tx_hash']} did not emit the contract's Anchored event for this root")
        else:
            checks["block"] = True

    confirmations = head - number + 1 if number <= head else 0
    details["confirmations"] = confirmations
    if confirmations >= min_confirmations:
        checks["confirmations"] = True
    else:
        fail("confirmations", f"{confirmations} confirmations, at least {min_confirmations} wanted")
