"""ENS names (naming/ens.py, gateway/ens_api.py) on anvil with the real ENS contracts
(tests/support/ens.py): ENSRegistry and PublicResolver from npm, the project's Universal Resolver
at web3's fixed address, a wildcard resolver of the tests' own."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from gateway.keys import ENS
from naming import InvalidName, NameUnavailable
from naming.ens import decode_contenthash, normalize
from storage.cid import encode_varint
from tests.gateway_helpers import upload_tree
from tests.support.anvil import Anvil, free_port
from tests.support.ens import EnsChain, contenthash_ipfs, contenthash_ipns

SITE = {"index.html": b"<!doctype html><p>home <a href='about.html'>about</a></p>",
        "about.html": b"<!doctype html><p>about</p>", "css/site.css": b"p{color:red}"}
SITE2 = {"index.html": b"<!doctype html><p>version two</p>"}
OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil's second dev account


@pytest.fixture(scope="module")
def chain():
    anvil = Anvil().start()
    ens = EnsChain.deploy(anvil)
    yield ens
    anvil.cleanup()


@pytest.fixture
def ens_node(node_factory, chain):
    async def make(**overrides):
        overrides.setdefault("ens__rpc_url", chain.anvil.rpc_url)
        overrides.setdefault("ens__registry", chain.registry.address)
        return await node_factory("embedded", **overrides)
    return make


async def site_root(node, files=SITE) -> str:
    up = await upload_tree(node, {f"site/{k}": v for k, v in files.items()})
    resp = await node.get(f"/ipfs/{up['cid']}/site/?format=raw")
    return resp.headers["X-Ipfs-Roots"].split(",")[-1]


def max_age(resp) -> int:
    value = resp.headers["Cache-Control"]
    assert value.startswith("public, max-age=") and "immutable" not in value, value
    return int(value.rsplit("=", 1)[1])


async def test_records_api_names_and_subnames(ens_node, chain):
    node = await ens_node()
    chain.register("records.eth")
    chain.set_addr("records.eth", chain.account)
    chain.set_text("records.eth", "url", "https://example.org")
    chain.set_addr("records.eth", "0x00140000000000000000000000000000000000000001", coin_type=0)  # BTC bytes
    chain.set_addr("records.eth", OTHER, coin_type=2147483658)  # ENSIP-11: Optimism
    root = await site_root(node)
    chain.set_contenthash("records.eth", contenthash_ipfs(root))
    chain.register("sub.records.eth")
    chain.set_addr("sub.records.eth", OTHER)

    resp = await node.get("/api/v1/ens/Records.ETH?text=url&text=missing&coin_type=0&coin_type=2147483658",
                          headers=node.auth)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["name"] == "Records.ETH" and body["normalized"] == "records.eth"
    assert body["resolver"] == chain.resolver.address and body["address"] == chain.account
    assert body["texts"] == {"url": "https://example.org", "missing": None}
    assert body["coins"] == {"0": "0x00140000000000000000000000000000000000000001", "2147483658": OTHER}
    assert body["contenthash"]["protocol"] == "ipfs" and body["contenthash"]["cid"] == root
    assert body["contenthash"]["uri"] == f"ipfs://{root}"
    assert body["resolved_at"].endswith("Z") and 0 < body["ttl"] <= 300 and body["stale"] is False

    resp = await node.get("/api/v1/ens/sub.records.eth", headers=node.auth)
    body = await resp.json()
    assert body["address"] == OTHER and body["contenthash"] is None  # a subname with its own records
    assert (await node.get("/api/v1/ens/records.eth")).status == 401
    resp = await node.get("/api/v1/ens/nobody-here.eth", headers=node.auth)
    assert resp.status == 404 and "no resolver" in (await resp.json())["error"]["message"]


async def test_site_served_by_name_path_and_subdomain_styles(ens_node, chain):
    node = await ens_node()
    root = await site_root(node)
    chain.register("mysite.eth")
    chain.set_contenthash("mysite.eth", contenthash_ipfs(root))

    resp = await node.get("/ipns/mysite.eth/")
    assert resp.status == 200 and b"home" in await resp.read()
    assert resp.headers["X-Ipfs-Path"] == "/ipns/mysite.eth/"
    assert resp.headers["Etag"].strip('"W/').startswith(root) or root in resp.headers["X-Ipfs-Roots"]
    assert 0 < max_age(resp) <= 300
    resp = await node.get("/ipns/mysite.eth/about.html")
    assert resp.status == 200 and await resp.read() == SITE["about.html"]
    assert resp.headers["X-Ipfs-Path"] == "/ipns/mysite.eth/about.html"
    resp = await node.head("/ipns/MySite.eth/css/site.css")
    assert resp.status == 200

    port = node.server.port
    for host in (f"mysite.eth.localhost:{port}", f"mysite-eth.ipns.localhost:{port}"):
        resp = await node.get("/about.html", headers={"Host": host})
        assert resp.status == 200, (host, await resp.text())
        assert await resp.read() == SITE["about.html"]
        assert resp.headers["X-Ipfs-Path"] == "/ipns/mysite.eth/about.html"
        assert 0 < max_age(resp) <= 300
        resp = await node.get("/", headers={"Host": host})
        assert resp.status == 200 and b"home" in await resp.read()
        # a content origin: the node's API is not there
        assert (await node.get("/api/v1/content", headers={"Host": host, **node.auth})).status == 404


async def test_contenthash_change_seen_after_the_ttl(ens_node, chain):
    node = await ens_node(ens__cache_ttl_s=2)
    root1, root2 = await site_root(node), await site_root(node, SITE2)
    chain.register("changing.eth")
    chain.set_contenthash("changing.eth", contenthash_ipfs(root1))
    resp = await node.get("/ipns/changing.eth/")
    assert b"home" in await resp.read() and max_age(resp) <= 2
    chain.set_contenthash("changing.eth", contenthash_ipfs(root2))
    assert b"home" in await (await node.get("/ipns/changing.eth/")).read()  # cached
    await asyncio.sleep(2.2)
    assert b"version two" in await (await node.get("/ipns/changing.eth/")).read()


async def test_wildcard_names(ens_node, chain):
    node = await ens_node()
    root = await site_root(node)
    chain.wildcard("wild.eth", OTHER, contenthash_ipfs(root))
    resp = await node.get("/ipns/anything.wild.eth/about.html")
    assert resp.status == 200 and await resp.read() == SITE["about.html"]
    resp = await node.get("/api/v1/ens/deep.er.wild.eth?text=url", headers=node.auth)
    body = await resp.json()
    assert body["address"] == OTHER and body["texts"] == {"url": "url@deep"}
    assert body["contenthash"]["cid"] == root


async def test_reverse_matching_and_mismatching(ens_node, chain):
    node = await ens_node()
    chain.register("primary.eth")
    chain.set_addr("primary.eth", chain.account)
    chain.set_reverse(chain.account, "primary.eth")
    resp = await node.get(f"/api/v1/ens/reverse/{chain.account.lower()}", headers=node.auth)
    body = await resp.json()
    assert body == {"address": chain.account, "name": "primary.eth", "claimed": "primary.eth",
                    "forward_address": chain.account, "verified": True}
    chain.set_reverse(OTHER, "primary.eth")  # claims a name that points elsewhere
    body = await (await node.get(f"/api/v1/ens/reverse/{OTHER}", headers=node.auth)).json()
    assert body["name"] is None and body["claimed"] == "primary.eth" and body["verified"] is False
    resp = await node.get("/api/v1/ens/reverse/0x1234", headers=node.auth)
    assert resp.status == 400


def test_normalization_cases():
    assert normalize("TeSt.ETH") == "test.eth"
    assert normalize("ＡＢＣ.eth") == "abc.eth"  # full-width folded
    assert normalize("🔥.eth") == "🔥.eth"  # emoji kept
    for bad in ("my site.eth", "a..eth", "xn--abc.eth", "аpple.eth", "abc\x00.eth", "ab/c.eth"):
        with pytest.raises(InvalidName) as exc:
            normalize(bad)
        assert "ENSIP-15" in str(exc.value) or "valid ENS name" in str(exc.value)


async def test_normalization_over_http(ens_node, chain):
    node = await ens_node()
    root = await site_root(node)
    chain.register("🔥.eth")
    chain.set_contenthash("🔥.eth", contenthash_ipfs(root))
    resp = await node.get("/ipns/%F0%9F%94%A5.eth/about.html")
    assert resp.status == 200, await resp.text()
    resp = await node.get("/api/v1/ens/%F0%9F%94%A5.ETH", headers=node.auth)
    assert (await resp.json())["normalized"] == "🔥.eth"
    for bad in ("my%20site.eth", "%D0%B0pple.eth"):  # a space; Cyrillic а mixed with Latin (confusable)
        resp = await node.get(f"/ipns/{bad}/")
        body = await resp.json()
        assert resp.status == 400 and body["error"]["code"] == "invalid_name", body
        resp = await node.get(f"/api/v1/ens/{bad}", headers=node.auth)
        assert resp.status == 400


async def test_no_resolver_no_contenthash_and_unsupported(ens_node, chain):
    node = await ens_node()
    resp = await node.get("/ipns/unregistered.eth/")
    body = await resp.json()
    assert resp.status == 404 and "no resolver" in body["error"]["message"]
    chain.register("empty.eth")
    resp = await node.get("/ipns/empty.eth/")
    body = await resp.json()
    assert resp.status == 404 and "no contenthash" in body["error"]["message"]
    chain.register("swarm.eth")
    swarm = encode_varint(0xE4) + bytes.fromhex("0101fa011b20") + bytes(range(32))
    chain.set_contenthash("swarm.eth", swarm)
    resp = await node.get("/ipns/swarm.eth/")
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "unsupported_contenthash"
    assert "swarm" in body["error"]["message"]
    body = await (await node.get("/api/v1/ens/swarm.eth", headers=node.auth)).json()
    assert body["contenthash"]["protocol"] == "swarm" and body["contenthash"]["cid"] is None


def test_decode_contenthash_vectors():
    # EIP-1577's example: ipfs-ns, CIDv0 QmRAQB6YaCyidP37UdDnjFY5vQuiBrcqdyoW1CuDgwxkD4
    raw = bytes.fromhex("e3010170122029f2d17be6139079dc48696d1f582a8530eb9805b561eda517e22a892c7e3f1f")
    ch = decode_contenthash(raw)
    assert ch.protocol == "ipfs" and ch.value == "/ipfs/" + ch.cid and ch.cid.startswith("bafybei")
    assert decode_contenthash(encode_varint(0xB29910) + b"x" * 32).protocol == "arweave"


async def test_ipns_contenthash_through_the_nodes_records(ens_node, chain):
    node = await ens_node()
    root = await site_root(node)
    resp = await node.post("/api/v1/keys", json={"name": "ens-site"}, headers=node.auth)
    key = (await resp.json())["id"]
    resp = await node.post("/api/v1/names", json={"key": "ens-site", "value": f"/ipfs/{root}"}, headers=node.auth)
    assert resp.status in (200, 201), await resp.text()
    chain.register("ipnssite.eth")
    chain.set_contenthash("ipnssite.eth", contenthash_ipns(key))
    resp = await node.get("/ipns/ipnssite.eth/about.html")
    assert resp.status == 200 and await resp.read() == SITE["about.html"]
    body = await (await node.get("/api/v1/ens/ipnssite.eth", headers=node.auth)).json()
    assert body["contenthash"] == {"protocol": "ipns", "cid": key, "uri": f"ipns://{key}",
                                   "raw": "0x" + contenthash_ipns(key).hex()}


async def test_rpc_down_stale_then_502(node_factory):
    anvil = Anvil().start()
    try:
        chain = EnsChain.deploy(anvil)
        node = await node_factory("embedded", ens__rpc_url=anvil.rpc_url, ens__registry=chain.registry.address,
                                  ens__cache_ttl_s=1, ens__stale_s=4)
        root = await site_root(node)
        chain.register("flaky.eth")
        chain.set_contenthash("flaky.eth", contenthash_ipfs(root))
        resp = await node.get("/ipns/flaky.eth/about.html")
        assert resp.status == 200 and "Warning" not in resp.headers
        anvil.stop(kill=True)
        await asyncio.sleep(1.1)
        resp = await node.get("/ipns/flaky.eth/about.html")
        assert resp.status == 200 and await resp.read() == SITE["about.html"]
        assert "Stale" in resp.headers["Warning"]
        body = await (await node.get("/api/v1/ens/flaky.eth", headers=node.auth)).json()
        assert body["stale"] is True
        await asyncio.sleep(4)
        resp = await node.get("/ipns/flaky.eth/about.html")
        body = await resp.json()
        assert resp.status in (502, 504) and resp.headers["Retry-After"], body
        assert body["error"]["code"] == "name_unavailable"
        metrics = await (await node.get("/metrics")).text()
        assert "hearth_ens_rpc_failures_total" in metrics and "hearth_ens_stale_total" in metrics
    finally:
        anvil.cleanup()


async def test_cache_survives_restart_and_purge(ens_node, chain):
    from gateway.keys import STORE
    from naming.ens import EnsNameSystem

    node = await ens_node()
    root = await site_root(node)
    chain.register("kept.eth")
    chain.set_contenthash("kept.eth", contenthash_ipfs(root))
    assert (await node.get("/ipns/kept.eth/about.html")).status == 200
    # a new process's name system on the same metadata store, its RPC dead: answered from the store
    store = node.app[STORE]
    dead = f"http://127.0.0.1:{free_port()}"
    system = EnsNameSystem({**node.config["ens"], "rpc_url": dead}, store)
    try:
        resolution = await system.resolve("Kept.eth")
        assert resolution.value == f"/ipfs/{root}" and not resolution.stale
        assert system.counts["hits"] == 1 and system.counts["rpc_calls"] == 0
    finally:
        await system.close()
    op = await store.run(store.create_token, "op", "operator")
    resp = await node.delete("/api/v1/operator/ens/KEPT.eth", headers={"Authorization": f"Bearer {op}"})
    assert (await resp.json()) == {"name": "kept.eth", "purged": True}
    assert (await node.delete("/api/v1/operator/ens/kept.eth", headers=node.auth)).status == 403
    system = EnsNameSystem({**node.config["ens"], "rpc_url": dead}, store)
    try:
        with pytest.raises(NameUnavailable):  # purged from the store too: nothing left to serve
            await system.resolve("kept.eth")
    finally:
        await system.close()
    metrics = await (await node.get("/metrics")).text()
    assert "hearth_ens_cache_hits_total" in metrics and "hearth_ens_rpc_calls_total" in metrics


async def test_not_configured_is_503(node_factory):
    node = await node_factory("embedded")
    resp = await node.get("/ipns/mysite.eth/")
    body = await resp.json()
    assert resp.status == 503 and "[ens] rpc_url" in body["error"]["message"]
    resp = await node.get("/api/v1/ens/mysite.eth", headers=node.auth)
    assert resp.status == 503


def test_web3_not_loaded_by_the_app():
    import subprocess
    import sys

    code = ("import sys; from gateway.app import create_app; import naming.ens, gateway.ens_api; "
            "print('web3' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out


def test_cli_purge_offline(tmp_path, capsys):
    """`hearth ens purge NAME` with no node running: removes the answer from the data dir's store."""
    from gateway.cli import main
    from naming.ens import Answer, EnsNameSystem
    from storage.metadata import MetadataStore

    data = tmp_path / "data"

    async def seed():
        store = MetadataStore(data / "hearth.sqlite")
        try:
            await store.run(store.migrate)
            await EnsNameSystem({}, store)._save(Answer("cli.eth", "0x" + "11" * 20, b"\xe3\x01", time.time()))
        finally:
            store.close()

    asyncio.run(seed())
    assert main(["ens", "purge", "CLI.eth", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.strip() == "cli.eth: purged"
    assert main(["ens", "purge", "cli.eth", "--data-dir", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "cli.eth", "purged": False}
    assert main(["ens", "purge", "bad name.eth", "--data-dir", str(data)]) == 2


@pytest.fixture
async def ccip_gateway(aiohttp_server):
    """An EIP-3668 gateway on loopback answering contenthash(bytes32) with `answers[name]`."""
    from aiohttp import web
    from eth_abi import decode, encode

    answers: dict[bytes, bytes] = {}
    seen: list[str] = []

    async def get(request):
        seen.append(request.path)
        call = bytes.fromhex(request.match_info["data"][2:])
        dns_name, data = decode(["bytes", "bytes"], call)
        if data[:4] == bytes.fromhex("3b3b57de"):  # addr(bytes32)
            return web.json_response({"data": "0x" + encode(["address"], [OTHER]).hex()})
        if data[:4] == bytes.fromhex("59d1d43c"):  # text(bytes32,string)
            key = decode(["bytes32", "string"], data[4:])[1]
            return web.json_response({"data": "0x" + encode(["string"], [f"offchain {key}"]).hex()})
        assert data[:4] == bytes.fromhex("bc1c58d1")
        return web.json_response({"data": "0x" + encode(["bytes"], [answers.get(bytes(dns_name), b"")]).hex()})

    app = web.Application()
    app.router.add_get("/{sender}/{data}.json", get)
    server = await aiohttp_server(app)
    server.answers, server.seen = answers, seen
    return server


async def test_offchain_resolver_through_a_local_gateway(ens_node, chain, ccip_gateway):
    """EIP-3668 (naming/ccip_read.py): the loopback http gateway is reachable only because the test
    configuration widens the guard; with the default configuration it is refused (502)."""
    from ens.utils import dns_encode_name

    url = f"http://127.0.0.1:{ccip_gateway.port}/{{sender}}/{{data}}.json"
    node = await ens_node(outbound__allow_http=True, outbound__allow_private=True)
    root = await site_root(node)
    chain.offchain("offchain.eth", [url])
    ccip_gateway.answers[bytes(dns_encode_name("shop.offchain.eth"))] = contenthash_ipfs(root)
    resp = await node.get("/ipns/shop.offchain.eth/about.html")
    assert resp.status == 200, await resp.text()
    assert await resp.read() == SITE["about.html"] and ccip_gateway.seen
    body = await (await node.get("/api/v1/ens/shop.offchain.eth?text=url", headers=node.auth)).json()
    assert body["address"] == OTHER and body["texts"] == {"url": "offchain url"}
    assert body["contenthash"]["cid"] == root

    strict = await ens_node()  # default [outbound]: https only, no loopback
    seen = len(ccip_gateway.seen)
    resp = await strict.get("/ipns/shop.offchain.eth/about.html")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "name_unavailable", body
    assert "offchain lookup" in body["error"]["message"] and len(ccip_gateway.seen) == seen


async def test_purge_reaches_every_worker(ens_node, chain, tmp_path):
    """Two workers' name systems (shared store and generation slot): a purge in one empties the other's memory."""
    from gateway.keys import STORE
    from gateway.shared_slot import SharedSlot
    from naming.ens import EnsNameSystem

    node = await ens_node()
    root = await site_root(node)
    chain.register("twice.eth")
    chain.set_contenthash("twice.eth", contenthash_ipfs(root))
    store = node.app[STORE]
    settings = {**node.config["ens"]}
    a = EnsNameSystem(settings, store, generation=SharedSlot(tmp_path / "ens.generation"))
    b = EnsNameSystem(settings, store, generation=SharedSlot(tmp_path / "ens.generation"))
    try:
        assert (await a.resolve("twice.eth")).value == (await b.resolve("twice.eth")).value == f"/ipfs/{root}"
        calls = b.counts["rpc_calls"]
        assert await a.purge("twice.eth")
        await b.resolve("twice.eth")
        assert b.counts["rpc_calls"] == calls + 1  # asked the chain again: its memory was emptied
    finally:
        await a.close()
        await b.close()


async def test_eth_left_to_dnslink_when_ens_is_off_and_dns_serves_eth(node_factory):
    node = await node_factory("embedded")
    root = await site_root(node)  # the same CID on the second node
    node2 = await node_factory("embedded", dns__resolvers={"eth.": "udp://127.0.0.1:9"},
                               dns__static={"legacy.eth": f"/ipfs/{root}"})
    assert await site_root(node2) == root
    resp = await node2.get("/ipns/legacy.eth/about.html")
    assert resp.status == 200 and await resp.read() == SITE["about.html"]


def test_cli_purge_asks_the_running_node(chain, tmp_path):
    """`hearth ens purge NAME` beside a running `hearth serve`: DELETE /api/v1/operator/ens/{name}."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    root_dir = __import__("pathlib").Path(__file__).resolve().parent.parent
    hearth = [sys.executable, "-m", "gateway.cli"]
    port, d = free_port(), str(tmp_path / "data")
    env = dict(os.environ, HEARTH_STORAGE_ENGINE="embedded", HEARTH_SERVER_WORKERS="1",
               HEARTH_ENS_RPC_URL=chain.anvil.rpc_url, HEARTH_ENS_REGISTRY=chain.registry.address)
    chain.register("served.eth")
    chain.set_contenthash("served.eth", contenthash_ipfs("bafkqaaa"))  # the empty identity CID: always here
    proc = subprocess.Popen([*hearth, "serve", "--port", str(port), "--data-dir", d], cwd=root_dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        while not any(f"http://127.0.0.1:{port}" in line for line in seen) and len(seen) < 20:
            seen.append(proc.stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ipns/served.eth", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["X-Ipfs-Path"] == "/ipns/served.eth"
        out = subprocess.run([*hearth, "ens", "purge", "Served.eth", "--data-dir", d], cwd=root_dir, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "served.eth: purged", (out.stdout, out.stderr)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            metrics = resp.read().decode()
        assert re.search(r"^hearth_ens_cache_misses_total 1(\.0)?$", metrics, re.M), metrics[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
