"""The OpenAPI document is valid, strict, and true: every answer the node gives is
documented with a schema the body matches, and the patterns accept what the node
accepts (and describe what it refuses)."""
from __future__ import annotations

import base64
import json
import random
import re
import string

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from gateway import openapi
from gateway.content_api import clean_relpath
from gateway.errors import HTTPError
from gateway.openapi import openapi_document
from gateway import psa
from storage.cid import CID, DAG_CBOR, b58encode, encode_varint
from storage.metadata import decode_cursor, encode_cursor
from tests.gateway_helpers import upload

DOC = openapi_document()
REGISTRY = Registry().with_resource("urn:hearth", Resource.from_contents(DOC, default_specification=DRAFT4))


def test_document_is_valid_openapi():
    validate(DOC)


def _operations():
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield path, method, op


def _deref(obj: dict) -> dict:
    while "$ref" in obj:
        node = DOC
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def test_every_error_response_has_a_schema():
    for path, method, op in _operations():
        assert op["responses"], (path, method)
        for status, resp in op["responses"].items():
            code = int(status)
            if code >= 400 and method != "head":
                content = resp["content"]
                want = "Failure" if path.startswith("/psa/") else "Readiness" if path == "/readyz" else "Error"
                schema = {"$ref": f"#/components/schemas/{want}"}
                error = {"$ref": "#/components/schemas/Error"}
                got = content["application/json"]["schema"]
                if code == 400 and want != "Error":  # aiohttp's parser may refuse any request (node shape)
                    assert got in (error, {"oneOf": [schema, error]}), (path, method, status)
                else:
                    assert got == schema, (path, method, status)
            if code in (502, 503, 504):
                assert "Retry-After" in resp["headers"], (path, method, status)
            if code == 401:
                assert "WWW-Authenticate" in resp["headers"], (path, method, status)
            if 200 <= code < 300 and code not in (202, 204) or (code == 202 and method == "post"):
                if method != "head":
                    assert resp.get("content"), (path, method, status)
        if op.get("security"):
            assert "401" in op["responses"], (path, method)


def test_psa_pin_cid_has_min_length():
    pin = DOC["components"]["schemas"]["Pin"]
    assert pin["properties"]["cid"]["minLength"] == 1 and pin["required"] == ["cid"]


def _multibase_spellings(cid: CID) -> list[str]:
    raw = cid.to_bytes()
    n = int.from_bytes(raw, "big")
    b36 = ""
    while n:
        n, r = divmod(n, 36)
        b36 = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + b36
    b32 = base64.b32encode(raw).decode().rstrip("=")
    return [
        "b" + b32.lower(), "B" + b32, "b" + b32.lower() + "=" * (-len(b32) % 8),
        "k" + b36, "K" + b36.upper(), "z" + b58encode(raw), "f" + raw.hex(), "F" + raw.hex().upper(),
        "f" + " ".join(f"{x:02x}" for x in raw),
        "u" + base64.urlsafe_b64encode(raw).decode().rstrip("="), "m" + base64.b64encode(raw).decode().rstrip("="),
    ]


def test_cid_pattern_accepts_what_the_node_accepts():
    pattern = re.compile(openapi.CID_PATTERN)
    path_pattern = re.compile(openapi.CID_PATH_PATTERN)
    item_pattern = re.compile(openapi.CID_LIST_ITEM_PATTERN)
    cids = [CID.from_digest(b"x"), CID.from_digest(b"y", codec=0x70), CID.from_digest(b"z", codec=DAG_CBOR),
            CID(1, 0x55, b"\x00\x03abc"),  # identity multihash (inline)
            CID(1, 0x0129, encode_varint(0xB220) + b"\x20" + bytes(32))]  # blake2b-256, dag-json
    v0 = CID.from_digest(b"v0", codec=0x70, version=0)
    texts = [str(v0)] + [s for c in cids for s in _multibase_spellings(c)]
    for text in texts:
        assert CID.parse(text), text  # the node accepts it...
        assert pattern.fullmatch(text), text  # ...so the schema must too
        assert path_pattern.fullmatch(text) or "/" in text, text
        assert item_pattern.fullmatch(text) or "," in text, text
    for text in ["", "not-a-cid", "Qm", "Qm" + "1" * 43, "x" + str(cids[0])[1:], "bafy/../x", "Qm0" + "a" * 43]:
        assert not pattern.fullmatch(text) or not path_pattern.fullmatch(text), text
        with pytest.raises(ValueError):
            CID.parse(text)


