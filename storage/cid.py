"""Content identifiers: parse and format CIDv0/CIDv1 (multibase, multicodec, multihash).

Kept dependency-free: the node needs only a handful of codes, and parsing must
reject bad input with a clear message (it becomes a 400 at the HTTP edge).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

DAG_PB = 0x70
RAW = 0x55
DAG_CBOR = 0x71
DAG_JSON = 0x0129
LIBP2P_KEY = 0x72
SHA2_256 = 0x12
IDENTITY = 0x00

CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw", DAG_CBOR: "dag-cbor", DAG_JSON: "dag-json", LIBP2P_KEY: "libp2p-key"}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class InvalidCID(ValueError):
    """The text or bytes are not a CID this node understands."""


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """Return (value, new_pos). Raises InvalidCID on truncation or overlong input."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise InvalidCID("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise InvalidCID("varint too long")


def _base_encode(data: bytes, alphabet: str) -> str:
    """Big-endian base-N of data, leading zero bytes as the alphabet's zero (base58, base36)."""
    n = int.from_bytes(data, "big")
    base = len(alphabet)
    out = []
    while n:
        n, r = divmod(n, base)
        out.append(alphabet[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return alphabet[0] * pad + "".join(reversed(out))


def b58encode(data: bytes) -> str:
    return _base_encode(data, _B58)


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise InvalidCID(f"invalid base58 character {c!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def _b32decode(text: str) -> bytes:
    text = text.upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _b36decode(text: str) -> bytes:
    text = text.lower()
    n = 0
    for c in text:
        i = _B36.find(c)
        if i < 0:
            raise InvalidCID(f"invalid base36 character {c!r}")
        n = n * 36 + i
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("0"))
    return b"\0" * pad + body


def b36encode(data: bytes) -> str:
    """Multibase base36 (lower case) without its "k" prefix: leading zero bytes as "0"."""
    return _base_encode(data, _B36)


def _b64decode(text: str, url: bool) -> bytes:
    text = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text) if url else base64.b64decode(text, validate=True)


_MULTIBASE_DECODERS = {
    "b": _b32decode,
    "B": _b32decode,
    "z": b58decode,
    "f": bytes.fromhex,
    "F": bytes.fromhex,
    "k": _b36decode,
    "K": _b36decode,
    "u": lambda t: _b64decode(t, True),
    "m": lambda t: _b64decode(t, False),
}


@dataclass(frozen=True, slots=True)
class CID:
    version: int
    codec: int
    multihash: bytes

    # -- construction -------------------------------------------------
    @classmethod
    def parse(cls, value: "str | bytes | CID") -> "CID":
        if isinstance(value, CID):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value))
        if not isinstance(value, str) or not value:
            raise InvalidCID("empty CID")
        if len(value) == 46 and value.startswith("Qm"):
            return cls.from_bytes(b58decode(value))
        decoder = _MULTIBASE_DECODERS.get(value[0])
        if decoder is None:
            raise InvalidCID(f"unsupported multibase prefix {value[0]!r} in {value[:60]!r}")
        try:
            raw = decoder(value[1:])
        except InvalidCID:
            raise
        except Exception as exc:  # binascii.Error, ValueError
            raise InvalidCID(f"invalid multibase encoding: {exc}") from None
        if raw[:1] == b"\x12":
            raise InvalidCID("CIDv0 must be base58btc encoded")
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "CID":
        cid, end = cls.read(raw, 0)
        if end != len(raw):
            raise InvalidCID("trailing bytes after CID")
        return cid

    @classmethod
    def read(cls, buf: bytes, pos: int) -> tuple["CID", int]:
        """Read a binary CID from buf at pos; return it and the position after it."""
        if buf[pos : pos + 2] == b"\x12\x20":
            mh = bytes(buf[pos : pos + 34])
            if len(mh) != 34:
                raise InvalidCID("truncated CIDv0")
            return cls(0, DAG_PB, mh), pos + 34
        version, p = decode_varint(buf, pos)
        if version != 1:
            raise InvalidCID(f"unsupported CID version {version}")
        codec, p = decode_varint(buf, p)
        start = p
        _code, p = decode_varint(buf, p)
        length, p = decode_varint(buf, p)
        if p + length > len(buf):
            raise InvalidCID("truncated multihash")
        return cls(1, codec, bytes(buf[start : p + length])), p + length

    @classmethod
    def from_digest(cls, data: bytes, codec: int = RAW, version: int = 1) -> "CID":
        mh = b"\x12\x20" + hashlib.sha256(data).digest()
        return cls(version, codec, mh)

    # -- properties ----------------------------------------------------
    @property
    def hash_code(self) -> int:
        return decode_varint(self.multihash, 0)[0]

    @property
    def digest(self) -> bytes:
        _code, p = decode_varint(self.multihash, 0)
        _len, p = decode_varint(self.multihash, p)
        return self.multihash[p:]

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, hex(self.codec))

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def v1(self) -> "CID":
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def encode(self) -> str:
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + base64.b32encode(self.to_bytes()).decode().lower().rstrip("=")

    def encode_base36(self) -> str:
        """CIDv1 in multibase base36 ("k..."): what subdomain gateways use where base32
        would not fit a 63-character DNS label (libp2p keys: k51...)."""
        return "k" + b36encode(self.v1().to_bytes())

    def __str__(self) -> str:
        return self.encode()

    def verify(self, data: bytes) -> bool:
        """True if data hashes to this CID's multihash (sha2-256 and identity)."""
        code = self.hash_code
        if code == SHA2_256:
            return hashlib.sha256(data).digest() == self.digest
        if code == IDENTITY:
            return data == self.digest
        return False


def record_key(cid: "CID | str") -> str:
    """The key under which the metadata store files content: CIDv0 and CIDv1 of the same
    dag-pb root share it (CIDv1, base32)."""
    return CID.parse(cid).v1().encode()
