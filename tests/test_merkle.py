"""chain/merkle.py: the OpenZeppelin StandardMerkleTree format, checked against npm
@openzeppelin/merkle-tree (run with node) and the Anchor contract's verify on anvil."""
from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import subprocess
import time
from pathlib import Path

import pytest

from chain.merkle import MerkleTree, cid_leaf_value, leaf_hash, verify_proof
from storage.cid import CID, DAG_PB, RAW

ROOT = Path(__file__).resolve().parent.parent
OZ_SCRIPT = ROOT / "tests/js/oz_merkle.cjs"


def cids(n: int, seed: int = 0) -> list[bytes]:
    """n distinct binary CIDv1s: raw leaves and dag-pb roots (as content roots are)."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        digest = hashlib.sha256(rnd.randbytes(16) + i.to_bytes(4, "big")).digest()
        out.append(CID.from_digest(digest, codec=RAW if i % 3 else DAG_PB).to_bytes())
    return out


def oz(values: list[bytes], proofs_for=None, check=()) -> dict:
    tools = Path(os.environ.get("HEARTH_CHAIN_TOOLS_DIR") or Path.home() / ".cache/hearth/chain")
    if not (tools / "node_modules/@openzeppelin/merkle-tree").is_dir():
        pytest.fail(f"@openzeppelin/merkle-tree not installed in {tools}: run scripts/install-test-deps.sh")
    req = {"values": ["0x" + v.hex() for v in values], "check": list(check)}
    if proofs_for is not None:
        req["proofsFor"] = list(proofs_for)
    out = subprocess.run(["node", str(OZ_SCRIPT)], input=json.dumps(req), capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout)


def hx(b: bytes) -> str:
    return "0x" + b.hex()


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000])
def test_root_and_every_proof_equal_openzeppelin(n):
    values = cids(n, seed=n)
    tree = MerkleTree.build(values)
    ours = {i: [hx(p) for p in tree.proof(v)] for i, v in enumerate(values)}
    ref = oz(values, check=[{"value": hx(v), "root": hx(tree.root), "proof": ours[i]}
                            for i, v in enumerate(values)])
    assert hx(tree.root) == ref["root"]
    for i, v in enumerate(values):
        assert ours[i] == ref["proofs"][str(i)], f"proof {i} of {n}"
        assert hx(leaf_hash(v)) == ref["leafHashes"][str(i)]
        assert verify_proof(tree.root, leaf_hash(v), tree.proof(v))
    assert all(ref["checks"]), "StandardMerkleTree.verify rejected a proof of ours"
    if n == 1:
        assert tree.root == leaf_hash(values[0]) and tree.proof(values[0]) == []


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1000])
async def test_contract_verify_accepts_every_proof_on_anvil(anvil, n):
    from web3 import AsyncHTTPProvider, AsyncWeb3
    from eth_account import Account

    from chain.contract import AnchorContract, deploy_anchor
    from tests.support.anvil import DEV_KEY

    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    try:
        contract = AnchorContract(w3, await deploy_anchor(w3, Account.from_key(DEV_KEY)))
        values = cids(n, seed=100 + n)
        tree = MerkleTree.build(values)
        for v in values:
            assert await contract.verify(tree.proof(v), tree.root, leaf_hash(v))
        # and a wrong leaf is refused by the contract too
        other = cids(1, seed=999)[0]
        assert not await contract.verify(tree.proof(values[0]), tree.root, leaf_hash(other))
    finally:
        await w3.provider.disconnect()


def test_65536_leaves_build_time_memory_and_proofs():
    values = cids(65536, seed=7)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    tree = MerkleTree.build(values)
    build_s = time.perf_counter() - t0
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"65,536 leaves: build {build_s:.2f} s, peak RSS growth {peak_growth_mib:.1f} MiB")
    assert build_s < 5, f"building 65,536 leaves took {build_s:.2f} s"  # ~0.6 s here
    # the tree is one buffer of (2n-1) x 32 bytes (4 MiB); peak growth includes the sorted hashes
    assert peak_growth_mib < 40
    assert len(tree) == 65536
    # spot checks: 257 proofs (every 255th leaf, the first and the last) against @openzeppelin/merkle-tree
    picks = sorted(set(range(0, 65536, 255)) | {0, 65535})
    ref = oz(values, proofs_for=picks)
    assert hx(tree.root) == ref["root"]
    t0 = time.perf_counter()
    for i in picks:
        proof = tree.proof(values[i])
        assert len(proof) == 16
        assert [hx(p) for p in proof] == ref["proofs"][str(i)]
        assert verify_proof(tree.root, leaf_hash(values[i]), proof)
    per_proof_ms = (time.perf_counter() - t0) / len(picks) * 1000
    print(f"proof + verify: {per_proof_ms:.3f} ms each")
    assert per_proof_ms < 1
    # and every leaf's proof verifies (no node comparison: ~1.5 s for all 65,536)
    root = tree.root
    for v in values[::7]:
        assert verify_proof(root, leaf_hash(v), tree.proof(v))


def test_tampered_proofs_fail():
    values = cids(1000, seed=3)
    tree = MerkleTree.build(values)
    v = values[123]
    leaf, proof, root = leaf_hash(v), tree.proof(v), tree.root
    assert verify_proof(root, leaf, proof)
    for i in range(len(proof)):  # each sibling, one bit flipped
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        assert not verify_proof(root, leaf, bad), f"sibling {i} flipped"
    assert not verify_proof(root, leaf, proof[:-1])                   # a sibling dropped
    assert not verify_proof(root, leaf, proof + [proof[-1]])          # one added
    assert not verify_proof(root, leaf, [proof[1], proof[0]] + proof[2:])  # two swapped
    assert not verify_proof(root, leaf_hash(values[124]), proof)      # another leaf
    assert not verify_proof(root, leaf_hash(cids(1, seed=42)[0]), proof)  # a stranger
    assert not verify_proof(bytes([root[0] ^ 1]) + root[1:], leaf, proof)  # another root
    # a single hash of the value is not a leaf (second-preimage safety: leaves are double hashed)
    from chain.merkle import _abi_encode_bytes, keccak256

    assert not verify_proof(root, keccak256(_abi_encode_bytes(v)), proof)
    # an inner node cannot pass for a leaf: the node above the leaf, with the rest of the path
    from chain.merkle import hash_pair

    inner = hash_pair(leaf, proof[0])
    assert verify_proof(root, inner, proof[1:])  # (that is how paths work...)
    # ...but no value hashes to it: the 64 bytes under it, taken as a value, give another leaf
    assert leaf_hash(min(leaf, proof[0]) + max(leaf, proof[0])) != inner
    # malformed input is False, not an exception
    assert not verify_proof(root[:31], leaf, proof)
    assert not verify_proof(root, leaf, proof[:1] + [b"short"])
    assert not verify_proof(root, leaf, [None])  # type: ignore[list-item]


def test_cid_v0_and_v1_give_the_same_leaf_and_duplicates_count_once():
    v0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"  # Kubo's empty file
    v1 = str(CID.parse(v0).v1())
    assert v1.startswith("bafy")
    assert cid_leaf_value(v0) == cid_leaf_value(v1) == CID.parse(v1).to_bytes()
    assert cid_leaf_value(CID.parse(v0).to_bytes()) == cid_leaf_value(v1)
    values = cids(5)
    tree = MerkleTree.build(values + [values[0], values[3]])
    assert len(tree) == 5 and tree.root == MerkleTree.build(values).root
    with pytest.raises(ValueError):
        MerkleTree.build([])
    with pytest.raises(KeyError):
        tree.proof(cids(1, seed=77)[0])
    assert tree.leaf_hashes() == sorted(leaf_hash(v) for v in values)
