"""IPNS records (specs.ipfs.tech/ipns/ipns-record): the IpnsEntry protobuf, its
DAG-CBOR `data`, creation (V1+V2, as boxo's NewRecord) and verification, rule by
rule in the spec's order, failing on the first broken rule:

    size         the serialized record is at most 10 KiB (MAX_RECORD_SIZE)
    malformed    the protobuf parses
    signature    signatureV2 is present (and, below, verifies)
    data         `data` is present and a DAG-CBOR map with Value (bytes), Validity
                 (bytes), ValidityType, Sequence and TTL (non-negative integers)
    public_key   the key: the record's pubKey (which must hash to the name) or the key
                 inlined in the name (identity multihash); a supported, valid key
    signature    signatureV2 verifies over "ipns-signature:" + data
    v1_mismatch  if signatureV1 or value is present, value, validity, validityType,
                 sequence and ttl equal the CBOR ones
    validity     ValidityType is 0 (EOL) and Validity an RFC 3339 time
    expired      the EOL is in the future

signatureV1 is never verified or trusted (the spec: "MUST never be used").

Written here over cbor2 and cryptography because no maintained Python IPNS library
exists (the ones on PyPI are unmaintained and predate V2 records); the IpnsEntry
protobuf has seven scalar fields, so it is read and written by hand rather than
through generated protobuf code, which would also accept what the spec refuses
(unknown wire types, repeated fields).
"""
from __future__ import annotations

import calendar
import datetime
import io
import re
import time
from dataclasses import dataclass

import cbor2

from storage.cid import InvalidCID, decode_varint, encode_varint

from .keys import BadKey, IpnsName, PrivateKey, PublicKey

MAX_RECORD_SIZE = 10 * 1024
SIGNATURE_V2_PREFIX = b"ipns-signature:"
VALIDITY_EOL = 0
INT64_MAX = 2**63 - 1
NS = 1_000_000_000

# IpnsEntry field numbers
F_VALUE, F_SIG_V1, F_VALIDITY_TYPE, F_VALIDITY, F_SEQUENCE, F_TTL, F_PUBKEY, F_SIG_V2, F_DATA = range(1, 10)
_BYTES_FIELDS = {F_VALUE, F_SIG_V1, F_VALIDITY, F_PUBKEY, F_SIG_V2, F_DATA}
_INT_FIELDS = {F_VALIDITY_TYPE, F_SEQUENCE, F_TTL}


class RecordInvalid(ValueError):
    """A record that breaks a rule; `rule` names it (see the module docstring)."""

    def __init__(self, rule: str, message: str):
        super().__init__(f"{message} (rule: {rule})")
        self.rule = rule
        self.message = message


# --- RFC 3339 with nanoseconds, as Go's time.RFC3339Nano ------------------------------------
_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch; ValueError if not RFC 3339."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"{text[:64]!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 59):
        raise ValueError(f"{text[:64]!r} is not a valid time")
    try:
        datetime.date(year, month, day)  # refuses Feb 30 and friends
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except ValueError:
        raise ValueError(f"{text[:64]!r} is not a valid date") from None
    zone = m.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError(f"{text[:64]!r} has an invalid offset")
        seconds -= sign * (hours * 3600 + minutes * 60)
    frac = (m.group(7) or "").ljust(9, "0")
    return seconds * NS + int(frac)