def test_cursor_pattern_matches_decode_cursor():
    pattern = re.compile(openapi.CURSOR_PATTERN)
    for rid in (1, 7, 10, 99, 123456789, 2**63 - 1):
        assert pattern.fullmatch(encode_cursor(rid))
    for text in ["", "@@", "a" * 27, "MQ==", "a b", "0", "MA", "MR", "OTIyMzM3MjAzNjg1NDc3NTgwOA"]:
        assert not pattern.fullmatch(text)
        with pytest.raises(ValueError):
            decode_cursor(text)
    # exact: the pattern matches a string if and only if decode_cursor takes it
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(20000):
        text = list(encode_cursor(rng.randrange(1, min(2**63, 10 ** rng.randint(1, 19)))))
        text[rng.randrange(len(text))] = rng.choice(alphabet)
        if rng.random() < 0.3:
            text.append(rng.choice(alphabet))
        text = "".join(text)
        try:
            decode_cursor(text)
            accepted = True
        except ValueError:
            accepted = False
        assert bool(pattern.fullmatch(text)) == accepted, text


@pytest.mark.parametrize("name", ["a.txt", "ü.txt", "a b", "100%25", "..a", "a..", "...", ".hidden", "", ".", "..",
                                  "a/b", "/a", "a\\b", "a\nb", "a\x7fb", "a\x85b", "a\u2028b", "😀"])
def test_filename_pattern_matches_clean_relpath(name):
    pattern = re.compile(openapi.FILENAME_PATTERN)
    try:
        accepted = name == "" or ("/" not in clean_relpath(name))
    except HTTPError:
        accepted = False
    assert bool(pattern.fullmatch(name)) == accepted, name


@pytest.mark.parametrize("addr", ["/ip4/1.2.3.4/tcp/4001", "/dns/x/tcp/1/p2p/Qm", "/a/b", "/", "//", "/a", "/a/",
                                  "a/b", "/a/b c", "/a/b\x1c", "/a/b\u3000", "/a/b\ufeff", "/a//b",
                                  "http://gw.example/", "HTTPS://gw.example:8080", "http://", "ftp://x", "http://a b"])
def test_origin_pattern_covers_the_node(addr):
    accepted = getattr(psa, "_origin_ok", psa._multiaddr_ok)(addr)
    matched = bool(re.fullmatch(openapi.ORIGIN_PATTERN, addr))
    assert matched or not accepted, addr  # never refuses what the node takes
    if addr.startswith("/"):  # multiaddrs: exactly the node's rule
        assert matched == accepted == bool(re.fullmatch(openapi.MULTIADDR_PATTERN, addr)), addr


