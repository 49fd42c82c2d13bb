"""The node's libp2p peer identity: an Ed25519 key kept in `data_dir/peer.key`
(mode 0600, made once, sealed with the node's keyring: identity/keyring.py), and
the peer ID derived from it as libp2p does (identity multihash of the protobuf
PublicKey, base58btc: `12D3KooW...`). A `peer.key` written by an older node (the
raw 32-byte seed) is sealed in place the first time it is read; the peer ID stays.
The same key is the node's own IPNS key, `self` (naming/ipns/keystore.py).

Why a node without libp2p has one: Pinning Services API clients act on
`delegates`, and Kubo's (`ipfs pin remote add`) parses every delegate with
`peer.AddrInfoFromP2pAddr`, failing the whole command on an address without
`/p2p/<peer id>`. The node's delegate is its HTTP address, so it is written
`/ip4/A/tcp/P/http/p2p/<peer id>`: a valid libp2p HTTP multiaddr that Kubo
accepts (its swarm connect to it fails quietly) and that HTTP clients (boxo's
ExtractHTTPAddress, outbound/multiaddr.py) read as http://A:P.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from identity.keyring import Keyring, is_sealed, write_sealed_file
from outbound.multiaddr import node_multiaddr
from storage.cid import b58encode

PEER_KEY = "peer.key"
PURPOSE = "peer-key"
log = logging.getLogger("hearth")


def peer_seed(data_dir: Path, keyring: Keyring | None = None) -> bytes:
    """The node's Ed25519 seed (32 bytes), made on first use."""
    path = Path(data_dir) / PEER_KEY
    keyring = keyring or Keyring.for_data_dir(data_dir)
    for _ in range(3):
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            seed = os.urandom(32)
            # never replaces a key another process made meanwhile
            if write_sealed_file(path, keyring.seal(seed, PURPOSE), replace=False):
                return seed
            continue
        if is_sealed(blob):
            seed, stale = keyring.unseal(blob, PURPOSE)
            if stale:  # sealed with the generated passphrase the operator has since replaced
                write_sealed_file(path, keyring.seal(seed, PURPOSE), replace=True)
        elif len(blob) == 32:  # plaintext, from before keys were sealed: seal it in place
            seed = blob
            write_sealed_file(path, keyring.seal(seed, PURPOSE), replace=True)
            log.info("sealed the plaintext %s (the peer ID is unchanged)", path)
        else:
            raise ValueError(f"{path} is neither a sealed key nor a 32-byte Ed25519 seed")
        if len(seed) != 32:
            raise ValueError(f"{path} does not hold a 32-byte Ed25519 seed")
        return seed
    raise RuntimeError(f"could not create {path}")


def _load_or_create(data_dir: Path, keyring: Keyring | None = None) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(peer_seed(data_dir, keyring))


def peer_id_of(public_key: bytes) -> str:
    """libp2p peer ID of a raw 32-byte Ed25519 public key."""
    proto = b"\x08\x01\x12\x20" + public_key  # PublicKey{Type: Ed25519, Data: key}
    return b58encode(b"\x00" + bytes([len(proto)]) + proto)  # identity multihash (<= 42 bytes)


def node_peer_id(data_dir: Path, keyring: Keyring | None = None) -> str:
    key = _load_or_create(Path(data_dir), keyring)
    return peer_id_of(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def own_delegate(server: dict, data_dir: Path, keyring: Keyring | None = None) -> str:
    """The node's own HTTP address as a PSA delegate: `[server] public_url` (else
    http://host:port) as a multiaddr, with this node's peer ID, e.g.
    /ip4/127.0.0.1/tcp/8787/http/p2p/12D3KooW... ValueError on a bad public_url."""
    return f"{node_multiaddr(server['public_url'], server['host'], server['port'])}/p2p/{node_peer_id(data_dir, keyring)}"
