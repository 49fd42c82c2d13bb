"""The Delegated Routing V1 API (gateway/routing_api.py) and /ipns/ on libp2p-key
names: PUT and GET of records with every refusal (tampered, expired, oversized,
replayed-older, wrong content types, rate limit), providers, resolution through
the gateway with its headers, ?format=ipns-record, the canonical-name redirect."""
from __future__ import annotations

import time

import pytest

from naming.ipns import record as records
from naming.ipns.keys import PrivateKey
from naming.ipns.record import NS
from tests.gateway_helpers import upload, upload_tree
from tests.test_openapi_strict import _check

IPNS = "application/vnd.ipfs.ipns-record"
PUT = {"Content-Type": IPNS}
GET = {"Accept": IPNS}


def make(key, value, seq=1, lifetime=3600, ttl=60, **kw) -> bytes:
    return records.create(key, value, seq, time.time_ns() + lifetime * NS, ttl * NS, **kw)


async def put(node, name, raw, headers=PUT):
    return await node.put(f"/routing/v1/ipns/{name}", data=raw, headers=headers)


@pytest.mark.parametrize("engine", ["embedded", "kubo"])
async def test_put_get_and_resolve(node_factory, engine):
    node = await node_factory(engine)
    site = await upload_tree(node, {"site/index.html": b"<h1>named</h1>", "site/a/b.txt": b"deep"})
    key = PrivateKey.generate()
    name = str(key.public_key().name())
    raw = make(key, f"/ipfs/{site['cid']}/site", ttl=120)
    resp = await put(node, name, raw)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"Name": name, "Sequence": 1, "Outcome": "stored"}
    _check("/routing/v1/ipns/{name}", "put", resp, await resp.read())
    assert (await (await put(node, name, raw)).json())["Outcome"] == "unchanged"

    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert resp.status == 200 and await resp.read() == raw
    assert resp.headers["Content-Type"] == IPNS and resp.headers["Cache-Control"] == "public, max-age=120"
    _check("/routing/v1/ipns/{name}", "get", resp, raw)
    etag = resp.headers["Etag"]
    assert (await node.get(f"/routing/v1/ipns/{name}", headers={**GET, "If-None-Match": etag})).status == 304

    # the gateway: the record's value with its sub-path, then the request's
    resp = await node.get(f"/ipns/{name}/a/b.txt")
    assert resp.status == 200 and await resp.read() == b"deep"
    assert resp.headers["Cache-Control"] == "public, max-age=120"  # the record's TTL, never immutable
    assert resp.headers["X-Ipfs-Path"] == f"/ipns/{name}/a/b.txt"
    assert resp.headers["X-Ipfs-Roots"].split(",")[0] == site["cid"]
    resp = await node.get(f"/ipns/{name}/")
    assert resp.status == 200 and b"<h1>named</h1>" in await resp.read()
    assert (await node.head(f"/ipns/{name}/a/b.txt")).status == 200

    # the record itself, from the gateway
    for url, headers in ((f"/ipns/{name}?format=ipns-record", {}), (f"/ipns/{name}", GET)):
        resp = await node.get(url, headers=headers)
        assert resp.status == 200 and await resp.read() == raw, url
        assert resp.headers["Content-Type"] == IPNS and "immutable" not in resp.headers["Cache-Control"]
        assert resp.headers["Content-Disposition"] == (f'attachment; filename="{name}.ipns-record"; '
                                                          f"filename*=UTF-8''{name}.ipns-record")  # as Kubo
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = await node.get(f"/ipns/{name}/a?format=ipns-record")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_path"


async def test_chains_of_names_and_ttl(node_factory):
    node = await node_factory("embedded")
    site = await upload_tree(node, {"d/x/y.txt": b"chained"})
    a, b = PrivateKey.generate(), PrivateKey.generate()
    name_a, name_b = str(a.public_key().name()), str(b.public_key().name())
    assert (await put(node, name_b, make(b, f"/ipfs/{site['cid']}/d", ttl=300))).status == 200
    assert (await put(node, name_a, make(a, f"/ipns/{name_b}/x", ttl=30))).status == 200
    resp = await node.get(f"/ipns/{name_a}/y.txt")
    assert resp.status == 200 and await resp.read() == b"chained"
    assert resp.headers["Cache-Control"] == "public, max-age=30"  # the smallest TTL of the chain
    # a loop is bounded
    assert (await put(node, name_a, make(a, f"/ipns/{name_b}", seq=2))).status == 200
    assert (await put(node, name_b, make(b, f"/ipns/{name_a}", seq=2))).status == 200
    resp = await node.get(f"/ipns/{name_a}")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_name"


async def test_refusals_name_the_rule(node_factory):
    node = await node_factory("embedded")
    key = PrivateKey.generate()
    name = str(key.public_key().name())
    good = make(key, "/ipfs/bafkqaaa", seq=5)

    async def refused(raw, rule, target=name):
        resp = await put(node, target, raw)
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == f"ipns_{rule}", (rule, body)
        assert f"rule: {rule}" in body["error"]["message"]
        _check("/routing/v1/ipns/{name}", "put", resp, await resp.read())

    tampered = bytearray(good)
    tampered[good.index(b"bafkqaaa", 100)] ^= 1  # inside the signed data
    await refused(bytes(tampered), "signature")
    await refused(make(key, "/ipfs/bafkqaaa", lifetime=-10), "expired")
    await refused(b"\x0a" + b"\xff" * 10, "malformed")
    await refused(good, "signature", str(PrivateKey.generate().public_key().name()))  # another name's record
    big = b"\x0a" * (10 * 1024 + 1)
    resp = await put(node, name, big)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "ipns_size"

    async def chunks():  # no Content-Length: the node stops reading at the limit
        for _ in range(100):
            yield b"\x00" * 1024
    resp = await node.put(f"/routing/v1/ipns/{name}", data=chunks(), headers=PUT)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "ipns_size"

    # the sequence: never back, never the same record twice with another body
    assert (await put(node, name, good)).status == 200
    await refused(make(key, "/ipfs/bafkqaab", seq=4), "sequence")  # replayed older
    await refused(make(key, "/ipfs/bafkqaab", seq=5, lifetime=1800), "sequence")  # same sequence, earlier EOL
    later = make(key, "/ipfs/bafkqaaa", seq=5, lifetime=7200)  # a republish: same sequence, later EOL
    assert (await put(node, name, later)).status == 200
    newer = make(key, "/ipfs/bafkqaab", seq=6)
    assert (await put(node, name, newer)).status == 200
    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert await resp.read() == newer
    # nothing refused was kept
    assert (await node.get(f"/routing/v1/ipns/{str(PrivateKey.generate().public_key().name())}",
                           headers=GET)).status == 404