# --- live answers match the documented responses ----------------------------------------------------
def _rooted(schema):
    """Local $refs made absolute (the registry knows the document as urn:hearth)."""
    if isinstance(schema, dict):
        return {k: ("urn:hearth" + v if k == "$ref" and v.startswith("#") else _rooted(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rooted(v) for v in schema]
    return schema


def _check(path: str, method: str, resp, body: bytes) -> None:
    op = DOC["paths"][path][method]
    documented = op["responses"].get(str(resp.status))
    assert documented is not None, f"{method.upper()} {path} answered {resp.status}, which is not documented"
    documented = _deref(documented)
    for name, header in documented.get("headers", {}).items():
        if _deref(header).get("required"):
            assert name in resp.headers, f"{method.upper()} {path} {resp.status} lacks {name}"
    content = documented.get("content")
    if not content or method == "head":
        return
    ctype = resp.headers.get("Content-Type", "").split(";")[0]
    if "application/json" in content:
        assert ctype == "application/json", (path, method, resp.status, ctype)
        schema = _rooted(content["application/json"]["schema"])
        validator = OAS30Validator(schema,
                                   registry=REGISTRY, format_checker=OAS30Validator.FORMAT_CHECKER)
        errors = [e.message for e in validator.iter_errors(json.loads(body))]
        assert not errors, (method, path, resp.status, errors, body[:300])


async def test_live_answers_are_documented(node):
    rec = await upload(node, b"documented", "d.txt")
    cid = rec["cid"]
    calls = [
        ("get", "/healthz", "/healthz", {}),
        ("get", "/readyz", "/readyz", {}),
        ("get", "/metrics", "/metrics", {}),
        ("get", "/openapi.json", "/openapi.json", {}),
        ("post", "/api/v1/content", "/api/v1/content?filename=a.txt", {"data": b"x", "auth": True}),
        ("post", "/api/v1/content", "/api/v1/content?filename=a%0A", {"data": b"x", "auth": True}),
        ("post", "/api/v1/content", "/api/v1/content", {"data": b"x"}),
        ("post", "/api/v1/content", "/api/v1/content", {"auth": True}),
        ("get", "/api/v1/content", "/api/v1/content", {"auth": True}),
        ("get", "/api/v1/content", "/api/v1/content?cursor=OTIyMzM3MjAzNjg1NDc3NTgwOA", {"auth": True}),
        ("get", "/api/v1/content", "/api/v1/content", {}),
        ("get", "/api/v1/content/{cid}", f"/api/v1/content/{cid}", {"auth": True}),
        ("get", "/api/v1/content/{cid}", "/api/v1/content/nope", {"auth": True}),
        ("get", "/api/v1/content/{cid}", f"/api/v1/content/{CID.from_digest(b'none')}", {"auth": True}),
        ("delete", "/api/v1/content/{cid}", f"/api/v1/content/{cid}", {"auth": True}),
        ("delete", "/api/v1/content/{cid}", f"/api/v1/content/{cid}", {}),
        ("get", "/ipfs/{cid}", f"/ipfs/{cid}", {}),
        ("head", "/ipfs/{cid}", f"/ipfs/{cid}", {}),
        ("get", "/ipfs/{cid}", f"/ipfs/{cid}?format=raw", {}),
        ("get", "/ipfs/{cid}", "/ipfs/bafkqaaa?format=tar", {}),
        ("get", "/ipfs/{cid}", f"/ipfs/{CID.from_digest(b'absent')}", {}),
        ("get", "/ipfs/", "/ipfs/", {}),
        ("get", "/psa/pins", "/psa/pins", {"auth": True}),
        ("get", "/psa/pins", "/psa/pins?status=nope", {"auth": True}),
        ("get", "/psa/pins", "/psa/pins", {}),
        ("post", "/psa/pins", "/psa/pins", {"auth": True, "data": b'{"cid": "bafkqaaa", "name": "n"}'}),
        ("post", "/psa/pins", "/psa/pins", {"auth": True, "data": b'{"cid": ""}'}),
        ("post", "/psa/pins", "/psa/pins", {"auth": True, "data": b"[" * 100}),
        ("get", "/psa/pins/{requestid}", "/psa/pins/nope", {"auth": True}),
        ("delete", "/psa/pins/{requestid}", "/psa/pins/nope", {"auth": True}),
        ("post", "/psa/pins/{requestid}", "/psa/pins/nope", {"auth": True, "data": b'{"cid": "bafkqaaa"}'}),
    ]
    for method, template, url, opts in calls:
        headers = dict(node.auth) if opts.get("auth") else {}
        resp = await getattr(node, method)(url, data=opts.get("data"), headers=headers, allow_redirects=False)
        _check(template, method, resp, await resp.read())
    # a pin request, then every PSA operation on it
    resp = await node.post("/psa/pins", data=b'{"cid": "bafkqaaa"}', headers=node.auth)
    rid = (await resp.json())["requestid"]
    for method, data in [("get", None), ("post", b'{"cid": "bafkqaaa", "name": "again"}')]:
        resp = await getattr(node, method)(f"/psa/pins/{rid}", data=data, headers=node.auth)
        body = await resp.read()
        _check("/psa/pins/{requestid}", method, resp, body)
        rid = json.loads(body)["requestid"]
    resp = await node.delete(f"/psa/pins/{rid}", headers=node.auth)
    _check("/psa/pins/{requestid}", "delete", resp, await resp.read())
