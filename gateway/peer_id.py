"""The node's libp2p peer identity: an Ed25519 key kept in `data_dir/peer.key`
(mode 0600, made once), and the peer ID derived from it as libp2p does
(identity multihash of the protobuf PublicKey, base58btc: `12D3KooW...`).

Why a node without libp2p has one: Pinning Services API clients act on
`delegates`, and Kubo's (`ipfs pin remote add`) parses every delegate with
`peer.AddrInfoFromP2pAddr`, failing the whole command on an address without
`/p2p/<peer id>`. The node's delegate is its HTTP address, so it is written
`/ip4/A/tcp/P/http/p2p/<peer id>`: a valid libp2p HTTP multiaddr that Kubo
accepts (its swarm connect to it fails quietly) and that HTTP clients (boxo's
ExtractHTTPAddress, outbound/multiaddr.py) read as http://A:P.
"""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from outbound.multiaddr import node_multiaddr
from storage.cid import b58encode

PEER_KEY = "peer.key"


def _load_or_create(path: Path) -> Ed25519PrivateKey:
    try:
        seed = path.read_bytes()
    except FileNotFoundError:
        seed = os.urandom(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, seed)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            seed = path.read_bytes()
        finally:
            os.unlink(tmp)
    if len(seed) != 32:
        raise ValueError(f"{path} is not a 32-byte Ed25519 key")
    return Ed25519PrivateKey.from_private_bytes(seed)


def peer_id_of(public_key: bytes) -> str:
    """libp2p peer ID of a raw 32-byte Ed25519 public key."""
    proto = b"\x08\x01\x12\x20" + public_key  # PublicKey{Type: Ed25519, Data: key}
    return b58encode(b"\x00" + bytes([len(proto)]) + proto)  # identity multihash (<= 42 bytes)


def node_peer_id(data_dir: Path) -> str:
    key = _load_or_create(Path(data_dir) / PEER_KEY)
    return peer_id_of(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def own_delegate(server: dict, data_dir: Path) -> str:
    """The node's own HTTP address as a PSA delegate: `[server] public_url` (else
    http://host:port) as a multiaddr, with this node's peer ID, e.g.
    /ip4/127.0.0.1/tcp/8787/http/p2p/12D3KooW... ValueError on a bad public_url."""
    return f"{node_multiaddr(server['public_url'], server['host'], server['port'])}/p2p/{node_peer_id(data_dir)}"