async def test_an_expired_record_no_longer_blocks_an_older_sequence(node_factory):
    node = await node_factory("embedded")
    key = PrivateKey.generate()
    name = str(key.public_key().name())
    assert (await put(node, name, make(key, "/ipfs/bafkqaaa", seq=9, lifetime=1))).status == 200
    resp = await node.get(f"/ipns/{name}")
    assert resp.status == 200
    assert int(resp.headers["Cache-Control"].split("max-age=")[1]) <= 1  # never cached past the EOL
    time.sleep(1.1)
    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert resp.status == 404 and "expired" in (await resp.json())["error"]["message"]
    assert resp.headers["Cache-Control"] == "public, max-age=60"
    assert (await node.get(f"/ipns/{name}")).status == 404
    assert (await put(node, name, make(key, "/ipfs/bafkqaab", seq=2))).status == 200


async def test_content_types_names_and_rate_limit(node_factory):
    node = await node_factory("embedded", ipns__put_per_minute=3)
    key = PrivateKey.generate()
    name = str(key.public_key().name())
    raw = make(key, "/ipfs/bafkqaaa")
    resp = await put(node, name, raw, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 406 and (await resp.json())["error"]["code"] == "not_acceptable"
    resp = await node.get(f"/routing/v1/ipns/{name}", headers={"Accept": "application/json"})
    assert resp.status == 406
    _check("/routing/v1/ipns/{name}", "get", resp, await resp.read())
    for bad in ("example.com", "bafkqaaa", "notaname"):
        resp = await node.get(f"/routing/v1/ipns/{bad}", headers=GET)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_name", bad
    # a legacy base58 name is the same name
    assert (await put(node, key.public_key().name().peer_id, raw)).status == 200
    assert (await put(node, name, raw)).status == 200
    assert (await put(node, name, raw)).status == 200
    resp = await put(node, name, raw)  # the fourth within a minute
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    _check("/routing/v1/ipns/{name}", "put", resp, await resp.read())
    # CORS, as the routing spec asks
    resp = await node.options(f"/routing/v1/ipns/{name}", headers={"Origin": "https://app.example",
                                                                  "Access-Control-Request-Method": "PUT"})
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_canonical_name_redirect_and_errors(node_factory):
    node = await node_factory("embedded")
    rec = await upload(node, b"by name", "n.txt")
    key = PrivateKey.generate()
    name = key.public_key().name()
    assert (await put(node, str(name), make(key, f"/ipfs/{rec['cid']}"))).status == 200
    for legacy in (name.peer_id, name.peer_id, "b" + __import__("base64").b32encode(
            b"\x01\x72" + name.multihash).decode().lower().rstrip("=")):
        resp = await node.get(f"/ipns/{legacy}/a/b?filename=x.txt", allow_redirects=False)
        assert resp.status == 302, legacy  # as Kubo (boxo answers Found)
        assert resp.headers["Location"] == f"/ipns/{name}/a/b?filename=x.txt"
    resp = await node.get(f"/ipns/{name.peer_id}")
    assert resp.status == 200 and await resp.read() == b"by name"
    unknown = PrivateKey.generate().public_key().name()
    resp = await node.get(f"/ipns/{unknown}")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "name_not_found"
    resp = await node.get(f"/ipns/{rec['cid']}")  # a CID of another codec
    body = await resp.json()
    assert resp.status == 400 and "libp2p-key" in body["error"]["message"]
    resp = await node.get(f"/ipns/{unknown}?format=ipns-record")
    assert resp.status == 404


async def test_providers(node_factory):
    node = await node_factory("embedded", server__public_url="https://node.example.org")
    rec = await upload(node, b"provided", "p.txt")
    resp = await node.get(f"/routing/v1/providers/{rec['cid']}")
    assert resp.status == 200
    body = await resp.json()
    _check("/routing/v1/providers/{cid}", "get", resp, await resp.read())
    [provider] = body["Providers"]
    assert provider["Schema"] == "peer" and provider["Protocols"] == ["transport-ipfs-gateway-http"]
    assert provider["Addrs"] == ["/dns4/node.example.org/tcp/443/https"]
    assert provider["ID"].startswith("12D3KooW")
    resp = await node.get(f"/routing/v1/providers/{rec['cid']}", headers={"Accept": "application/x-ndjson"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/x-ndjson")
    assert [line for line in (await resp.text()).splitlines() if line] == [__import__("json").dumps(provider)]
    from storage.cid import CID
    resp = await node.get(f"/routing/v1/providers/{CID.from_digest(b'absent')}")
    assert resp.status == 404
    _check("/routing/v1/providers/{cid}", "get", resp, await resp.read())
    resp = await node.get("/routing/v1/providers/nope")
    assert resp.status == 400
