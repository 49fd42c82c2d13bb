"""The IPFS path and trustless gateway, checked on the spec's points and side by
side with Kubo's own gateway. Parametrized over storage engines."""
from __future__ import annotations

import hashlib
import os

import aiohttp
import pytest

from storage import dagpb
from storage.cid import CID
from tests.gateway_helpers import parse_car, upload, upload_tree

pytestmark = pytest.mark.timeout(120)

BIG = os.urandom(3 * 262144 + 12345)  # a multi-block file


@pytest.fixture(params=["kubo", "embedded"])
async def gw(request, node_factory):
    if request.param == "embedded":
        pytest.importorskip("storage.embedded")
    client = await node_factory(request.param)
    client.engine_name = request.param
    return client


async def test_file_headers_and_body(gw):
    rec = await upload(gw, b"plain text body\n", "note.txt")
    resp = await gw.get(f"/ipfs/{rec['cid']}")
    assert resp.status == 200
    assert await resp.read() == b"plain text body\n"
    h = resp.headers
    assert h["Etag"] == f'"{rec["cid"]}"'
    assert h["Cache-Control"] == "public, max-age=29030400, immutable"
    assert h["X-Ipfs-Path"] == f"/ipfs/{rec['cid']}"
    assert h["X-Ipfs-Roots"] == rec["cid"]
    assert h["Content-Length"] == "16"
    assert h["Content-Type"].startswith("text/plain")
    assert h["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("payload,ctype", [
    (b"<!DOCTYPE html><html><body>hi</body></html>", "text/html"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"),
    (b"\x00\x01\x02\x03binary", "application/octet-stream"),
    (b"%PDF-1.7\n", "application/pdf"),
])
async def test_content_type_sniffed(gw, payload, ctype):
    rec = await upload(gw, payload, "")
    resp = await gw.get(f"/ipfs/{rec['cid']}")
    assert resp.headers["Content-Type"].startswith(ctype)


async def test_head_matches_get(gw):
    rec = await upload(gw, BIG, "big.bin")
    get = await gw.get(f"/ipfs/{rec['cid']}")
    body = await get.read()
    head = await gw.head(f"/ipfs/{rec['cid']}")
    assert head.status == 200
    assert await head.read() == b""
    assert head.headers["Content-Length"] == str(len(BIG)) == get.headers["Content-Length"]
    assert body == BIG
    for k in ("Etag", "Content-Type", "X-Ipfs-Roots", "Cache-Control"):
        assert head.headers[k] == get.headers[k]


async def test_if_none_match(gw):
    rec = await upload(gw, b"etag me", "e.txt")
    first = await gw.get(f"/ipfs/{rec['cid']}")
    etag = first.headers["Etag"]
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["Etag"] == etag
    assert await resp.read() == b""
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"If-None-Match": '"other"'})
    assert resp.status == 200


@pytest.mark.parametrize("rng,start,end", [("bytes=0-99", 0, 100), ("bytes=262140-262150", 262140, 262151),
                                            ("bytes=-500", len(BIG) - 500, len(BIG)), ("bytes=700000-", 700000, len(BIG))])
async def test_range(gw, rng, start, end):
    rec = await upload(gw, BIG, "big.bin")
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"Range": rng})
    assert resp.status == 206
    assert await resp.read() == BIG[start:end]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(BIG)}"
    assert resp.headers["Content-Length"] == str(end - start)


async def test_range_small_file(gw):
    rec = await upload(gw, b"0123456789", "d.txt")
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=2-4"})
    assert resp.status == 206 and await resp.read() == b"234"
    assert resp.headers["Content-Range"] == "bytes 2-4/10"


async def test_range_unsatisfiable(gw):
    rec = await upload(gw, BIG, "big.bin")
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"Range": f"bytes={len(BIG) + 10}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(BIG)}"


TREE = {
    "site/index.html": b"<html><body>home</body></html>",
    "site/style.css": b"body{}",
    "site/data/info.json": b'{"a": 1}',
    "docs/readme.md": b"# readme",
    "docs/\u00fcber.txt": b"umlaut",
}


