"""EVM access for anchoring (issue 9): the Anchor contract (`contract.py`, artifact in
`artifacts/`), the Merkle tree of a batch (`merkle.py`, OpenZeppelin StandardMerkleTree),
chain settings and connections (`provider.py`: an RPC URL list with failover, or the embedded
ephemeral dev chain) and the node's Ethereum key (`keystore.py`, keystore v3).

Never imports `gateway/`. web3 / eth-tester are imported lazily, inside functions: a server
worker that never touches the chain does not load them (see README, "Anchoring")."""
