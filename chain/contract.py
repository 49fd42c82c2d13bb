"""The Anchor contract (contracts/Anchor.sol) from Python: its committed artifact, deployment,
anchor transactions, reads, and its Anchored events.

    artifact = load_artifact()
    address = await deploy_anchor(w3, account)          # w3: AsyncWeb3; account: eth-account LocalAccount
    anchor = AnchorContract(w3, address, chain_id)
    tx = anchor.build_anchor_tx(root, nonce, max_fee, priority_fee)   # no RPC call; sign and send it
    await anchor.anchored_at(root)                        # block of the first anchoring, 0 = never
    await anchor.verify(proof, root, leaf)                # the contract's MerkleProof.verify (eth_call)
    await anchor.find_anchor(root)                        # AnchorRecord(tx_hash, block_number, block_hash) | None

Roots, leaves and proof items are bytes32: `bytes` of 32, or "0x" hex strings. web3 is imported
inside the functions (a process that never anchors does not load it).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "Anchor.json"
# Gas limit of an anchor transaction: it uses 45,916 on a new root (measured, README "Anchoring")
# and ~26k on a root already anchored; the limit only caps what a transaction may burn, unused
# gas is not paid. A fixed limit means build_anchor_tx needs no eth_estimateGas round trip.
ANCHOR_GAS_LIMIT = 70_000
DEPLOY_GAS_LIMIT = 400_000


class ChainError(RuntimeError):
    """A chain operation failed (transaction reverted, wrong code at an address...)."""


class AnchorRecord(NamedTuple):
    tx_hash: str      # "0x..." hex
    block_number: int
    block_hash: str   # "0x..." hex


@lru_cache(maxsize=1)
def load_artifact() -> dict[str, Any]:
    """chain/artifacts/Anchor.json: abi, bytecode, deployedBytecode, compiler, settings, sourceSha256."""
    return json.loads(ARTIFACT.read_text())


def b32(value: bytes | str) -> bytes:
    """bytes32 from bytes or a 0x hex string (ValueError otherwise)."""
    if isinstance(value, str):
        text = value[2:] if value.startswith(("0x", "0X")) else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"not a hex bytes32: {value[:80]!r}") from None
    value = bytes(value)
    if len(value) != 32:
        raise ValueError(f"a bytes32 must be 32 bytes, got {len(value)}")
    return value


def _hex(value) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


async def suggest_fees(w3, max_fee_cap_wei: int | None = None) -> tuple[int, int]:
    """EIP-1559 (max_fee, priority_fee) in wei: priority from eth_maxPriorityFeePerGas (1 gwei if
    the node has no opinion), max fee = 2 x the latest base fee + priority, capped at
    max_fee_cap_wei (the tip is lowered to fit under the cap)."""
    block = await w3.eth.get_block("latest")
    base = int(block.get("baseFeePerGas") or 0)
    try:
        priority = int(await w3.eth.max_priority_fee)
    except Exception:  # noqa: BLE001 - a chain or tester without the method
        priority = 10**9
    max_fee = 2 * base + priority
    if max_fee_cap_wei is not None and max_fee > max_fee_cap_wei:
        max_fee = max_fee_cap_wei
        priority = min(priority, max_fee)
    return max_fee, priority


async def send_signed(w3, account, tx: dict, timeout: float = 120) -> Any:
    """Sign tx with the LocalAccount, send it, wait for its receipt; ChainError if it reverted."""
    signed = account.sign_transaction(tx)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    if receipt["status"] != 1:
        raise ChainError(f"transaction {tx_hash.to_0x_hex()} reverted")
    return receipt


async def deploy_anchor(w3, account, max_fee_cap_wei: int | None = None) -> str:
    """Deploy the committed Anchor artifact with the account's key; the checksum address."""
    art = load_artifact()
    chain_id = await w3.eth.chain_id
    nonce = await w3.eth.get_transaction_count(account.address, "pending")
    max_fee, priority = await suggest_fees(w3, max_fee_cap_wei)
    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "from": account.address, "value": 0,
          "data": art["bytecode"], "gas": DEPLOY_GAS_LIMIT, "maxFeePerGas": max_fee,
          "maxPriorityFeePerGas": priority}
    receipt = await send_signed(w3, account, tx)
    address = receipt["contractAddress"]
    contract = AnchorContract(w3, address, chain_id)
    if not await contract.code_matches():
        raise ChainError(f"the code at {address} is not the Anchor artifact's deployed bytecode")
    return address