async def test_directory_redirect_listing_and_index(gw):
    rec = await upload_tree(gw, TREE)
    root = rec["cid"]
    resp = await gw.get(f"/ipfs/{root}/docs?x=1", allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == f"/ipfs/{root}/docs/?x=1"
    resp = await gw.get(f"/ipfs/{root}/docs/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    page = await resp.text()
    assert "readme.md" in page and f"/ipfs/{root}/docs/readme.md" in page
    assert "über.txt" in page and "%C3%BCber.txt" in page
    resp = await gw.get(f"/ipfs/{root}/site/")
    assert resp.status == 200
    assert await resp.read() == TREE["site/index.html"]
    assert resp.headers["Content-Type"].startswith("text/html")
    resp = await gw.get(f"/ipfs/{root}/site/data/info.json")
    assert await resp.read() == b'{"a": 1}'
    assert resp.headers["Content-Type"].startswith("application/json")
    roots = resp.headers["X-Ipfs-Roots"].split(",")
    assert len(roots) == 4 and roots[0] == root
    resp = await gw.get(f"/ipfs/{root}/site/style.css")
    assert resp.headers["Content-Type"].startswith("text/css")
    resp = await gw.get(f"/ipfs/{root}/docs/%C3%BCber.txt")
    assert resp.status == 200 and await resp.read() == b"umlaut"


async def test_filename_and_download(gw):
    rec = await upload(gw, b"data", "x")
    resp = await gw.get(f"/ipfs/{rec['cid']}?filename=report.pdf")
    assert resp.headers["Content-Disposition"] == "inline; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
    assert resp.headers["Content-Type"] == "application/pdf"
    resp = await gw.get(f"/ipfs/{rec['cid']}?filename=r%C3%A9sum%C3%A9.txt&download=true")
    assert resp.headers["Content-Disposition"] == "attachment; filename=\"r_sum_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt"


async def test_raw_block(gw):
    rec = await upload(gw, BIG, "big.bin", cid_version=0)
    cid = CID.parse(rec["cid"])
    for kwargs in ({"params": {"format": "raw"}}, {"headers": {"Accept": "application/vnd.ipld.raw"}}):
        resp = await gw.get(f"/ipfs/{rec['cid']}", **kwargs)
        assert resp.status == 200
        block = await resp.read()
        assert cid.verify(block)
        assert resp.headers["Content-Type"] == "application/vnd.ipld.raw"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Etag"] == f'"{rec["cid"]}.raw"'
        assert resp.headers["Content-Disposition"].startswith(f'attachment; filename="{rec["cid"]}.bin"')
        node = dagpb.decode_node(block)
        assert len(node.links) == 4


async def _car(gw, path, **params):
    resp = await gw.get(path, params={"format": "car", **params})
    assert resp.status == 200, await resp.text()
    roots, blocks = await parse_car(await resp.read())
    return resp, roots, blocks


async def test_car_scopes(gw):
    rec = await upload_tree(gw, {"a/big.bin": BIG, "a/small.txt": b"small"}, cid_version=1)
    root = rec["cid"]
    resp, roots, blocks = await _car(gw, f"/ipfs/{root}")
    assert resp.headers["Content-Type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    assert resp.headers["Content-Disposition"].startswith(f'attachment; filename="{root}.car"')
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Etag"].startswith('W/"')
    assert [str(r) for r in roots] == [root]
    all_cids = [str(c) for c, _ in blocks]
    assert all_cids[0] == root and len(all_cids) == len(set(all_cids))
    assert len(all_cids) == 1 + 1 + 1 + 4 + 1  # root, dir a, big root, 4 leaves, small
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a/big.bin", **{"dag-scope": "block"})
    assert len(blocks) == 3  # root dir, a, file root
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a/big.bin", **{"dag-scope": "entity"})
    assert len(blocks) == 2 + 1 + 4
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a/big.bin", **{"entity-bytes": "0:1000"})
    assert len(blocks) == 2 + 1 + 1
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a/big.bin", **{"entity-bytes": "262144:524288"})
    assert len(blocks) == 2 + 1 + 2
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a/big.bin", **{"entity-bytes": "-10:*"})
    assert len(blocks) == 2 + 1 + 1
    _, _, blocks = await _car(gw, f"/ipfs/{root}/a", **{"dag-scope": "entity"})
    assert len(blocks) == 2


async def test_car_via_accept_and_dups(gw):
    data = b"x" * 262144 * 3  # three identical leaves
    rec = await upload(gw, data, "same.bin")
    resp = await gw.get(f"/ipfs/{rec['cid']}", headers={"Accept": "application/vnd.ipld.car; version=1; dups=y"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    assert resp.headers["Content-Location"].endswith("format=car")
    _, blocks = await parse_car(await resp.read())
    assert len(blocks) == 4
    _, _, blocks = await _car(gw, f"/ipfs/{rec['cid']}")
    assert len(blocks) == 2


@pytest.mark.parametrize("path,status", [
    ("/ipfs/not-a-cid", 400),
    ("/ipfs/Qmnotbase58l0I", 400),
    ("/ipfs/", 400),
    ("/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", 404),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=tar", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=bogus", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=car&dag-scope=everything", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=car&entity-bytes=9:1", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=car&entity-bytes=abc", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=car&car-version=2", 400),
    ("/ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH?format=car&car-dups=maybe", 400),
])
async def test_bad_requests(gw, path, status):
    resp = await gw.get(path)
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body["error"]) == {"code", "message"}


async def test_missing_path_and_through_file(gw):
    rec = await upload_tree(gw, TREE)
    resp = await gw.get(f"/ipfs/{rec['cid']}/nope.txt")
    assert resp.status == 404
    resp = await gw.get(f"/ipfs/{rec['cid']}/docs/readme.md/deeper")
    assert resp.status == 404  # through a file: not in the DAG, as Kubo and the conformance suite


async def test_only_if_cached(gw):
    resp = await gw.get("/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                        headers={"Cache-Control": "only-if-cached"})
    assert resp.status == 412


# --- side by side with Kubo's own gateway -------------------------------------------

COMPARED = ("Content-Type", "Content-Length", "Content-Range", "Etag", "X-Ipfs-Roots", "Cache-Control",
            "Content-Disposition", "X-Content-Type-Options")


async def test_same_as_kubo_gateway(node, kubo):
    rec = await upload_tree(node, TREE | {"bin/big.bin": BIG, "bin/page.html": b"<!doctype html><p>x</p>"})
    root = rec["cid"]
    cases = [
        (f"/ipfs/{root}/bin/big.bin", {}),
        (f"/ipfs/{root}/bin/big.bin", {"Range": "bytes=1000-300000"}),
        (f"/ipfs/{root}/bin/big.bin", {"Range": "bytes=-10"}),
        (f"/ipfs/{root}/docs/readme.md", {}),
        (f"/ipfs/{root}/site/data/info.json", {}),
        (f"/ipfs/{root}/bin/page.html", {}),
        (f"/ipfs/{root}/bin/big.bin?format=raw", {}),
        (f"/ipfs/{root}/docs/readme.md?filename=a.txt&download=true", {}),
        (f"/ipfs/{root}/docs/readme.md?filename=r%C3%A9sum%C3%A9%20x.txt", {}),
        (f"/ipfs/{root}/site/style.css", {}),
        (f"/ipfs/{root}/site/", {}),
        (f"/ipfs/{root}/bin/big.bin", {"If-None-Match": "*"}),
    ]
    async with aiohttp.ClientSession() as session:
        for path, headers in cases:
            ours = await node.get(path, headers=headers)
            ours_body = await ours.read()
            async with session.get(kubo.gateway_url + path, headers=headers, allow_redirects=False) as theirs:
                theirs_body = await theirs.read()
                assert ours.status == theirs.status, path
                assert ours_body == theirs_body, path
                for h in COMPARED:
                    if ours.status == 304:  # Kubo strips most headers from a 304; RFC 9110 keeps them
                        continue
                    if h == "Content-Type" and ours.headers.get(h, "").startswith("text/markdown"):
                        continue  # Kubo's mime table lacks .md
                    assert ours.headers.get(h) == theirs.headers.get(h), (path, h, ours.headers.get(h), theirs.headers.get(h))


async def test_car_same_blocks_as_kubo(node, kubo):
    rec = await upload_tree(node, {"a/big.bin": BIG, "a/s.txt": b"s"})
    root = rec["cid"]
    async with aiohttp.ClientSession() as session:
        for path, params in [(f"/ipfs/{root}", {}), (f"/ipfs/{root}/a/big.bin", {"dag-scope": "entity"}),
                             (f"/ipfs/{root}/a/big.bin", {"dag-scope": "block"}),
                             (f"/ipfs/{root}/a/big.bin", {"dag-scope": "entity", "entity-bytes": "300000:600000"}),
                             (f"/ipfs/{root}/a/big.bin", {"dag-scope": "entity", "entity-bytes": "-10:*"}),
                             (f"/ipfs/{root}/a/big.bin", {"dag-scope": "entity", "entity-bytes": "9000000:*"})]:
            ours = await node.get(path, params={"format": "car", **params})
            _, our_blocks = await parse_car(await ours.read())
            async with session.get(kubo.gateway_url + path, params={"format": "car", **params}) as theirs:
                _, their_blocks = await parse_car(await theirs.read())
            assert [c for c, _ in our_blocks] == [c for c, _ in their_blocks], (path, params)


async def test_network_mode_timeout_is_504(node_factory):
    client = await node_factory("kubo", gateway__serve="network", gateway__retrieval_timeout=1)
    resp = await client.get("/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    assert resp.status == 504, await resp.text()
    assert resp.headers["Retry-After"]
    assert (await resp.json())["error"]["code"] == "timeout"


async def test_embedded_answers_exactly_like_kubo_engine(node_factory):
    pytest.importorskip("storage.embedded")
    kubo_node = await node_factory("kubo")
    emb_node = await node_factory("embedded")
    files = TREE | {"bin/big.bin": BIG, "bin/page.html": b"<!doctype html><p>x</p>"}
    for params in ({"cid_version": 1}, {"cid_version": 0}):
        a = await upload_tree(kubo_node, files, **params)
        b = await upload_tree(emb_node, files, **params)
        assert a["cid"] == b["cid"] and a["size"] == b["size"]
        root = a["cid"]
        cases = [
            (f"/ipfs/{root}", {}), (f"/ipfs/{root}/", {}), (f"/ipfs/{root}/docs/", {}), (f"/ipfs/{root}/site/", {}),
            (f"/ipfs/{root}/bin/big.bin", {}), (f"/ipfs/{root}/bin/big.bin", {"Range": "bytes=100-400000"}),
            (f"/ipfs/{root}/bin/big.bin", {"Range": "bytes=99999999-"}),
            (f"/ipfs/{root}/bin/page.html", {}), (f"/ipfs/{root}/nope", {}), (f"/ipfs/{root}/docs/readme.md/x", {}),
            (f"/ipfs/{root}/bin/big.bin?format=raw", {}), (f"/ipfs/{root}?format=car", {}),
            (f"/ipfs/{root}/bin/big.bin?format=car&dag-scope=entity&entity-bytes=1000:300000", {}),
            (f"/ipfs/{root}/bin?format=car&dag-scope=block", {}),
            (f"/ipfs/{root}/bin/big.bin", {"If-None-Match": "*"}),
            (f"/ipfs/{root}/site/data/info.json?filename=x.json&download=true", {}),
        ]
        for path, headers in cases:
            for method in ("GET", "HEAD"):
                r1 = await kubo_node.request(method, path, headers=headers, allow_redirects=False)
                r2 = await emb_node.request(method, path, headers=headers, allow_redirects=False)
                b1, b2 = await r1.read(), await r2.read()
                assert r1.status == r2.status, (method, path)
                assert b1 == b2, (method, path)
                strip = {"Date", "Server", "Content-Length"} if r1.status >= 400 else {"Date", "Server"}
                h1 = {k: v for k, v in r1.headers.items() if k not in strip}
                h2 = {k: v for k, v in r2.headers.items() if k not in strip}
                assert h1 == h2, (method, path)


async def test_uri_protocol_handler_redirect(node):
    cid = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    resp = await node.get(f"/ipfs/?uri=ipfs://{cid}/a/b.txt", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == f"/ipfs/{cid}/a/b.txt"
    for bad in ("http://x", "ipfs://nope", "ipfs://"):
        assert (await node.get(f"/ipfs/?uri={bad}", allow_redirects=False)).status == 400


async def test_cached_responses_stay_correct(gw):
    rec = await upload(gw, b"cache me" * 10, "c.txt")
    url = f"/ipfs/{rec['cid']}"
    for _ in range(2):  # the second round is served from the response cache
        get = await gw.get(url)
        assert get.status == 200 and await get.read() == b"cache me" * 10
        head = await gw.head(url)
        assert head.status == 200 and head.headers["Content-Length"] == "80"
        raw = await gw.get(url, headers={"Accept": "application/vnd.ipld.raw"})
        assert raw.headers["Content-Type"] == "application/vnd.ipld.raw"
        part = await gw.get(url, headers={"Range": "bytes=0-4"})
        assert part.status == 206 and await part.read() == b"cache"
        assert (await gw.get(url, headers={"If-None-Match": get.headers["Etag"]})).status == 304


# --- the Kubo engine's gateway transport for file bytes ([storage] kubo_gateway) --------------
async def test_kubo_gateway_transport_serves_same_bytes(node_factory):
    from gateway.keys import ENGINE

    via_gw = await node_factory("kubo")  # the session Kubo has Gateway.NoFetch = true
    via_rpc = await node_factory("kubo", storage__kubo_gateway="off")
    big = os.urandom(5 * 1024 * 1024 + 4321)  # long reads (>= 1 MiB) take the HTTP/1.0 path
    for payload in (BIG, big):
        rec = await upload(via_gw, payload, "f.bin")
        url = f"/ipfs/{rec['cid']}"
        size = len(payload)
        for rng in (None, "bytes=0-", "bytes=0-99", "bytes=1000-", f"bytes={size - 10}-", "bytes=-5",
                    "bytes=262140-262150", f"bytes=7-{size - 3}", "bytes=100-1200000"):
            headers = {"Range": rng} if rng else {}
            a = await via_gw.get(url, headers=headers)
            b = await via_rpc.get(url, headers=headers)
            body_a, body_b = await a.read(), await b.read()
            assert a.status == b.status and a.status in (200, 206), rng
            assert body_a == body_b, rng
            assert a.headers.get("Content-Range") == b.headers.get("Content-Range"), rng
        assert hashlib.sha256(body_a).digest() == hashlib.sha256(payload[100:1200001]).digest()
    assert via_gw.server.app[ENGINE]._gw_url is not None  # the transport was really used
    assert via_rpc.server.app[ENGINE]._gw_url is None


async def test_kubo_gateway_transport_missing_block_and_fallback(kubo):
    from storage.engine import BlockNotFound
    from storage.kubo import KuboEngine

    missing = CID.parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    engine = KuboEngine(kubo.api_url)
    await engine.start()
    try:
        assert await engine._gateway_url() == kubo.gateway_url
        with pytest.raises(BlockNotFound):
            [c async for c in engine.cat(missing, 0, 10)]
    finally:
        await engine.close()
    # a gateway that cannot be reached: the RPC cat answers instead
    data = b"fallback bytes " * 1000
    cid = CID.parse(kubo.ipfs("add", "-Q", "--cid-version=1", input=data).strip())
    engine = KuboEngine(kubo.api_url, gateway="http://127.0.0.1:9")
    await engine.start()
    try:
        assert b"".join([c async for c in engine.cat(cid, 3, 100)]) == data[3:103]
        assert engine._gw_url is None
    finally:
        await engine.close()


def test_kubo_gateway_decision():
    from storage.kubo import gateway_decision, multiaddr_to_url

    api = "http://127.0.0.1:5001"
    addr = "/ip4/127.0.0.1/tcp/8080"
    # local-only reads: only if Kubo's gateway itself never fetches
    assert gateway_decision("", addr, False, offline_reads=True, api_url=api) is None
    assert gateway_decision("", addr, None, offline_reads=True, api_url=api) is None
    assert gateway_decision("http://gw:1", addr, False, offline_reads=True, api_url=api) is None
    assert gateway_decision("", addr, True, offline_reads=True, api_url=api) == "http://127.0.0.1:8080"
    # network reads may fetch anyway
    assert gateway_decision("", addr, False, offline_reads=False, api_url=api) == "http://127.0.0.1:8080"
    assert gateway_decision("", [addr], None, offline_reads=False, api_url=api) == "http://127.0.0.1:8080"
    assert gateway_decision("off", addr, True, offline_reads=True, api_url=api) is None
    assert gateway_decision("http://gw:1/", addr, True, offline_reads=True, api_url=api) == "http://gw:1"
    assert gateway_decision("", None, True, offline_reads=True, api_url=api) is None
    assert gateway_decision("", "/unix/tmp/gw.sock", True, offline_reads=True, api_url=api) is None
    assert multiaddr_to_url("/ip4/0.0.0.0/tcp/8080", api) == "http://127.0.0.1:8080"
    assert multiaddr_to_url("/ip6/::1/tcp/8080", api) == "http://[::1]:8080"
    assert multiaddr_to_url("/ip4/127.0.0.1/tcp/8080", "http://10.1.2.3:5001") == "http://10.1.2.3:8080"
    assert multiaddr_to_url("/ip4/10.0.0.7/tcp/8080", api) == "http://10.0.0.7:8080"
    assert multiaddr_to_url("/dns4/kubo/tcp/8080", api) == "http://kubo:8080"
    assert multiaddr_to_url("/ip4/127.0.0.1/tcp/8080/tls/http", api) is None
