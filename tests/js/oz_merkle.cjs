// Reference Merkle trees for tests/test_merkle.py: npm @openzeppelin/merkle-tree (pinned in
// scripts/install-test-deps.sh, cached in ~/.cache/hearth/chain or $HEARTH_CHAIN_TOOLS_DIR).
// stdin: {"values": ["0x<binary CIDv1>", ...], "proofsFor": [indices] (default: all),
//         "check": [{"value", "root", "proof"}...]}
// stdout: {"root", "proofs": {index: [...]}, "leafHashes": {index: hash}, "checks": [bool...]}
'use strict';
const path = require('path');
const os = require('os');
const tools = process.env.HEARTH_CHAIN_TOOLS_DIR || path.join(os.homedir(), '.cache/hearth/chain');
const { StandardMerkleTree } = require(path.join(tools, 'node_modules/@openzeppelin/merkle-tree'));

let input = '';
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const req = JSON.parse(input);
  const values = req.values.map((v) => [v]);
  const tree = StandardMerkleTree.of(values, ['bytes']);
  const which = req.proofsFor || values.map((_, i) => i);
  const proofs = {};
  const leafHashes = {};
  for (const i of which) {
    proofs[i] = tree.getProof(i);
    leafHashes[i] = tree.leafHash(values[i]);
  }
  const checks = (req.check || []).map((c) => StandardMerkleTree.verify(c.root, ['bytes'], [c.value], c.proof));
  process.stdout.write(JSON.stringify({ root: tree.root, proofs, leafHashes, checks }));
});
