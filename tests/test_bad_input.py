"""Every bad input is a 4xx that says what is wrong: cursors, limits, JSON bodies
and JSON query values, file names (multipart and raw), and the PSA status default."""
from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from gateway.json_body import BadJSON, nesting_depth, parse_json
from gateway.keys import PIN_WORKER, STORE
from storage.cid import CID
from storage.metadata import decode_cursor, encode_cursor
from tests.gateway_helpers import upload


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- cursors and limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("cursor", [
    "OTIyMzM3MjAzNjg1NDc3NTgwOA",  # 2**63: overflowed SQLite's integer binding (was a 500)
    b64("99999999999999999999999"), b64("0"), b64("-1"), b64("007"), b64("1.5"), b64(" 1"), b64("1e3"),
    "MQ==",  # padded: not what the node hands out
    "MR",    # decodes to "1" too, but is not canonical
    "", "@@", "a" * 27, "%FF",
])
async def test_bad_cursor_is_400(node, cursor):
    resp = await node.get(f"/api/v1/content?cursor={quote(cursor)}", headers=node.auth)
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "invalid_parameter" and "cursor" in body["error"]["message"]


def test_cursor_round_trip_and_range():
    for rid in (1, 9, 10, 12345, 2**63 - 1):
        assert decode_cursor(encode_cursor(rid)) == rid
    for rid in (0, -1, 2**63):
        with pytest.raises(ValueError):
            encode_cursor(rid)


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "+5", " 5", "5 ", "1e2", "0x10", "٣", "99999999999999999999", ""])
async def test_bad_limit_is_400(node, limit):
    resp = await node.get(f"/api/v1/content?limit={quote(limit)}", headers=node.auth)
    assert resp.status == 400
    assert "limit" in (await resp.json())["error"]["message"]


async def test_repeated_list_parameters_are_400(node):
    resp = await node.get("/api/v1/content?limit=1&limit=2", headers=node.auth)
    assert resp.status == 400 and "more than once" in (await resp.json())["error"]["message"]


