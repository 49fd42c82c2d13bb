"""IPNS records (naming/ipns/record.py, keys.py): every verification rule of the
ipns-record spec, each refused with the rule named; creation for every key type;
names in their accepted encodings."""
from __future__ import annotations

import time

import cbor2
import pytest

from naming.ipns import record as records
from naming.ipns.keys import IpnsName, InvalidIpnsName, PrivateKey, PublicKey
from naming.ipns.record import (F_DATA, F_PUBKEY, F_SEQUENCE, F_SIG_V1, F_SIG_V2, F_TTL, F_VALIDITY, F_VALIDITY_TYPE,
                                F_VALUE, NS, RecordInvalid, _field)

VALUE = "/ipfs/bafkqaaa"
HOUR = 3600 * NS


def make(key=None, value=VALUE, seq=1, eol_ns=None, ttl_ns=300 * NS, **kw):
    key = key or PrivateKey.generate()
    eol_ns = time.time_ns() + HOUR if eol_ns is None else eol_ns
    return key, records.create(key, value, seq, eol_ns, ttl_ns, **kw)


def fields_of(raw: bytes) -> dict:
    return records._parse_protobuf(raw)


def rebuild(fields: dict) -> bytes:
    return b"".join(_field(n, v) for n, v in sorted(fields.items()))


def signed(key: PrivateKey, data: bytes, **extra) -> bytes:
    """A V2-only record with this exact data, correctly signed."""
    return rebuild({F_SIG_V2: key.sign(b"ipns-signature:" + data), F_DATA: data, **extra})


def rule_of(raw: bytes, name: IpnsName) -> str:
    with pytest.raises(RecordInvalid) as info:
        records.verify(raw, name)
    return info.value.rule


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "secp256k1", "ecdsa"])
def test_create_and_verify_every_key_type(key_type):
    key = PrivateKey.generate(key_type)
    name = key.public_key().name()
    for v1 in (True, False):
        raw = records.create(key, VALUE, 7, time.time_ns() + HOUR, 42 * NS, v1_compatible=v1)
        rec = records.verify(raw, name)
        assert (rec.value, rec.sequence, rec.ttl_ns, rec.has_v1) == (VALUE.encode(), 7, 42 * NS, v1)
        # the key travels in the record only when the name cannot hold it
        assert (rec.public_key is not None) == (key_type in ("rsa", "ecdsa"))
    assert PrivateKey.from_proto(key.to_proto()).public_key() == key.public_key()


def test_data_is_dag_cbor_in_canonical_order():
    key, raw = make(seq=3)
    data = fields_of(raw)[F_DATA]
    doc = cbor2.loads(data)
    assert list(doc) == ["TTL", "Value", "Sequence", "Validity", "ValidityType"]  # length, then bytewise
    assert doc["Value"] == VALUE.encode() and doc["Sequence"] == 3 and doc["ValidityType"] == 0


def test_size_limit():
    key = PrivateKey.generate()
    name = key.public_key().name()
    with pytest.raises(ValueError):
        records.create(key, "/ipfs/bafkqaaa/" + "a" * 11000, 1, time.time_ns() + HOUR, 0)
    data = records.encode_data(("/ipfs/bafkqaaa/" + "a" * 10300).encode(), b"2099-01-01T00:00:00Z", 1, 0)
    assert rule_of(signed(key, data), name) == "size"
    assert rule_of(b"\x00" * (10 * 1024 + 1), name) == "size"


def test_malformed_protobuf():
    name = PrivateKey.generate().public_key().name()
    for raw in (b"", b"\x42\x05ab", b"\x0f", b"\x4a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x08\x01"):
        assert rule_of(raw, name) in ("malformed",), raw


def test_signature_v2_and_data_must_be_present():
    key, raw = make()
    name = key.public_key().name()
    fields = fields_of(raw)
    assert rule_of(rebuild({k: v for k, v in fields.items() if k != F_SIG_V2}), name) == "signature"
    assert rule_of(rebuild({k: v for k, v in fields.items() if k != F_DATA}), name) == "data"
    assert rule_of(rebuild({**fields, F_SIG_V2: b""}), name) == "signature"


def test_v1_only_record_is_refused():
    key, raw = make()
    fields = fields_of(raw)
    v1_only = rebuild({k: v for k, v in fields.items() if k not in (F_SIG_V2, F_DATA)})
    assert rule_of(v1_only, key.public_key().name()) == "signature"


@pytest.mark.parametrize("doc, why", [
    (b"\xa0", "empty map"),
    (cbor2.dumps([1, 2]), "not a map"),
    (cbor2.dumps({"Value": "text", "Validity": b"2099-01-01T00:00:00Z", "ValidityType": 0, "Sequence": 1, "TTL": 0}),
     "Value not bytes"),
    (cbor2.dumps({"Value": b"/ipfs/bafkqaaa", "Validity": b"2099-01-01T00:00:00Z", "ValidityType": 0,
                  "Sequence": -1, "TTL": 0}), "negative sequence"),
    (cbor2.dumps({"Value": b"/ipfs/bafkqaaa", "Validity": b"2099-01-01T00:00:00Z", "ValidityType": 0,
                  "Sequence": 1}), "no TTL"),
    (records.encode_data(b"/ipfs/bafkqaaa", b"2099-01-01T00:00:00Z", 1, 0) + b"\x00", "trailing bytes"),
    (b"\xbf", "truncated"),
])
def test_data_must_be_a_complete_map(doc, why):
    key = PrivateKey.generate()
    assert rule_of(signed(key, doc), key.public_key().name()) == "data", why


