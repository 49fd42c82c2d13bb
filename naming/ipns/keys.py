"""libp2p keys as IPNS uses them: the PublicKey/PrivateKey protobufs, signing and
verifying for each key type, and IPNS names (the multihash of a PublicKey).

Key types (libp2p peer-id spec, "Key Types"):

    Ed25519    Data: 32-byte public key; private: seed || public (64 bytes). Signs the
               message itself (RFC 8032).
    RSA        Data: PKIX (SubjectPublicKeyInfo) DER; private: PKCS#1 DER. RSASSA-PKCS1-v1_5
               over SHA-256; 2048 to 8192 bits, as go-libp2p.
    Secp256k1  Data: 33-byte compressed point; private: the 32-byte scalar. ECDSA over
               SHA-256, DER signatures (low-S when this node signs).
    ECDSA      Data: PKIX DER (P-256, P-384, P-521); private: SEC1 DER. ECDSA over SHA-256.

A name is the identity multihash of the PublicKey protobuf when it is at most 42
bytes (Ed25519, Secp256k1: the key is inside the name), else its SHA-256 multihash
(RSA, ECDSA: the record must carry the key). Its text form is a CIDv1 with the
libp2p-key codec (0x72) in base36 (`k51...`); legacy base58btc peer IDs (`12D3KooW...`,
`Qm...`) and other multibases name the same key.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from storage.cid import CID, LIBP2P_KEY, InvalidCID, b36encode, b58decode, b58encode, decode_varint, encode_varint

RSA, ED25519, SECP256K1, ECDSA = 0, 1, 2, 3
KEY_TYPES = {RSA: "rsa", ED25519: "ed25519", SECP256K1: "secp256k1", ECDSA: "ecdsa"}
TYPE_CODES = {v: k for k, v in KEY_TYPES.items()}
IDENTITY, SHA2_256 = 0x00, 0x12
MAX_INLINE_KEY = 42  # libp2p: public keys up to this size are inlined in the peer ID
RSA_MIN_BITS, RSA_MAX_BITS = 2048, 8192
_SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class BadKey(ValueError):
    """A key that cannot be read or used (bad encoding, unsupported type or size)."""


class InvalidIpnsName(ValueError):
    """Text that is not an IPNS name."""


# --- protobuf: the two fields of PublicKey / PrivateKey ----------------------------------------
def _key_proto(key_type: int, data: bytes) -> bytes:
    return b"\x08" + encode_varint(key_type) + b"\x12" + encode_varint(len(data)) + data


def _parse_key_proto(raw: bytes) -> tuple[int, bytes]:
    """(Type, Data) of a PublicKey/PrivateKey protobuf; BadKey if malformed."""
    key_type, data, pos = None, None, 0
    try:
        while pos < len(raw):
            tag, pos = decode_varint(raw, pos)
            field, wire = tag >> 3, tag & 7
            if wire == 0:
                value, pos = decode_varint(raw, pos)
                if field == 1:
                    key_type = value
            elif wire == 2:
                size, pos = decode_varint(raw, pos)
                if pos + size > len(raw):
                    raise BadKey("truncated key protobuf")
                if field == 2:
                    data = raw[pos:pos + size]
                pos += size
            else:
                raise BadKey(f"unexpected wire type {wire} in a key protobuf")
    except InvalidCID as exc:  # decode_varint's error
        raise BadKey(f"malformed key protobuf: {exc}") from None
    if key_type is None or data is None:
        raise BadKey("key protobuf lacks Type or Data")
    return key_type, data


# --- public keys ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicKey:
    type: int
    data: bytes  # the protobuf's Data, as the key type encodes it

    @classmethod
    def from_proto(cls, raw: bytes) -> "PublicKey":
        key_type, data = _parse_key_proto(raw)
        key = cls(key_type, data)
        key._loaded()  # refuse what cannot be used now, not at verification time
        return key

    def to_proto(self) -> bytes:
        return _key_proto(self.type, self.data)

    @property
    def type_name(self) -> str:
        return KEY_TYPES.get(self.type, f"type {self.type}")

    def _loaded(self):
        try:
            if self.type == ED25519:
                if len(self.data) != 32:
                    raise BadKey(f"an Ed25519 public key is 32 bytes, not {len(self.data)}")
                return ed25519.Ed25519PublicKey.from_public_bytes(self.data)
            if self.type == SECP256K1:
                return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), self.data)
            if self.type in (RSA, ECDSA):
                key = serialization.load_der_public_key(self.data)
                if self.type == RSA:
                    if not isinstance(key, rsa.RSAPublicKey):
                        raise BadKey("an RSA key's Data is not an RSA public key")
                    if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
                        raise BadKey(f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits, not {key.key_size}")
                elif not isinstance(key, ec.EllipticCurvePublicKey) or \
                        not isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)):
                    raise BadKey("an ECDSA key must be a P-256, P-384 or P-521 public key")
                return key
        except (ValueError, UnsupportedAlgorithm) as exc:
            if isinstance(exc, BadKey):
                raise
            raise BadKey(f"invalid {self.type_name} public key: {exc}") from None
        raise BadKey(f"unsupported key type {self.type}")

    def verify(self, signature: bytes, message: bytes) -> bool:
        key = self._loaded()
        try:
            if self.type == ED25519:
                key.verify(signature, message)
            elif self.type == RSA:
                key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:  # ECDSA and Secp256k1: DER signatures over SHA-256
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True

    def multihash(self) -> bytes:
        proto = self.to_proto()
        if len(proto) <= MAX_INLINE_KEY:
            return bytes([IDENTITY, len(proto)]) + proto
        return bytes([SHA2_256, 32]) + hashlib.sha256(proto).digest()

    def name(self) -> "IpnsName":
        return IpnsName(self.multihash())


# --- private keys ---------------------------------------------------------------------------
class PrivateKey:
    """A signing key. `to_proto()` is libp2p's PrivateKey protobuf (what Kubo's
    `ipfs key export --format=libp2p-protobuf-cleartext` writes)."""

    def __init__(self, key_type: int, key):
        self.type = key_type
        self._key = key

    @classmethod
    def generate(cls, type_name: str = "ed25519", bits: int = 2048) -> "PrivateKey":
        if type_name == "ed25519":
            return cls(ED25519, ed25519.Ed25519PrivateKey.generate())
        if type_name == "rsa":
            if not RSA_MIN_BITS <= bits <= RSA_MAX_BITS:
                raise BadKey(f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
            return cls(RSA, rsa.generate_private_key(65537, bits))
        if type_name == "secp256k1":
            return cls(SECP256K1, ec.generate_private_key(ec.SECP256K1()))
        if type_name == "ecdsa":
            return cls(ECDSA, ec.generate_private_key(ec.SECP256R1()))
        raise BadKey(f"unknown key type {type_name!r} (ed25519, rsa, secp256k1, ecdsa)")

    @classmethod
    def from_proto(cls, raw: bytes) -> "PrivateKey":
        key_type, data = _parse_key_proto(raw)
        try:
            if key_type == ED25519:
                if len(data) not in (32, 64):
                    raise BadKey("an Ed25519 private key is 64 bytes (seed and public key)")
                return cls(ED25519, ed25519.Ed25519PrivateKey.from_private_bytes(data[:32]))
            if key_type == RSA:
                key = serialization.load_der_private_key(data, None)
                if not isinstance(key, rsa.RSAPrivateKey):
                    raise BadKey("not an RSA private key")
                return cls(RSA, key)
            if key_type == SECP256K1:
                if len(data) != 32:
                    raise BadKey("a secp256k1 private key is 32 bytes")
                return cls(SECP256K1, ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP256K1()))
            if key_type == ECDSA:
                key = serialization.load_der_private_key(data, None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise BadKey("not an ECDSA private key")
                return cls(ECDSA, key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            if isinstance(exc, BadKey):
                raise
            raise BadKey(f"invalid {KEY_TYPES.get(key_type, key_type)} private key: {exc}") from None
        raise BadKey(f"unsupported key type {key_type}")

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> "PrivateKey":
        return cls(ED25519, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def type_name(self) -> str:
        return KEY_TYPES[self.type]

    def to_proto(self) -> bytes:
        if self.type == ED25519:
            seed = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                           serialization.NoEncryption())
            data = seed + self.public_key().data
        elif self.type == RSA:
            data = self._key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption())
        elif self.type == SECP256K1:
            data = self._key.private_numbers().private_value.to_bytes(32, "big")
        else:
            data = self._key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption())
        return _key_proto(self.type, data)

    def public_key(self) -> PublicKey:
        pub = self._key.public_key()
        if self.type == ED25519:
            data = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif self.type == SECP256K1:
            data = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
        else:
            data = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return PublicKey(self.type, data)

    def sign(self, message: bytes) -> bytes:
        if self.type == ED25519:
            return self._key.sign(message)
        if self.type == RSA:
            return self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        signature = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        if self.type == SECP256K1:  # low-S, as libp2p's secp256k1 signer makes them
            r, s = decode_dss_signature(signature)
            if s > _SECP256K1_ORDER // 2:
                signature = encode_dss_signature(r, _SECP256K1_ORDER - s)
        return signature


# --- names ----------------------------------------------------------------------------------
def _check_multihash(mh: bytes) -> None:
    try:
        code, pos = decode_varint(mh, 0)
        size, pos = decode_varint(mh, pos)
    except InvalidCID as exc:
        raise InvalidIpnsName(f"malformed multihash: {exc}") from None
    if len(mh) - pos != size:
        raise InvalidIpnsName("the multihash's length does not match its digest")
    if code == IDENTITY:
        if size > MAX_INLINE_KEY:
            raise InvalidIpnsName(f"an identity multihash of a key is at most {MAX_INLINE_KEY} bytes")
    elif code == SHA2_256:
        if size != 32:
            raise InvalidIpnsName("a sha2-256 multihash has a 32-byte digest")
    else:
        raise InvalidIpnsName(f"multihash code 0x{code:x} is not one libp2p keys are named by "
                              "(identity or sha2-256)")


@dataclass(frozen=True)
class IpnsName:
    multihash: bytes  # of the PublicKey protobuf

    @classmethod
    def parse(cls, text: str) -> "IpnsName":
        """From any accepted encoding: a CIDv1 with the libp2p-key codec in any multibase
        (canonical: base36 `k51...`), or a legacy base58btc peer ID (`12D3KooW...`, `Qm...`).
        An optional `/ipns/` prefix is ignored. InvalidIpnsName otherwise."""
        if text.startswith("/ipns/"):
            text = text[len("/ipns/"):]
        if not text or len(text) > 256 or "." in text:
            raise InvalidIpnsName(f"{text[:100]!r} is not an IPNS name")
        if text.startswith(("Qm", "1")):  # a base58btc multihash (peer.Decode)
            try:
                mh = b58decode(text)
            except InvalidCID as exc:
                raise InvalidIpnsName(f"{text[:100]!r} is not a base58btc peer ID: {exc}") from None
            _check_multihash(mh)
            return cls(mh)
        try:
            cid = CID.parse(text)
        except (InvalidCID, ValueError) as exc:
            raise InvalidIpnsName(f"{text[:100]!r} is not an IPNS name: {exc}") from None
        if cid.version != 1 or cid.codec != LIBP2P_KEY:
            raise InvalidIpnsName(f"CID codec {cid.codec_name} is not allowed for IPNS names, use libp2p-key (0x72)")
        _check_multihash(cid.multihash)
        return cls(cid.multihash)

    @classmethod
    def from_routing_key(cls, key: bytes) -> "IpnsName":
        if not key.startswith(b"/ipns/"):
            raise InvalidIpnsName("an IPNS routing key starts with /ipns/")
        mh = key[len(b"/ipns/"):]
        _check_multihash(mh)
        return cls(mh)

    def __str__(self) -> str:
        """Canonical: CIDv1, libp2p-key, base36."""
        return "k" + b36encode(b"\x01" + encode_varint(LIBP2P_KEY) + self.multihash)

    @property
    def peer_id(self) -> str:
        """The legacy base58btc form (`12D3KooW...`)."""
        return b58encode(self.multihash)

    @property
    def routing_key(self) -> bytes:
        return b"/ipns/" + self.multihash

    def inline_public_key(self) -> PublicKey | None:
        """The public key inside an identity multihash (Ed25519, Secp256k1), else None."""
        if self.multihash[0] != IDENTITY:
            return None
        return PublicKey.from_proto(self.multihash[2:])

    def matches(self, key: PublicKey) -> bool:
        return key.multihash() == self.multihash


def is_ipns_name(text: str) -> bool:
    try:
        IpnsName.parse(text)
    except (InvalidIpnsName, BadKey):
        return False
    return True