async def test_paging_with_valid_cursors(node):
    for i in range(3):
        await upload(node, f"page {i}".encode(), f"p{i}.txt")
    seen, cursor = [], None
    while True:
        resp = await node.get("/api/v1/content?limit=2" + (f"&cursor={cursor}" if cursor else ""), headers=node.auth)
        page = await resp.json()
        assert resp.status == 200, page
        seen += [r["name"] for r in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p2.txt", "p1.txt", "p0.txt"]


# --- bounded JSON ----------------------------------------------------------------------------------------
def test_parse_json_bounds():
    assert parse_json(b'{"a": [1, 2, {"b": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}]}') == \
        {"a": [1, 2, {"b": "[" * 38}]}
    assert parse_json(b'"\\\\"') == "\\"
    assert parse_json(b"[" * 32 + b"]" * 32) == parse_json(b"[" * 32 + b"]" * 32)
    cases = {
        b"[" * 33 + b"]" * 33: "33 levels deep",
        b"[" * 200000: "200000 levels deep",
        b'{"a": 1, "a": 2}': "duplicate key 'a'",
        b"NaN": "NaN is not allowed",
        b"[Infinity]": "Infinity is not allowed",
        b"[-Infinity]": "-Infinity is not allowed",
        b"1e999": "out of range",
        b'{"a": 1} x': "Extra data",
        b"\xff\xfe{}": "not valid UTF-8",
        "\ufeff{}".encode(): "byte-order mark",
        b"  ": "empty",
        b"1" * 5000: "not valid JSON",
    }
    for text, message in cases.items():
        with pytest.raises(BadJSON) as info:
            parse_json(text)
        assert message in info.value.message, (text[:20], info.value.message)
        assert info.value.status == 400
    with pytest.raises(BadJSON) as info:
        parse_json(b"[" + b"1," * 600000 + b"1]")
    assert info.value.status == 413 and "at most 1048576" in info.value.message
    # brackets inside strings (escaped quotes included) do not count
    assert nesting_depth('["\\"[[[[", {"k": "]]]]"}]') == 2


async def psa_post(node, body: bytes, path: str = "/psa/pins"):
    resp = await node.post(path, data=body, headers=dict(node.auth, **{"Content-Type": "application/json"}))
    return resp.status, await resp.json()


@pytest.mark.parametrize("body,details", [
    (b'{"cid": ' + b"[" * 100000 + b"]" * 100000 + b"}", "levels deep"),  # was a RecursionError (500)
    (b'{"cid": "bafkqaaa", "cid": "bafkqaaa"}', "duplicate key 'cid'"),
    (b'{"cid": "bafkqaaa", "meta": {"n": NaN}}', "NaN"),
    (b'{"cid": "bafkqaaa"} trailing', "Extra data"),
    (b'{"cid": "bafkqaaa", "name": "\xff"}', "not valid UTF-8"),
    (b'{"cid": ""}', "must not be empty"),
    (b"[]", "must be a JSON object"),
])
async def test_psa_bad_bodies_are_400(node, body, details):
    status, out = await psa_post(node, body)
    assert status == 400, out
    assert out["error"]["reason"] == "BAD_REQUEST" and details in out["error"]["details"], out


async def test_psa_body_too_large_is_413(node):
    body = json.dumps({"cid": "bafkqaaa", "meta": {"k": "x" * (1024 * 1024)}}).encode()
    status, out = await psa_post(node, body)
    assert status == 413 and out["error"]["reason"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("meta,details", [
    ('{"a":' * 40 + '"b"' + "}" * 40, "levels deep"),
    ('{"a": "1", "a": "2"}', "duplicate key"),
    ('{"a": NaN}', "NaN"),
    ("[1]", "must be a JSON object"),
    ('{"a": 1}', "must be a string"),
    ("{", "not valid JSON"),
    ('{"a": "' + "x" * 5000 + '"}', "at most 4096"),
])
async def test_psa_bad_meta_query_is_400(node, meta, details):
    resp = await node.get(f"/psa/pins?meta={quote(meta)}", headers=node.auth)
    out = await resp.json()
    assert resp.status == 400, out
    assert details in out["error"]["details"], out


# --- file names --------------------------------------------------------------------------------------------
def multipart(disposition: str, data: bytes = b"abc") -> tuple[bytes, dict]:
    body = (b"--XYZ\r\nContent-Disposition: " + disposition.encode("utf-8", "surrogateescape") +
            b"\r\nContent-Type: application/octet-stream\r\n\r\n" + data + b"\r\n--XYZ--\r\n")
    return body, {"Content-Type": "multipart/form-data; boundary=XYZ"}


async def post_multipart(node, disposition: str, query: str = "wrap=true", data: bytes = b"abc"):
    body, headers = multipart(disposition, data)
    resp = await node.post(f"/api/v1/content?{query}", data=body, headers=dict(node.auth, **headers))
    return resp.status, await resp.json()


@pytest.mark.parametrize("disposition,reason", [
    ('form-data; name="file"; filename="/etc/passwd"', "relative path"),  # aiohttp's part.filename drops the '/'
    ('form-data; name="file"; filename="\\\\server\\\\share.txt"', "backslash"),
    ('form-data; name="file"; filename="dir\\\\a.txt"', "backslash"),
    ('form-data; name="file"; filename="a/../b"', "'..'"),
    ('form-data; name="file"; filename="a//b"', "empty"),
    ('form-data; name="file"; filename="a/"', "empty"),
    ('form-data; name="file"; filename="."', "'.'"),
    ('form-data; name="file"; filename=""', "empty"),
    ("form-data; name=\"file\"; filename*=UTF-8''a%0D%0Ab.txt", "control character U+000D"),
    ("form-data; name=\"file\"; filename*=UTF-8''a%00b", "control character U+0000"),
    ("form-data; name=\"file\"; filename*=UTF-8''a%C2%85b", "control character U+0085"),
    ("form-data; name=\"file\"; filename*=UTF-8''%2Fabs", "relative path"),
    ("form-data; name=\"file\"; filename*=UTF-8''%FF", "not valid UTF-8"),
    ("form-data; name=\"file\"; filename*=KOI8-R''x", "RFC 5987"),
    ('form-data; name="file"; filename="a\tb"', "control character U+0009"),
    ('form-data; name="file"; filename="a\udcffb"', "not valid UTF-8"),  # a raw 0xFF byte in the header
])
async def test_bad_multipart_filenames_are_400(node, disposition, reason):
    status, out = await post_multipart(node, disposition)
    assert status == 400, out
    assert out["error"]["code"] == "invalid_filename" and reason in out["error"]["message"], out
    page = await (await node.get("/api/v1/content", headers=node.auth)).json()
    assert page["results"] == []  # nothing recorded


@pytest.mark.parametrize("disposition,code", [
    ('form-data; name="file"; filename="a"; filename="b"', "invalid_body"),
    ('form-data; name="file"; filename="unterminated', "invalid_body"),
    ('attachment; name="file"; filename="a"', "invalid_body"),
    ('form-data; name="file"', "invalid_filename"),
])
async def test_bad_content_disposition_is_400(node, disposition, code):
    status, out = await post_multipart(node, disposition)
    assert status == 400 and out["error"]["code"] == code, out


@pytest.mark.parametrize("engine", ["kubo", "embedded"])
async def test_multipart_names_are_taken_as_sent(node_factory, engine):
    node = await node_factory(engine)
    # a%2Fb is a file named "a%2Fb" (a browser sends '%' as is), not a directory
    status, rec = await post_multipart(node, 'form-data; name="file"; filename="a%2Fb"')
    assert status == 201, rec
    assert rec["name"] == "a%2Fb"
    resp = await node.get(f"/ipfs/{rec['cid']}/{quote('a%2Fb')}")
    assert resp.status == 200 and await resp.read() == b"abc"
    # quoted-string escapes are undone; filename* (RFC 5987) is decoded and wins over filename
    status, rec = await post_multipart(node, 'form-data; name="file"; filename="say \\"hi\\".txt"')
    assert status == 201 and rec["name"] == 'say "hi".txt', rec
    status, rec = await post_multipart(node, "form-data; name=\"file\"; filename=\"fallback.txt\"; "
                                             "filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt")
    assert status == 201 and rec["name"] == "naïve café.txt", rec
    # raw UTF-8 in the header (what browsers send), and a token (unquoted) filename
    status, rec = await post_multipart(node, 'form-data; name="file"; filename="résumé.txt"')
    assert status == 201 and rec["name"] == "résumé.txt", rec
    status, rec = await post_multipart(node, "form-data; name=file; filename=plain.txt")
    assert status == 201 and rec["name"] == "plain.txt", rec
    # a directory path builds a tree
    status, rec = await post_multipart(node, 'form-data; name="file"; filename="dir/sub/x.txt"')
    assert status == 201 and rec["name"] == "dir", rec
    resp = await node.get(f"/ipfs/{rec['cid']}/dir/sub/x.txt")  # wrap=true: under the wrapper
    assert resp.status == 200 and await resp.read() == b"abc"


@pytest.mark.parametrize("raw,status,message", [
    ("a%0Ab.txt", 400, "control character U+000A"),
    ("a%0Db", 400, "control character U+000D"),
    ("a%7Fb", 400, "control character U+007F"),
    ("a%C2%9Bb", 400, "control character U+009B"),
    ("%2Fetc", 400, "relative path"),          # decoded once by the query parser: "/etc"
    ("a%2Fb", 400, "must not contain '/'"),    # decoded once: "a/b"
    ("a%5Cb", 400, "backslash"),
    ("..", 400, "'..'"),
])
async def test_bad_raw_filenames_are_400(node, raw, status, message):
    resp = await node.post(f"/api/v1/content?filename={raw}", data=b"x", headers=node.auth)
    out = await resp.json()
    assert resp.status == status, out
    assert out["error"]["code"] == "invalid_filename" and message in out["error"]["message"], out


async def test_raw_filename_is_decoded_once(node):
    resp = await node.post("/api/v1/content?filename=100%2525%20done.txt", data=b"x", headers=node.auth)
    rec = await resp.json()
    assert resp.status == 201 and rec["name"] == "100%25 done.txt", rec
    resp = await node.post("/api/v1/content?filename=a&filename=b", data=b"x", headers=node.auth)
    assert resp.status == 400 and "more than once" in (await resp.json())["error"]["message"]


# --- PSA: the implicit status=pinned ---------------------------------------------------------------
async def test_psa_status_default_only_without_filters(node_factory):
    node = await node_factory("kubo")
    await node.app[PIN_WORKER].stop()  # requests stay in the state we set
    store = node.app[STORE]
    cid = CID.from_digest(b"queued-by-name").encode()
    row = await store.run(store.create_pin, "tester", cid, "only-queued", [], {"k": "v"})
    done = await store.run(store.create_pin, "tester", CID.from_digest(b"done").encode(), "done", [], {})
    await store.run(store.set_pin_status, done["requestid"], "pinned", {})

    async def ls(q: str = "") -> list[str]:
        resp = await node.get(f"/psa/pins?{q}", headers=node.auth)
        body = await resp.json()
        assert resp.status == 200, body
        return [r["requestid"] for r in body["results"]]

    assert await ls() == [done["requestid"]]                        # no filter: pinned only
    assert await ls("limit=5") == [done["requestid"]]               # limit is not a filter
    assert await ls("match=ipartial") == [done["requestid"]]        # nor is match alone
    assert await ls("name=only-queued") == [row["requestid"]]       # the compliance suite's matchPin
    assert await ls("name=QUEUED&match=ipartial") == [row["requestid"]]
    assert await ls(f"cid={cid}") == [row["requestid"]]
    assert await ls(f"meta={quote(json.dumps({'k': 'v'}))}") == [row["requestid"]]
    assert await ls("after=2000-01-01T00:00:00Z") == [done["requestid"], row["requestid"]]
    assert await ls("status=queued") == [row["requestid"]]
    assert await ls("name=only-queued&status=pinned") == []


@pytest.mark.parametrize("limit", ["٣", "0", "1001", "+1", "1.0"])
async def test_psa_bad_limit_is_400(node, limit):
    resp = await node.get(f"/psa/pins?limit={quote(limit)}", headers=node.auth)
    assert resp.status == 400 and "limit" in (await resp.json())["error"]["details"]
