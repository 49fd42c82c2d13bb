"""IPNS (specs.ipfs.tech/ipns/ipns-record): libp2p keys and names (keys.py), records
(record.py: create, verify), the records and keys kept in the metadata store
(store.py), the node's keys and publishing (keystore.py), the name system the
resolver uses (system.py) and the republisher (republisher.py)."""
from .keys import InvalidIpnsName, IpnsName, PrivateKey, PublicKey
from .record import MAX_RECORD_SIZE, Record, RecordInvalid

__all__ = ["InvalidIpnsName", "IpnsName", "MAX_RECORD_SIZE", "PrivateKey", "PublicKey", "Record", "RecordInvalid"]