def format_rfc3339_ns(ns: int) -> str:
    """UTC, fraction without trailing zeros (Go's time.RFC3339Nano)."""
    seconds, frac = divmod(ns, NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


# --- protobuf -------------------------------------------------------------------------------
def _parse_protobuf(raw: bytes) -> dict[int, bytes | int]:
    fields: dict[int, bytes | int] = {}
    pos = 0
    try:
        while pos < len(raw):
            tag, pos = decode_varint(raw, pos)
            field, wire = tag >> 3, tag & 7
            if field == 0:
                raise RecordInvalid("malformed", "field number 0 in the protobuf")
            if wire == 0:
                value, pos = decode_varint(raw, pos)
                if field in _BYTES_FIELDS:
                    raise RecordInvalid("malformed", f"field {field} must be bytes")
                if field in _INT_FIELDS:
                    fields[field] = value
            elif wire == 2:
                size, pos = decode_varint(raw, pos)
                if pos + size > len(raw):
                    raise RecordInvalid("malformed", "a length-delimited field runs past the end of the record")
                if field in _INT_FIELDS:
                    raise RecordInvalid("malformed", f"field {field} must be a varint")
                if field in _BYTES_FIELDS:
                    fields[field] = raw[pos:pos + size]
                pos += size
            elif wire == 1:  # unknown fixed64: skipped, as protobuf parsers do
                pos += 8
            elif wire == 5:  # unknown fixed32
                pos += 4
            else:
                raise RecordInvalid("malformed", f"wire type {wire} is not valid protobuf")
            if pos > len(raw):
                raise RecordInvalid("malformed", "the record is truncated")
    except InvalidCID as exc:  # a bad varint
        raise RecordInvalid("malformed", f"the protobuf is malformed: {exc}") from None
    if fields.get(F_VALIDITY_TYPE, 0) > INT64_MAX:
        raise RecordInvalid("malformed", "validityType is out of range")
    return fields


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return encode_varint(number << 3) + encode_varint(value)
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


# --- DAG-CBOR data ------------------------------------------------------------------------------
def _decode_data(data: bytes) -> dict:
    stream = io.BytesIO(data)
    try:
        doc = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types for bad input
        raise RecordInvalid("data", f"data is not valid DAG-CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise RecordInvalid("data", "data has bytes after its CBOR document")
    if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
        raise RecordInvalid("data", "data must be a DAG-CBOR map with string keys")
    for key in ("Value", "Validity"):
        if not isinstance(doc.get(key), bytes):
            raise RecordInvalid("data", f"data[{key}] must be present, as bytes")
    for key in ("ValidityType", "Sequence", "TTL"):
        value = doc.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordInvalid("data", f"data[{key}] must be present, as an integer")
        if not 0 <= value <= INT64_MAX:
            raise RecordInvalid("data", f"data[{key}] must be between 0 and 2^63-1")
    return doc


def encode_data(value: bytes, validity: bytes, sequence: int, ttl_ns: int) -> bytes:
    # DAG-CBOR: map keys sorted by length, then bytewise (cbor2's canonical order for text keys)
    return cbor2.dumps({"Value": value, "Validity": validity, "ValidityType": VALIDITY_EOL, "Sequence": sequence,
                        "TTL": ttl_ns}, canonical=True)


# --- the record -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """A verified record (or, from `parse`, a parsed one not yet verified)."""
    raw: bytes
    value: bytes  # data[Value]: a content path, e.g. b"/ipfs/bafy..."
    validity: bytes  # data[Validity]: RFC 3339 EOL
    validity_type: int
    sequence: int
    ttl_ns: int
    eol_ns: int | None  # parsed Validity (None if ValidityType is not EOL)
    has_v1: bool  # legacy V1 fields present (V1+V2 record)
    public_key: bytes | None  # the embedded pubKey protobuf, if any

    @property
    def value_text(self) -> str:
        return self.value.decode("utf-8", "replace")

    @property
    def ttl_seconds(self) -> float:
        return self.ttl_ns / NS

    def seconds_left(self, now_ns: int | None = None) -> float:
        if self.eol_ns is None:
            return 0.0
        return (self.eol_ns - (time.time_ns() if now_ns is None else now_ns)) / NS

    def cache_seconds(self, now_ns: int | None = None) -> float:
        """How long an answer from this record may be cached: its TTL, never past its EOL."""
        return max(0.0, min(self.ttl_seconds, self.seconds_left(now_ns)))

    def newer_than(self, other: "Record") -> int:
        """1 if self should replace other, -1 if other wins, 0 if neither (boxo's compare:
        a V2 signature, then the higher sequence, then the later EOL)."""
        if self.sequence != other.sequence:
            return 1 if self.sequence > other.sequence else -1
        a, b = self.eol_ns or 0, other.eol_ns or 0
        return (a > b) - (a < b)


def parse(raw: bytes) -> tuple[dict, dict]:
    """The protobuf fields and the CBOR data of a record, checking the rules that need
    no key (size, malformed, signature presence, data)."""
    if len(raw) > MAX_RECORD_SIZE:
        raise RecordInvalid("size", f"the record is {len(raw)} bytes, over the {MAX_RECORD_SIZE}-byte limit")
    if not raw:
        raise RecordInvalid("malformed", "the record is empty")
    fields = _parse_protobuf(raw)
    if not fields.get(F_SIG_V2):
        raise RecordInvalid("signature", "signatureV2 is missing or empty (V1-only records are not accepted)")
    data = fields.get(F_DATA)
    if not data:
        raise RecordInvalid("data", "the data field is missing or empty")
    return fields, _decode_data(data)


def verify(raw: bytes, name: IpnsName, now_ns: int | None = None) -> Record:
    """The record, if it is a valid record for `name` now; RecordInvalid naming the
    first rule it breaks otherwise."""
    fields, doc = parse(raw)
    # (3) the key: embedded, and then it must be the name's; or inlined in the name
    embedded = fields.get(F_PUBKEY)
    try:
        if embedded:
            key = PublicKey.from_proto(embedded)
            if not name.matches(key):
                raise RecordInvalid("public_key", f"the record's public key ({key.type_name}) is not the key of {name}")
        else:
            key = name.inline_public_key()
            if key is None:
                raise RecordInvalid("public_key", f"{name} is a hash of its key, and the record does not carry the key")
    except BadKey as exc:
        raise RecordInvalid("public_key", str(exc)) from None
    # (5, 6) signatureV2 over the prefix and the raw CBOR
    if not key.verify(fields[F_SIG_V2], SIGNATURE_V2_PREFIX + fields[F_DATA]):
        raise RecordInvalid("signature", f"signatureV2 does not verify with the {key.type_name} key of {name}")
    # (7) legacy fields, when present, must say what the signed data says
    has_v1 = bool(fields.get(F_SIG_V1)) or bool(fields.get(F_VALUE))
    if has_v1:
        for number, key_name, label in ((F_VALUE, "Value", "value"), (F_VALIDITY, "Validity", "validity"),
                                        (F_VALIDITY_TYPE, "ValidityType", "validityType"),
                                        (F_SEQUENCE, "Sequence", "sequence"), (F_TTL, "TTL", "ttl")):
            pb = fields.get(number, b"" if number in _BYTES_FIELDS else 0)
            if pb != doc[key_name]:
                raise RecordInvalid("v1_mismatch", f"the protobuf's {label} differs from data[{key_name}]")
    # (8) validity
    if doc["ValidityType"] != VALIDITY_EOL:
        raise RecordInvalid("validity", f"ValidityType {doc['ValidityType']} is not supported (only 0, EOL)")
    try:
        eol_ns = parse_rfc3339_ns(doc["Validity"].decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordInvalid("validity", f"Validity is not an RFC 3339 time: {exc}") from None
    now_ns = time.time_ns() if now_ns is None else now_ns
    if eol_ns <= now_ns:
        raise RecordInvalid("expired", f"the record expired at {doc['Validity'].decode()}")
    return Record(raw, doc["Value"], doc["Validity"], doc["ValidityType"], doc["Sequence"], doc["TTL"], eol_ns,
                  has_v1, embedded or None)


def create(key: PrivateKey, value: str, sequence: int, eol_ns: int, ttl_ns: int, *, v1_compatible: bool = True,
           embed_public_key: bool | None = None) -> bytes:
    """A signed record (boxo's NewRecord): V2 signature over the DAG-CBOR data; with
    v1_compatible, the legacy V1 fields and signature too (for old resolvers); the
    public key embedded when the name cannot carry it (RSA, ECDSA)."""
    if not 0 <= sequence <= INT64_MAX or not 0 <= ttl_ns <= INT64_MAX:
        raise ValueError("sequence and ttl must be between 0 and 2^63-1")
    value_b = value.encode()
    validity = format_rfc3339_ns(eol_ns).encode()
    data = encode_data(value_b, validity, sequence, ttl_ns)
    sig2 = key.sign(SIGNATURE_V2_PREFIX + data)
    public = key.public_key()
    if embed_public_key is None:
        embed_public_key = public.name().inline_public_key() is None
    out = b""
    if v1_compatible:
        sig1 = key.sign(value_b + validity + str(VALIDITY_EOL).encode())
        out += (_field(F_VALUE, value_b) + _field(F_SIG_V1, sig1) + _field(F_VALIDITY_TYPE, VALIDITY_EOL)
                + _field(F_VALIDITY, validity) + _field(F_SEQUENCE, sequence) + _field(F_TTL, ttl_ns))
    if embed_public_key:
        out += _field(F_PUBKEY, public.to_proto())
    out += _field(F_SIG_V2, sig2) + _field(F_DATA, data)
    if len(out) > MAX_RECORD_SIZE:
        raise ValueError(f"the record would be {len(out)} bytes, over the {MAX_RECORD_SIZE}-byte limit")
    return out
