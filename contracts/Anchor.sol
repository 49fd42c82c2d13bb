// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Hearth Anchor: timestamps Merkle roots of CID batches.
/// @notice A root is a commitment to a batch of binary CIDv1s (an OpenZeppelin StandardMerkleTree,
/// leaf encoding ["bytes"]). `anchor(root)` records the block of the root's FIRST anchoring;
/// `anchoredAt(root)` returns it (0 = never), `verify` checks a Merkle proof exactly as
/// OpenZeppelin's MerkleProof.verify (sorted pairs, keccak256), so another contract can prove
/// "this CID existed no later than block N" with `verifyAnchored`.
///
/// Who may anchor: anyone. A root is only a hash: anchoring one proves that whoever sent it knew
/// it at that block, which is exactly the claim a proof makes. Nobody can attach a CID to a root
/// without knowing the tree (keccak preimages), and an earlier anchoring of the same root by
/// someone else is still a true, earlier timestamp. An owner check would cost a cold SLOAD
/// (2,100 gas) on every anchor, tie the contract to one key, and stop several nodes from
/// sharing one deployment; it buys nothing.
///
/// Storage, defended with gas (measured on anvil 1.7.1 and eth-tester, tests/test_anchor_contract.py):
/// an anchor transaction costs 45,874 gas for a new root whatever the batch size (0.70 gas per
/// CID at 65,536 CIDs), 24,130 for a root already anchored.
///  - ONE slot per new root: `mapping(bytes32 => uint64)`, a zero -> non-zero SSTORE (22,100 gas
///    with the cold access). It is what lets a contract read `anchoredAt` (logs are invisible to
///    the EVM); without it an anchor would cost ~23.8k gas (an event only) instead of ~45.9k. A
///    uint64 block number is all that is kept: no sender, no timestamp (the block has it), no
///    array of roots (an append would be a second SSTORE of 22.1k + 5k for the length).
///  - Re-anchoring an existing root writes nothing and emits nothing (one SLOAD, 2,100 gas, then
///    return): the first block stays, and a batch sent twice (a retry after a reorg or a
///    replaced transaction that was mined after all) cannot move it.
///  - The event (LOG3: root and sender as topics, no data; 1,125 gas + 375 for the sender topic)
///    is how an off-chain verifier finds the transaction and block hash from a root with one
///    eth_getLogs; the sender topic lets a node list its own anchors.
contract Anchor {
    /// @notice Emitted once per root, on its first anchoring.
    event Anchored(bytes32 indexed root, address indexed sender);

    error ZeroRoot();

    mapping(bytes32 => uint64) private _anchoredAt;

    /// @notice Record `root` at the current block, unless it is already recorded.
    /// @return blockNumber the block of the root's first anchoring (this one, or an earlier one).
    function anchor(bytes32 root) external returns (uint64 blockNumber) {
        if (root == bytes32(0)) revert ZeroRoot();
        blockNumber = _anchoredAt[root];
        if (blockNumber == 0) {
            blockNumber = uint64(block.number);
            _anchoredAt[root] = blockNumber;
            emit Anchored(root, msg.sender);
        }
    }

    /// @notice The block number of the first anchoring of `root`; 0 if it was never anchored.
    function anchoredAt(bytes32 root) external view returns (uint64 blockNumber) {
        return _anchoredAt[root];
    }

    /// @notice OpenZeppelin MerkleProof.verify: true if `leaf` (the double-hashed leaf of a
    /// StandardMerkleTree) and `proof` hash up to `root` (pairs sorted before hashing).
    function verify(bytes32[] calldata proof, bytes32 root, bytes32 leaf) external pure returns (bool) {
        return _processProof(proof, leaf) == root;
    }

    /// @notice The block at which `leaf` was anchored through `root`: 0 if the proof is wrong or
    /// the root was never anchored.
    function verifyAnchored(bytes32[] calldata proof, bytes32 root, bytes32 leaf) external view returns (uint64) {
        if (_processProof(proof, leaf) != root) return 0;
        return _anchoredAt[root];
    }

    function _processProof(bytes32[] calldata proof, bytes32 leaf) private pure returns (bytes32 computed) {
        computed = leaf;
        for (uint256 i = 0; i < proof.length; ) {
            computed = _hashPair(computed, proof[i]);
            unchecked { ++i; }
        }
    }

    // OpenZeppelin Hashes.commutativeKeccak256: keccak256 of the two words, the smaller first.
    function _hashPair(bytes32 a, bytes32 b) private pure returns (bytes32 value) {
        (bytes32 x, bytes32 y) = a < b ? (a, b) : (b, a);
        assembly ("memory-safe") {
            mstore(0x00, x)
            mstore(0x20, y)
            value := keccak256(0x00, 0x40)
        }
    }
}
