#!/usr/bin/env node
// Compile tests/contracts/CcipTest.sol with solc-js (the pinned npm solc in ~/.cache/hearth/chain,
// as scripts/compile-contracts does for contracts/Anchor.sol) into CcipTest.json beside it.
//   node tests/contracts/compile.js [--out FILE]
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');
const TOOLS = process.env.HEARTH_CHAIN_TOOLS_DIR || path.join(os.homedir(), '.cache/hearth/chain');
const solc = require(path.join(TOOLS, 'node_modules', 'solc'));
const NAME = 'CcipTest';
const SOURCE = 'CcipTest.sol';
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'paris',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
};
const content = fs.readFileSync(path.join(__dirname, SOURCE), 'utf8');
const out = JSON.parse(solc.compile(JSON.stringify({ language: 'Solidity', sources: { [SOURCE]: { content } }, settings: SETTINGS })));
for (const e of out.errors || []) console.error(e.formattedMessage);
if ((out.errors || []).some((e) => e.severity === 'error')) process.exit(1);
const c = out.contracts[SOURCE][NAME];
const artifact = { contractName: NAME, compiler: solc.version(), abi: c.abi, bytecode: '0x' + c.evm.bytecode.object };
const args = process.argv.slice(2);
const target = args[0] === '--out' ? path.resolve(args[1]) : path.join(__dirname, NAME + '.json');
fs.writeFileSync(target, JSON.stringify(artifact, null, 2) + '\n');
console.log(`wrote ${target}`);
