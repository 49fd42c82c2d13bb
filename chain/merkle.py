"""Merkle trees of CID batches in the OpenZeppelin StandardMerkleTree format.

Exactly what npm `@openzeppelin/merkle-tree` builds with `StandardMerkleTree.of(values,
["bytes"])` (tests/test_merkle.py checks roots and every proof against it, and the contract's
`verify` on anvil):

- a leaf's value is the binary CIDv1 of the content root (a CIDv0 converted to v1:
  `cid_leaf_value`), its hash `keccak256(keccak256(abi.encode(bytes)))` (`leaf_hash`): double
  hashed, so no 64-byte inner node can pass for a leaf (second-preimage safe);
- leaf hashes are sorted, the tree is the array layout of a complete binary tree of 2n-1 nodes
  (node i has children 2i+1 and 2i+2, leaves at the end in reverse sorted order), an inner node
  is `keccak256(min(a, b) || max(a, b))` (OpenZeppelin `Hashes.commutativeKeccak256`);
- a proof is the sibling hashes from the leaf up; `verify_proof` is `MerkleProof.verify`.

Memory: the whole tree is one bytearray of (2n-1)*32 bytes (4 MiB for 65,536 leaves), no
object per node; a proof's leaf is found by binary search over the sorted leaf hashes.
"""
from __future__ import annotations

import threading
from typing import Iterable

from Crypto.Hash import keccak as _keccak  # pycryptodome: eth-hash's backend under web3

FORMAT = "standard-v1"  # @openzeppelin/merkle-tree's StandardMerkleTree dump format
LEAF_ENCODING = ["bytes"]


def _keccak_object(data: bytes) -> bytes:
    return _keccak.new(data=data, digest_bits=256).digest()


def _fast_keccak():
    """keccak256 on pycryptodome's C functions, one reusable state per thread: 1.8 µs a 64-byte
    hash instead of 5.1 µs through `keccak.new` (which allocates a state and a SmartPointer per
    call) — a 65,536-leaf tree in about a third of the time. Checked against `keccak.new` at
    import; None (use keccak.new) if pycryptodome's internals ever differ."""
    try:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib
        from Crypto.Util._raw_api import ffi

        local = threading.local()

        def state():
            st = getattr(local, "st", None)
            if st is None:
                ptr = ffi.new("void **")
                if lib.keccak_init(ptr, 64, 24) != 0:  # capacity 512 bits, 24 rounds: keccak256
                    raise RuntimeError("keccak_init")
                st = local.st = (ptr[0], ffi.new("uint8_t[32]"))
            return st

        def keccak256(data: bytes) -> bytes:
            st, out = state()
            lib.keccak_reset(st)
            lib.keccak_absorb(st, data, len(data))
            lib.keccak_digest(st, out, 32, 1)  # padding 0x01: Keccak, not SHA-3
            return ffi.buffer(out)[:]

        for probe in (b"", b"abc", bytes(range(200))):
            if keccak256(probe) != _keccak_object(probe):
                return None
        return keccak256
    except Exception:  # noqa: BLE001 - any surprise: the public API
        return None


keccak256 = _fast_keccak() or _keccak_object


def _abi_encode_bytes(value: bytes) -> bytes:
    """abi.encode(bytes value): offset 0x20, length, the bytes zero-padded to 32."""
    n = len(value)
    return (32).to_bytes(32, "big") + n.to_bytes(32, "big") + bytes(value) + b"\0" * (-n % 32)


def leaf_hash(cid_bytes: bytes) -> bytes:
    """The StandardMerkleTree leaf of one value of encoding ["bytes"]:
    keccak256(keccak256(abi.encode(cid_bytes)))."""
    return keccak256(keccak256(_abi_encode_bytes(cid_bytes)))


def cid_leaf_value(cid) -> bytes:
    """The leaf value of a CID (string, binary or storage.cid.CID): its binary CIDv1, so a CIDv0
    and its CIDv1 give the same leaf."""
    from storage.cid import CID

    return CID.parse(cid).v1().to_bytes()


def hash_pair(a: bytes, b: bytes) -> bytes:
    return keccak256(a + b if a < b else b + a)


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    computed = bytes(leaf)
    for sibling in proof:
        sibling = bytes(sibling)
        computed = keccak256(computed + sibling if computed < sibling else sibling + computed)
    return computed


def verify_proof(root: bytes, leaf: bytes, proof: list[bytes]) -> bool:
    """OpenZeppelin MerkleProof.verify: `leaf` is the leaf HASH (`leaf_hash(value)`), as the
    contract's verify takes it. Malformed input (not 32-byte words) is False, not an error."""
    try:
        if len(root) != 32 or len(leaf) != 32 or any(len(p) != 32 for p in proof):
            return False
        return process_proof(leaf, proof) == bytes(root)
    except TypeError:
        return False


class MerkleTree:
    """A built tree: `root`, `proof(value)`, `leaf_hashes()`. Build with `MerkleTree.build`."""

    __slots__ = ("_tree", "n")

    def __init__(self, tree: bytearray, n: int):
        self._tree = tree  # (2n-1) nodes of 32 bytes, OpenZeppelin's array layout
        self.n = n

    @classmethod
    def build(cls, cid_bytes_list: Iterable[bytes]) -> "MerkleTree":
        """A tree over the given leaf values (binary CIDv1s). Duplicate values are kept once (a
        CIDv0 and its v1 must be converted first: `cid_leaf_value`). Empty input: ValueError."""
        hashes = sorted({leaf_hash(v) for v in cid_bytes_list})
        n = len(hashes)
        if n == 0:
            raise ValueError("a Merkle tree needs at least one leaf")
        size = 2 * n - 1
        tree = bytearray(size * 32)
        # leaf i (sorted) at node size-1-i: the sorted hashes in reverse fill the tail
        tree[(n - 1) * 32:] = b"".join(reversed(hashes))
        del hashes
        k = keccak256
        mv = memoryview(tree)
        for i in range(n - 2, -1, -1):
            lo = (2 * i + 1) * 32
            a = mv[lo:lo + 32].tobytes()
            b = mv[lo + 32:lo + 64].tobytes()
            tree[i * 32:i * 32 + 32] = k(a + b if a < b else b + a)
        mv.release()
        return cls(tree, n)

    @property
    def root(self) -> bytes:
        return bytes(self._tree[0:32])

    def __len__(self) -> int:
        return self.n

    def _node(self, i: int) -> bytes:
        return bytes(self._tree[i * 32:i * 32 + 32])

    def _leaf_index(self, h: bytes) -> int:
        """Tree index of leaf hash h (binary search: leaf j of the sorted order is node size-1-j)."""
        size = 2 * self.n - 1
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._node(size - 1 - mid) < h:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n and self._node(size - 1 - lo) == h:
            return size - 1 - lo
        raise KeyError("value is not a leaf of this tree")

    def has(self, cid_bytes: bytes) -> bool:
        try:
            self._leaf_index(leaf_hash(cid_bytes))
        except KeyError:
            return False
        return True

    def proof(self, cid_bytes: bytes) -> list[bytes]:
        """The sibling hashes from the value's leaf up to the root (KeyError if not a leaf)."""
        i = self._leaf_index(leaf_hash(cid_bytes))
        out = []
        while i > 0:
            out.append(self._node(i + 1 if i % 2 else i - 1))
            i = (i - 1) // 2
        return out

    def leaf_hashes(self) -> list[bytes]:
        """The leaf hashes in sorted order."""
        size = 2 * self.n - 1
        return [self._node(size - 1 - j) for j in range(self.n)]