def test_public_key_rules():
    key, raw = make()
    other = PrivateKey.generate()
    # a record of one key presented for another name
    assert rule_of(raw, other.public_key().name()) == "signature"
    # an embedded key that is not the name's
    fields = fields_of(raw)
    assert rule_of(rebuild({**fields, F_PUBKEY: other.public_key().to_proto()}), key.public_key().name()) == "public_key"
    # an RSA name is a hash: without the embedded key the record cannot be checked
    rsa = PrivateKey.generate("rsa")
    _, raw = make(rsa, embed_public_key=False)
    assert rule_of(raw, rsa.public_key().name()) == "public_key"
    # a garbage embedded key
    _, raw = make(rsa)
    fields = fields_of(raw)
    assert rule_of(rebuild({**fields, F_PUBKEY: b"\x08\x00\x12\x03abc"}), rsa.public_key().name()) == "public_key"


def test_tampering_breaks_the_signature():
    key, raw = make()
    name = key.public_key().name()
    fields = fields_of(raw)
    data = fields[F_DATA]
    evil = data.replace(b"bafkqaaa", b"bafkqaab")
    assert rule_of(rebuild({**fields, F_DATA: evil, F_VALUE: b"/ipfs/bafkqaab"}), name) == "signature"
    sig = bytearray(fields[F_SIG_V2])
    sig[5] ^= 1
    assert rule_of(rebuild({**fields, F_SIG_V2: bytes(sig)}), name) == "signature"
    # signatureV1 is never what counts: a valid V1 signature does not save a broken V2
    assert rule_of(rebuild({**fields, F_SIG_V2: bytes(sig), F_SIG_V1: fields[F_SIG_V1]}), name) == "signature"


@pytest.mark.parametrize("number, value", [(F_VALUE, b"/ipfs/bafkqaab"), (F_VALIDITY, b"2099-01-01T00:00:00Z"),
                                           (F_VALIDITY_TYPE, 1), (F_SEQUENCE, 2), (F_TTL, 1)])
def test_v1_fields_must_match_the_signed_data(number, value):
    key, raw = make()
    fields = fields_of(raw)
    assert rule_of(rebuild({**fields, number: value}), key.public_key().name()) == "v1_mismatch"


def test_validity_rules():
    key = PrivateKey.generate()
    name = key.public_key().name()
    _, raw = make(key, eol_ns=time.time_ns() - NS)
    assert rule_of(raw, name) == "expired"
    doc = {"Value": b"/ipfs/bafkqaaa", "Validity": b"2099-01-01T00:00:00Z", "ValidityType": 1, "Sequence": 1, "TTL": 0}
    assert rule_of(signed(key, cbor2.dumps(doc, canonical=True)), name) == "validity"
    for bad in (b"tomorrow", b"2099-02-30T00:00:00Z", b"2099-01-01 00:00:00Z", b"\xff"):
        doc = {**doc, "ValidityType": 0, "Validity": bad}
        assert rule_of(signed(key, cbor2.dumps(doc, canonical=True)), name) == "validity", bad
    # an expired record checked as of an earlier time is valid: EOL is the only clock rule
    eol = time.time_ns() - NS
    _, raw = make(key, eol_ns=eol)
    assert records.verify(raw, name, now_ns=eol - NS).eol_ns == eol


def test_rfc3339_with_nanoseconds():
    ns = records.parse_rfc3339_ns("2026-11-25T21:14:16.803728628Z")
    assert records.format_rfc3339_ns(ns) == "2026-11-25T21:14:16.803728628Z"
    assert records.format_rfc3339_ns(ns - ns % NS) == "2026-11-25T21:14:16Z"
    assert records.format_rfc3339_ns(ns - ns % 1000) == "2026-11-25T21:14:16.803728Z"
    assert records.parse_rfc3339_ns("2026-11-25T22:14:16.803728628+01:00") == ns
    assert records.parse_rfc3339_ns("1970-01-01T00:00:00.000000001Z") == 1


def test_names_in_every_encoding():
    key = PrivateKey.generate()
    name = key.public_key().name()
    text = str(name)
    assert text.startswith("k51") and IpnsName.parse(text) == name
    assert IpnsName.parse(name.peer_id) == name and name.peer_id.startswith("12D3KooW")
    assert IpnsName.parse("/ipns/" + text) == name
    assert IpnsName.parse(text.upper()[0].lower() + text[1:]) == name
    from storage.cid import CID
    b32 = CID.parse(text).encode()  # base32 "bafzaa..."
    assert b32.startswith("b") and IpnsName.parse(b32) == name
    rsa = PrivateKey.generate("rsa").public_key()
    assert rsa.name().peer_id.startswith("Qm") and IpnsName.parse(rsa.name().peer_id) == rsa.name()
    for bad in ("", "example.com", "bafkqaaa", "QmNotAKey", "k51qzi5uqu5dl" + "0" * 5, "1" * 60):
        with pytest.raises(InvalidIpnsName):
            IpnsName.parse(bad)


def test_public_key_protobuf_round_trip():
    for t in ("ed25519", "rsa", "secp256k1", "ecdsa"):
        pub = PrivateKey.generate(t).public_key()
        assert PublicKey.from_proto(pub.to_proto()) == pub
        assert pub.name().matches(pub)
