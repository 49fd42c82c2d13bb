"""The embedded engine fetching what it does not have from trustless HTTP gateways:
PSA pins whose content only a real Kubo gateway (Gateway.NoFetch: it serves only
its own blocks) or a second Hearth node has, by `[storage] fetch_gateways` and by
origins (as /ip4/.../tcp/P/http multiaddrs and as URLs); a lying gateway; origins
the outbound policy refuses; `[gateway] serve = "network"`; a pin of content nobody
has; gc running while a pin fetches. Everything on loopback, which the tests allow
with `[outbound] allow_private` and `allow_http`."""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web

from gateway.keys import ENGINE, STORE
from gateway.peer_id import node_peer_id, peer_id_of
from storage.cid import CID, RAW
from storage.embedded import EmbeddedEngine
from storage.engine import AddEntry, AddOptions, BlockNotFound, InvalidContent
from outbound import GuardedClient
from tests.gateway_helpers import upload_tree
from tests.psa_helpers import add, get, random_cid, wait_status

LOOPBACK = {"outbound__allow_private": True, "outbound__allow_http": True}
BIG = 3 * 1024 * 1024 + 12345  # 13 leaves under one root: the walk has two levels


# --- Kubo as the remote ------------------------------------------------------------------------
def kubo_tree(kubo, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A directory with a multi-block file and a small one, added to Kubo unpinned (CIDv1)."""
    d = tmp_path / f"tree-{os.urandom(4).hex()}"
    d.mkdir()
    files = {"big.bin": os.urandom(BIG), "hello.txt": b"hello from kubo " + os.urandom(8).hex().encode()}
    for name, data in files.items():
        (d / name).write_bytes(data)
    root = kubo.ipfs("add", "-r", "-Q", "--cid-version=1", "--pin=false", str(d)).strip()
    return root, files


def kubo_refs(kubo, root: str) -> list[str]:
    return [root] + kubo.ipfs("refs", "-r", "--unique", root).split()


def kubo_drop(kubo, root: str) -> None:
    """Remove the (unpinned) DAG from Kubo: it can no longer serve any of it."""
    kubo.ipfs("block", "rm", *kubo_refs(kubo, root))
    assert kubo.ipfs("block", "stat", "--offline", root, check=False) == ""


def kubo_block(kubo, cid: str) -> bytes:
    return subprocess.run([kubo.bin, "block", "get", cid], env=kubo.env, capture_output=True, check=True).stdout


def record_statuses(node) -> list[str]:
    """The statuses the pin worker writes, in order."""
    store = node.app[STORE]
    seen: list[str] = []
    real = store.set_pin_status

    def recording(rid, status, *args, **kwargs):
        seen.append(status)
        return real(rid, status, *args, **kwargs)

    store.set_pin_status = recording
    return seen


async def stored_blocks(node) -> int:
    engine = node.app[ENGINE]
    return await asyncio.to_thread(engine.store.count)


# --- a tiny trustless gateway, honest or not ---------------------------------------------------------
class TinyGateway:
    """GET /ipfs/{cid}?format=raw from a dict of blocks (by multihash); lie=True answers
    every request with 200 and the wrong bytes. Counts what it is asked."""

    def __init__(self, blocks: dict[bytes, bytes] | None = None, *, lie: bool = False, delay: float = 0.0,
                 oversize: bool = False):
        self.blocks = blocks or {}
        self.lie, self.delay, self.oversize = lie, delay, oversize
        self.hits: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/ipfs/{cid}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append(request.match_info["cid"])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.oversize:
            return web.Response(body=b"z" * (3 << 20), content_type="application/vnd.ipld.raw")
        if self.lie:
            return web.Response(body=b"not the block you asked for", content_type="application/vnd.ipld.raw")
        data = self.blocks.get(CID.parse(request.match_info["cid"]).multihash)
        if data is None:
            return web.Response(status=404, text="not here")
        return web.Response(body=data, content_type="application/vnd.ipld.raw")


@pytest.fixture
def tiny(aiohttp_server):
    async def make(**kw) -> TinyGateway:
        gw = TinyGateway(**kw)
        gw.server = await aiohttp_server(gw.app)
        gw.base = f"http://127.0.0.1:{gw.server.port}"
        return gw

    return make


def kubo_blocks(kubo, root: str) -> dict[bytes, bytes]:
    return {CID.parse(c).multihash: kubo_block(kubo, c) for c in kubo_refs(kubo, root)}


# --- (a) a PSA pin of content only Kubo's gateway has ----------------------------------------------------
@pytest.mark.parametrize("how", ["fetch_gateways", "origin_multiaddr", "origin_url"])
async def test_psa_pin_fetches_from_a_kubo_gateway(node_factory, kubo, tmp_path, how):
    root, files = kubo_tree(kubo, tmp_path)
    overrides, origins = dict(LOOPBACK), []
    if how == "fetch_gateways":
        overrides["storage__fetch_gateways"] = [kubo.gateway_url]
    elif how == "origin_multiaddr":
        origins = [f"/ip4/127.0.0.1/tcp/{kubo.gateway_port}/http"]
    else:
        origins = [kubo.gateway_url]
    node = await node_factory("embedded", **overrides)
    statuses = record_statuses(node)
    started = time.monotonic()
    body = await add(node, root, origins=origins)
    assert body["status"] == "queued"
    # the embedded node's own HTTP address, with its peer ID
    assert len(body["delegates"]) == 1
    assert body["delegates"][0] == f"/ip4/127.0.0.1/tcp/8787/http/p2p/{node_peer_id(node.config.data_dir)}"
    done = await wait_status(node, body["requestid"])
    elapsed = time.monotonic() - started
    assert done["status"] == "pinned", done
    assert statuses == ["pinning", "pinned"]
    assert elapsed < 10
    engine = node.app[ENGINE]
    refs = kubo_refs(kubo, root)
    assert len(refs) == 1 + 1 + 13 + 1  # dir, big.bin root, its leaves, hello.txt
    for ref in refs:
        assert await engine.has_block(CID.parse(ref)), ref
    assert await stored_blocks(node) == len(refs)  # nothing else was kept
    assert [p.cid.encode() async for p in engine.pins()] == [root]
    kubo_drop(kubo, root)  # the remote is gone: what follows is served from this node alone
    await engine.gc()
    resp = await node.get(f"/ipfs/{root}/big.bin")
    assert resp.status == 200 and await resp.read() == files["big.bin"]
    resp = await node.get(f"/ipfs/{root}/hello.txt")
    assert await resp.read() == files["hello.txt"]


async def test_psa_pin_with_the_node_offline_and_content_already_local(node_factory, tiny):
    """Content already on disk is pinned without a single request, sources or not."""
    gw = await tiny()
    node = await node_factory("embedded", storage__fetch_gateways=[gw.base], **LOOPBACK)
    data = os.urandom(700_000)
    engine = node.app[ENGINE]

    async def one():
        yield data

    async def entries():
        yield AddEntry("f.bin", one())

    res = await engine.add(entries(), AddOptions(pin=False))
    body = await add(node, str(res.root))
    assert (await wait_status(node, body["requestid"]))["status"] == "pinned"
    assert gw.hits == []


# --- (b) a second Hearth node as the remote ---------------------------------------------------------------
@pytest.mark.parametrize("form", ["url", "multiaddr"])
async def test_pin_from_another_hearth_node(node_factory, form):
    b = await node_factory("embedded")
    data = os.urandom(BIG)
    up = await upload_tree(b, {"site/index.html": b"<h1>hello</h1>", "site/big.bin": data})
    root = up["cid"]
    a = await node_factory("embedded", **LOOPBACK)
    origin = f"http://127.0.0.1:{b.server.port}" if form == "url" else f"/ip4/127.0.0.1/tcp/{b.server.port}/http"
    body = await add(a, root, origins=[origin])
    done = await wait_status(a, body["requestid"])
    assert done["status"] == "pinned", done
    await b.close()  # B is gone; A has it all
    resp = await a.get(f"/ipfs/{root}/site/big.bin")
    assert resp.status == 200 and await resp.read() == data
    resp = await a.get(f"/ipfs/{root}/site/")
    assert resp.status == 200 and "<h1>hello</h1>" in await resp.text()


# --- (c) a lying gateway ------------------------------------------------------------------------------------
async def test_lying_gateway_is_rejected(node_factory, kubo, tmp_path, tiny):
    root, _files = kubo_tree(kubo, tmp_path)
    liar = await tiny(lie=True)
    node = await node_factory("embedded", pinning__pin_timeout=2, **LOOPBACK)
    body = await add(node, root, origins=[liar.base])
    done = await wait_status(node, body["requestid"], timeout=15)
    assert done["status"] == "failed" and "timed out" in done["info"]["error"], done
    assert len(liar.hits) >= 2  # asked, and asked again (retries with backoff), never believed
    assert await stored_blocks(node) == 0
    assert not await node.app[ENGINE].has_block(CID.parse(root))
    assert [p async for p in node.app[ENGINE].pins()] == []


async def test_lying_gateway_then_an_honest_one(node_factory, kubo, tmp_path, tiny):
    root, files = kubo_tree(kubo, tmp_path)
    liar = await tiny(lie=True)
    node = await node_factory("embedded", **LOOPBACK)
    body = await add(node, root, origins=[liar.base, kubo.gateway_url])
    done = await wait_status(node, body["requestid"])
    assert done["status"] == "pinned", done
    assert liar.hits  # asked first, rejected, then the honest gateway delivered
    kubo_drop(kubo, root)
    resp = await node.get(f"/ipfs/{root}/big.bin")
    assert await resp.read() == files["big.bin"]  # every stored block verified: the lie is nowhere


async def test_oversized_block_is_refused(tmp_path, tiny):
    gw = await tiny(oversize=True)
    engine = EmbeddedEngine(tmp_path / "e", fetch_gateways=[gw.base],
                            client=GuardedClient(allow_http=True, allow_private=True))
    await engine.start()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(engine.pin(CID.parse(random_cid()), fetch=True), 1.0)
        assert gw.hits and await asyncio.to_thread(engine.store.count) == 0
    finally:
        await engine.close()


# --- (d) origins refused by the outbound policy ----------------------------------------------------------------
@pytest.mark.parametrize("outbound", [{}, {"outbound__allow_http": True}, {"outbound__allow_private": True}])
@pytest.mark.parametrize("where", ["origins", "fetch_gateways"])
async def test_loopback_sources_refused_without_allow_private(node_factory, kubo, tmp_path, tiny, outbound, where):
    root, _files = kubo_tree(kubo, tmp_path)
    honest = await tiny(blocks=kubo_blocks(kubo, root))  # it would deliver, if it were asked
    overrides = dict(outbound, pinning__pin_timeout=30)
    origins = [honest.base]
    if where == "fetch_gateways":
        overrides["storage__fetch_gateways"], origins = [honest.base], []
    node = await node_factory("embedded", **overrides)
    started = time.monotonic()
    body = await add(node, root, origins=origins)
    done = await wait_status(node, body["requestid"], timeout=10)
    assert done["status"] == "failed", done
    assert time.monotonic() - started < 5  # refused is final: no waiting for pin_timeout
    assert "refused" in done["info"]["error"], done
    assert honest.hits == []  # nothing was requested from the loopback server
    assert await stored_blocks(node) == 0


# --- (e) serve = "network" --------------------------------------------------------------------------------------------
async def test_network_mode_fetches_missing_blocks(node_factory, kubo, tmp_path):
    root, files = kubo_tree(kubo, tmp_path)
    node = await node_factory("embedded", storage__fetch_gateways=[kubo.gateway_url], gateway__serve="network",
                              gateway__retrieval_timeout=2, **LOOPBACK)
    resp = await node.get(f"/ipfs/{root}/big.bin")
    assert resp.status == 200 and await resp.read() == files["big.bin"]
    resp = await node.get(f"/ipfs/{root}/hello.txt")
    assert resp.status == 200 and await resp.read() == files["hello.txt"]
    engine = node.app[ENGINE]
    leaf = kubo_refs(kubo, root)[-1]
    resp = await node.get(f"/ipfs/{leaf}?format=raw")
    assert resp.status == 200 and await resp.read() == kubo_block(kubo, leaf)
    # fetched blocks are kept unpinned: gc collects them
    assert await engine.has_block(CID.parse(root)) and [p async for p in engine.pins()] == []
    assert await engine.gc() > 0
    assert not await engine.has_block(CID.parse(root))
    # content nobody has: 504 once retrieval_timeout is spent
    started = time.monotonic()
    resp = await node.get(f"/ipfs/{random_cid()}")
    elapsed = time.monotonic() - started
    assert resp.status == 504, await resp.text()
    assert 1.5 < elapsed < 5


async def test_network_mode_unreachable_gateway_is_504(node_factory):
    from tests.support.kubo import free_port

    node = await node_factory("embedded", storage__fetch_gateways=[f"http://127.0.0.1:{free_port()}"],
                              gateway__serve="network", gateway__retrieval_timeout=1, **LOOPBACK)
    started = time.monotonic()
    resp = await node.get(f"/ipfs/{random_cid()}")
    assert resp.status == 504 and time.monotonic() - started < 4


async def test_local_mode_never_fetches(node_factory, kubo, tmp_path, tiny):
    root, _files = kubo_tree(kubo, tmp_path)
    gw = await tiny(blocks=kubo_blocks(kubo, root))
    node = await node_factory("embedded", storage__fetch_gateways=[gw.base], gateway__serve="local", **LOOPBACK)
    resp = await node.get(f"/ipfs/{root}/big.bin")
    assert resp.status == 404
    resp = await node.get(f"/ipfs/{root}?format=raw")
    assert resp.status == 404
    assert gw.hits == []


# --- (f) content nobody has -------------------------------------------------------------------------------------------
async def test_pin_of_content_nobody_has_waits_for_pin_timeout(node_factory, kubo):
    node = await node_factory("embedded", storage__fetch_gateways=[kubo.gateway_url], pinning__pin_timeout=3,
                              **LOOPBACK)
    started = time.monotonic()
    body = await add(node, random_cid())
    await asyncio.sleep(1.5)
    assert (await get(node, body["requestid"]))["status"] in ("queued", "pinning")  # not failed within ms
    done = await wait_status(node, body["requestid"], timeout=15)
    elapsed = time.monotonic() - started
    assert done["status"] == "failed" and "timed out" in done["info"]["error"], done
    assert 2.5 < elapsed < 8


async def test_pin_without_sources_completes_when_the_content_is_uploaded(node_factory):
    """A default node (no fetch gateways, no HTTP origins): the PSA pin waits, and the
    content arriving by upload completes it (pin first, push the data after)."""
    node = await node_factory("embedded")
    data = os.urandom(600_000)
    engine = node.app[ENGINE]
    expected = (await engine.add(_entries(data), AddOptions(pin=False))).root
    await engine.unpin(expected)
    await engine.gc()  # the CID is known, the blocks are gone
    assert not await engine.has_block(expected)
    body = await add(node, str(expected), origins=["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"])
    await asyncio.sleep(0.8)
    assert (await get(node, body["requestid"]))["status"] == "pinning"
    await asyncio.sleep(1.0)  # the pin's backoff has grown past a second by now
    started = time.monotonic()
    resp = await node.post("/api/v1/content?filename=late.bin", data=data, headers=node.auth)
    assert resp.status == 201 and (await resp.json())["cid"] == str(expected)
    done = await wait_status(node, body["requestid"], timeout=10)
    assert done["status"] == "pinned", done
    # the upload woke the waiting pin at once (it holds the content's lock the upload needs)
    assert time.monotonic() - started < 1.0


async def _entries(data: bytes):
    async def one():
        yield data

    yield AddEntry("f.bin", one())


# --- the engine directly -------------------------------------------------------------------------------------------------
@pytest.fixture
async def source_engine(tmp_path):
    """An embedded engine holding a multi-block file, and its blocks by multihash."""
    src = EmbeddedEngine(tmp_path / "src")
    await src.start()
    data = os.urandom(BIG)

    async def one():
        for i in range(0, len(data), 1 << 20):
            yield data[i:i + (1 << 20)]

    async def entries():
        yield AddEntry("big.bin", one())

    res = await src.add(entries(), AddOptions())
    blocks = {}
    for mh, path in src.store.iter_keys():
        blocks[mh] = Path(path).read_bytes()
    yield res.root, data, blocks
    await src.close()


def engine_with(tmp_path, name, gateways, **kw) -> EmbeddedEngine:
    return EmbeddedEngine(tmp_path / name, fetch_gateways=gateways,
                          client=GuardedClient(allow_http=True, allow_private=True), **kw)


async def read_all(engine, cid) -> bytes:
    return b"".join([piece async for piece in engine.cat(cid)])


async def test_fetch_false_never_touches_the_network(tmp_path, tiny, source_engine):
    root, _data, blocks = source_engine
    gw = await tiny(blocks=blocks)
    engine = engine_with(tmp_path, "e", [gw.base])
    await engine.start()
    try:
        with pytest.raises(BlockNotFound):
            await engine.pin(root)
        with pytest.raises(BlockNotFound):
            await engine.pin(root, fetch=False, origins=[gw.base])
        with pytest.raises(BlockNotFound):
            await engine.get_block(root)  # network_reads is off
        assert gw.hits == []
        # no HTTP source at all (a libp2p origin is ignored): fetch=True still waits, for the disk
        bare = EmbeddedEngine(tmp_path / "bare")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(bare.pin(root, fetch=True, origins=["/ip4/127.0.0.1/tcp/4001/p2p/x"]), 0.5)
        assert await asyncio.wait_for(bare.gc(), 5) == 0  # the cancelled pin holds no lock: gc runs
        await bare.close()
    finally:
        await engine.close()


async def test_unsupported_hash_and_identity(tmp_path, tiny):
    gw = await tiny()
    engine = engine_with(tmp_path, "e", [gw.base])
    try:
        blake3 = CID(1, RAW, b"\x1e\x20" + os.urandom(32))
        with pytest.raises(InvalidContent) as exc:
            await engine.pin(blake3, fetch=True)
        assert "hash function" in str(exc.value)
        truncated = CID(1, RAW, b"\x12\x10" + os.urandom(16))
        with pytest.raises(InvalidContent):
            await engine.pin(truncated, fetch=True)
        identity = CID(1, RAW, b"\x00\x05hello")
        await engine.pin(identity, fetch=True)  # its data is in the CID: nothing to fetch
        assert gw.hits == []
    finally:
        await engine.close()


async def test_direct_pin_fetches_only_the_root(tmp_path, tiny, source_engine):
    root, _data, blocks = source_engine
    gw = await tiny(blocks=blocks)
    engine = engine_with(tmp_path, "e", [gw.base])
    try:
        await engine.pin(root, recursive=False, fetch=True)
        assert gw.hits == [str(root)]
        assert [(p.cid, p.type) async for p in engine.pins()] == [(root, "direct")]
    finally:
        await engine.close()


async def test_gc_during_a_fetching_pin_keeps_the_blocks(tmp_path, tiny, source_engine):
    """gc runs over and over while a pin fetches a slow DAG: each waits for the fetch
    round in progress (which holds the store lock until the pin is recorded), so no
    fetched block is swept and fetched again; afterwards the pin holds them."""
    root, data, blocks = source_engine
    gw = await tiny(blocks=blocks, delay=0.02)
    engine = engine_with(tmp_path, "e", [gw.base])
    await engine.start()
    try:
        task = asyncio.create_task(engine.pin(root, fetch=True))
        runs = 0
        while not task.done():
            await engine.gc()
            runs += 1
            await asyncio.sleep(0.005)
        await task
        assert runs >= 1
        await engine.gc()
        assert await read_all(engine, root) == data
        assert len(gw.hits) == len(blocks)  # each block fetched once: none was swept and fetched again
    finally:
        await engine.close()


async def test_a_missing_block_is_retried_until_it_appears(tmp_path, tiny, source_engine):
    """A source that lacks one leaf at first: the pin keeps trying and completes once it has it."""
    root, data, blocks = source_engine
    held_back = next(mh for mh, b in blocks.items() if len(b) == 262144)
    partial = dict(blocks)
    del partial[held_back]
    gw = await tiny(blocks=partial)
    engine = engine_with(tmp_path, "e", [gw.base])
    await engine.start()
    try:
        task = asyncio.create_task(engine.pin(root, fetch=True))
        await asyncio.sleep(0.8)
        assert not task.done()
        gw.blocks[held_back] = blocks[held_back]
        await asyncio.wait_for(task, 10)
        assert await read_all(engine, root) == data
        # the blocks that were there the first time were not fetched again
        assert len(gw.hits) < 2 * len(blocks)
    finally:
        await engine.close()


async def test_kubo_remote_pinning_client_against_an_embedded_node(node_factory, kubo, tmp_path):
    """Kubo's `ipfs pin remote add` talking to an embedded node that fetches from Kubo's
    gateway (Kubo sends its libp2p multiaddrs as origins: ignored by the embedded engine;
    it gets our HTTP multiaddr as the delegate)."""
    import uuid

    from tests.test_psa import ipfs_async

    root, files = kubo_tree(kubo, tmp_path)
    node = await node_factory("embedded", storage__fetch_gateways=[kubo.gateway_url], **LOOPBACK)
    service = f"hearth-{uuid.uuid4().hex[:12]}"
    await ipfs_async(kubo, "pin", "remote", "service", "add", service, str(node.make_url("/psa")), node.token)
    try:
        out = await ipfs_async(kubo, "pin", "remote", "add", f"--service={service}", "--name=from-kubo", root)
        assert "pinned" in out and root in out
    finally:
        await ipfs_async(kubo, "pin", "remote", "service", "rm", service)
    kubo_drop(kubo, root)
    resp = await node.get(f"/ipfs/{root}/big.bin")
    assert await resp.read() == files["big.bin"]


async def test_peer_id_matches_kubo(kubo, tmp_path):
    """The delegate's peer ID is derived as libp2p does: Kubo, given the same key, names it the same."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    path = tmp_path / "k.key"
    path.write_bytes(b"\x08\x01\x12\x40" + seed + pub)  # libp2p PrivateKey protobuf (Ed25519)
    name = f"t{os.urandom(4).hex()}"
    kubo.ipfs("key", "import", name, str(path), "--format=libp2p-protobuf-cleartext")
    try:
        listed = kubo.ipfs("key", "list", "-l", "--ipns-base=b58mh")
        assert f"{peer_id_of(pub)} {name}" in listed
    finally:
        kubo.ipfs("key", "rm", name)