class AnchorContract:
    def __init__(self, w3, address: str, chain_id: int | None = None):
        from web3 import Web3

        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.chain_id = chain_id
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact()["abi"])
        self.event_topic = Web3.keccak(text="Anchored(bytes32,address)")

    async def code_matches(self) -> bool:
        """True if the code at the address is the artifact's deployedBytecode (no immutables)."""
        code = await self.w3.eth.get_code(self.address)
        return bytes(code) == bytes.fromhex(load_artifact()["deployedBytecode"][2:])

    def anchor_calldata(self, root) -> str:
        return self.contract.encode_abi("anchor", [b32(root)])

    def build_anchor_tx(self, root, nonce: int, max_fee: int, priority_fee: int,
                        gas: int = ANCHOR_GAS_LIMIT, chain_id: int | None = None) -> dict:
        """An EIP-1559 anchor(root) transaction, ready for account.sign_transaction: no RPC call
        (chain id from the constructor or the argument; gas a fixed limit, ANCHOR_GAS_LIMIT)."""
        chain_id = chain_id if chain_id is not None else self.chain_id
        if chain_id is None:
            raise ValueError("build_anchor_tx needs the chain id (AnchorContract(..., chain_id) or chain_id=)")
        if priority_fee > max_fee:
            raise ValueError("priority_fee must not exceed max_fee")
        return {"type": 2, "chainId": int(chain_id), "nonce": int(nonce), "to": self.address, "value": 0,
                "data": self.anchor_calldata(root), "gas": int(gas), "maxFeePerGas": int(max_fee),
                "maxPriorityFeePerGas": int(priority_fee)}

    async def estimate_anchor_gas(self, root, sender: str) -> int:
        """eth_estimateGas for anchor(root) plus 20%: for chains whose gas also prices L1 data
        (Arbitrum and other rollups), where the fixed ANCHOR_GAS_LIMIT may be too low."""
        estimate = await self.w3.eth.estimate_gas({"from": sender, "to": self.address,
                                                   "data": self.anchor_calldata(root)})
        return int(estimate * 1.2)

    async def anchored_at(self, root, block_identifier="latest") -> int:
        return int(await self.contract.functions.anchoredAt(b32(root)).call(block_identifier=block_identifier))

    async def verify(self, proof, root, leaf, block_identifier="latest") -> bool:
        return bool(await self.contract.functions.verify([b32(p) for p in proof], b32(root), b32(leaf))
                    .call(block_identifier=block_identifier))

    async def verify_anchored(self, proof, root, leaf, block_identifier="latest") -> int:
        """The block the leaf was anchored at through root, by the contract; 0 if not."""
        return int(await self.contract.functions.verifyAnchored([b32(p) for p in proof], b32(root), b32(leaf))
                   .call(block_identifier=block_identifier))

    def anchored_roots(self, receipt) -> list[bytes]:
        """Roots of the Anchored events this contract emitted in a transaction receipt."""
        out = []
        for log in receipt["logs"]:
            topics = log["topics"]
            if (log["address"].lower() == self.address.lower() and len(topics) >= 2
                    and bytes(topics[0]) == bytes(self.event_topic)):
                out.append(bytes(topics[1]))
        return out

    async def find_anchor(self, root, block_identifier="latest") -> AnchorRecord | None:
        """The transaction and block of root's first anchoring, from its Anchored event; None if
        the root is not anchored (as of block_identifier). Reads anchoredAt first, then the logs of
        that one block, so no RPC range limit applies. (Topics as hex strings: eth-tester
        matches nothing given bytes.)"""
        root = b32(root)
        number = await self.anchored_at(root, block_identifier)
        if number == 0:
            return None
        logs = await self.w3.eth.get_logs({"address": self.address, "fromBlock": number, "toBlock": number,
                                           "topics": [self.event_topic.to_0x_hex(), _hex(root)]})
        for log in logs:
            if not log.get("removed"):
                return AnchorRecord(_hex(log["transactionHash"]), int(log["blockNumber"]), _hex(log["blockHash"]))
        return None
