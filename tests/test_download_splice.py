"""File downloads on the Kubo engine spliced from Kubo's gateway into the client's
socket (StorageEngine.file_socket, storage/kubo.py; gateway/ipfs/unixfs_file.py):
the same statuses, headers and bytes as the copy path, the RPC `cat` and the
embedded engine; a Kubo that dies, stops short or stalls cuts the client's
connection (never a short 200); a client that goes away is quiet; the fallbacks
(`kubo_gateway = "off"`, an unreachable gateway) work as before."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket

import aiohttp
import pytest

from gateway.ipfs import unixfs_file
from gateway.keys import ENGINE, METRICS
from storage import unixfs
from storage.cid import CID
from storage.engine import BlockNotFound, EngineError
from storage.kubo import STREAM_HTTP10_MIN, KuboEngine, _GatewaySocket
from tests.gateway_helpers import upload
from tests.support.kubo import KuboDaemon
from tests.test_quiet_logs import assert_quiet, cancellation, requests_seen, wait_for

pytestmark = pytest.mark.timeout(180)

MiB = 1 << 20
BIG = os.urandom(5 * MiB + 4321)  # several pipe loads, not a multiple of anything


def engine_of(client) -> KuboEngine:
    return client.server.app[ENGINE]


def spliced(client) -> tuple[int, int]:
    """(sources handed out, bytes they moved) on this node's Kubo engine."""
    e = engine_of(client)
    return e.socket_reads, e.socket_bytes


def answer(resp, body: bytes) -> tuple:
    return resp.status, {k: v for k, v in resp.headers.items() if k not in ("Date", "Server")}, body


def ranges_for(size: int) -> list[dict]:
    return [{}, {"Range": "bytes=0-"}, {"Range": "bytes=1000-"}, {"Range": f"bytes=-{2 * MiB}"},
            {"Range": f"bytes=262140-{262140 + 3 * MiB}"}, {"Range": f"bytes=7-{size - 3}"},
            {"Range": f"bytes={size - 10}-"},              # short: the copy path
            {"Range": "bytes=10-20,300000-300010"},        # several ranges: the copy path
            {"Range": f"bytes=0-{MiB - 1},{2 * MiB}-{3 * MiB}"}]


async def fetch_all(client, url: str, size: int) -> list:
    out = []
    for headers in ranges_for(size):
        r = await client.get(url, headers=headers)
        out.append(answer(r, await r.read()))
    return out


@pytest.mark.parametrize("cid_version", [0, 1])
async def test_same_answers_as_copy_path_rpc_cat_and_embedded(node_factory, monkeypatch, cid_version):
    gw = await node_factory("kubo")
    rpc = await node_factory("kubo", storage__kubo_gateway="off")
    emb = await node_factory("embedded")
    for n in (gw, rpc, emb):
        rec = await upload(n, BIG, "big.bin", cid_version=cid_version)
    url = f"/ipfs/{rec['cid']}"
    size = len(BIG)
    before = spliced(gw)
    via_splice = await fetch_all(gw, url, size)
    reads, nbytes = spliced(gw)
    # whole file, 0-, 1000-, suffix, middle, 7..size-3: spliced; the short and multi-range: not
    assert reads - before[0] == 6
    assert nbytes - before[1] == sum(len(a[2]) for a in via_splice[:6])
    monkeypatch.setattr(unixfs_file, "SPLICE", False)
    via_copy = await fetch_all(gw, url, size)
    assert spliced(gw) == (reads, nbytes)  # the copy path took them all
    monkeypatch.undo()
    via_rpc = await fetch_all(rpc, url, size)
    via_embedded = await fetch_all(emb, url, size)
    assert spliced(rpc) == (0, 0)
    assert via_splice == via_copy == via_rpc == via_embedded
    assert via_splice[0][0] == 200 and via_splice[0][2] == BIG
    assert via_splice[4][0] == 206 and via_splice[4][2] == BIG[262140:262140 + 3 * MiB + 1]
    assert via_splice[4][1]["Content-Range"] == f"bytes 262140-{262140 + 3 * MiB}/{size}"


async def test_big_file_byte_exact(node_factory):
    node = await node_factory("kubo")
    data = os.urandom(50 * MiB + 17)
    rec = await upload(node, data, "fifty.bin")
    before = spliced(node)
    digest, n = hashlib.sha256(), 0
    async with node.session.get(node.make_url(f"/ipfs/{rec['cid']}")) as r:
        assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
        async for chunk in r.content.iter_chunked(1 << 20):
            digest.update(chunk)
            n += len(chunk)
    assert n == len(data) and digest.digest() == hashlib.sha256(data).digest()
    start, end = 7 * MiB + 3, 41 * MiB + 5
    r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": f"bytes={start}-{end - 1}"})
    assert r.status == 206 and hashlib.sha256(await r.read()).digest() == hashlib.sha256(data[start:end]).digest()
    assert spliced(node) == (before[0] + 2, before[1] + len(data) + end - start)
    metrics = await (await node.get("/metrics")).text()
    assert 'hearth_engine_call_seconds_count{op="gateway_socket"}' in metrics


async def test_keep_alive_after_a_spliced_response(node):
    rec = await upload(node, BIG, "big.bin")
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    try:
        for _ in range(2):  # the same connection serves the next request: the body was exactly its length
            writer.write(f"GET /ipfs/{rec['cid']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {len(BIG)}".encode() in head
            assert b"Connection: close" not in head
            assert await reader.readexactly(len(BIG)) == BIG
    finally:
        writer.close()
    assert spliced(node)[0] == 2


async def test_compressed_or_socketless_response_falls_back_to_copying(node, monkeypatch):
    """If the client's socket cannot be written to directly after all, the opened source is
    closed and the bytes are streamed through aiohttp instead."""
    rec = await upload(node, BIG, "big.bin")
    closed = []
    original_init, original_close = unixfs_file._Body.__init__, _GatewaySocket.close

    def no_fd(self, *args):
        original_init(self, *args)
        self.close()

    def close(self):
        closed.append(self._sock is not None)
        original_close(self)

    monkeypatch.setattr(unixfs_file._Body, "__init__", no_fd)
    monkeypatch.setattr(_GatewaySocket, "close", close)
    r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=5-"})
    assert r.status == 206 and await r.read() == BIG[5:]
    assert spliced(node) == (1, 0) and closed[0] is True


# --- the engine boundary --------------------------------------------------------------------------
async def test_file_socket_offers_only_long_plain_http_reads(kubo):
    data = os.urandom(2 * MiB)
    cid = CID.parse(kubo.ipfs("add", "-Q", "--cid-version=1", input=data).strip())
    engine = KuboEngine(kubo.api_url)
    await engine.start()
    try:
        node = await engine.stat(cid)
        assert await engine.file_socket(node, 0, STREAM_HTTP10_MIN - 1) is None  # short: keep-alive cat()
        source = await engine.file_socket(node, 10, 10 + STREAM_HTTP10_MIN)
        assert source is not None and source.size == STREAM_HTTP10_MIN
        a, b = socket.socketpair()
        try:
            a.setblocking(False)
            received = bytearray()

            async def drain():
                loop = asyncio.get_running_loop()
                while len(received) < source.size:
                    received.extend(await loop.sock_recv(b, 1 << 20))

            b.setblocking(False)
            await asyncio.gather(source.send_to(a.fileno(), timeout=10), drain())
        finally:
            a.close()
            b.close()
        assert bytes(received) == data[10:10 + STREAM_HTTP10_MIN]
        with pytest.raises(RuntimeError):
            await source.send_to(0, timeout=1)  # once only
        # a missing file: the gateway's 404 is BlockNotFound, before any byte
        missing = unixfs.Node(CID.parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), b"", "file",
                              4 * MiB)
        with pytest.raises(BlockNotFound):
            await engine.file_socket(missing, 0, 4 * MiB)
    finally:
        await engine.close()
    for gateway in ("off", "https://127.0.0.1:1"):  # no gateway, or one behind TLS (aiohttp's job)
        engine = KuboEngine(kubo.api_url, gateway=gateway)
        await engine.start()
        try:
            assert await engine.file_socket(await engine.stat(cid), 0, 2 * MiB) is None
        finally:
            await engine.close()


# --- fallbacks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("gateway", ["off", "http://127.0.0.1:9"])
async def test_no_gateway_or_unreachable_gateway_uses_the_rpc_cat(node_factory, gateway):
    node = await node_factory("kubo", storage__kubo_gateway=gateway)
    rec = await upload(node, BIG, "big.bin")
    for _ in range(2):
        r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=3-"})
        assert r.status == 206 and await r.read() == BIG[3:]
    assert spliced(node) == (0, 0)
    assert engine_of(node)._gw_url is None


# --- Kubo failing mid-transfer -----------------------------------------------------------------------
async def read_until_cut(client, url: str, headers: dict | None = None, *, after=None) -> tuple[int, int]:
    """(status, bytes received) of a download the server must cut short: reading it fails.
    after(n) is awaited once, when the first MiB has arrived."""
    got = 0
    async with client.session.get(client.make_url(url), headers=headers or {}) as r:
        status = r.status
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
            called = False
            async for chunk in r.content.iter_chunked(1 << 16):
                got += len(chunk)
                if after is not None and not called and got >= MiB:
                    called = True
                    await after()
    return status, got


async def test_kubo_killed_mid_transfer_cuts_the_connection(node_factory, caplog):
    own = KuboDaemon().start()
    try:
        node = await node_factory("kubo", storage__kubo_api=own.api_url)
        data = os.urandom(64 * MiB)  # far more than the socket buffers and the pipe hold
        rec = await upload(node, data, "big.bin")

        async def kill():
            await asyncio.to_thread(own.kill)

        status, got = await read_until_cut(node, f"/ipfs/{rec['cid']}", after=kill)
        assert status == 200 and MiB <= got < len(data)
        assert spliced(node)[0] == 1
        assert any("the client's connection is cut" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        own.cleanup()


async def test_missing_block_mid_file_cuts_the_connection(node, kubo):
    """Kubo's gateway sends its 206 head, then stops at a block it does not have."""
    data = os.urandom(3 * MiB)
    cid = kubo.ipfs("add", "-Q", "--pin=false", "--cid-version=1", input=data).strip()
    leaves = kubo.ipfs("refs", cid).split()
    kubo.ipfs("block", "rm", leaves[5])  # bytes 1.25-1.5 MiB
    status, got = await read_until_cut(node, f"/ipfs/{cid}")
    assert status == 200 and got == 5 * 262144
    assert spliced(node) == (1, got)
    r = await node.get(f"/ipfs/{cid}", headers={"Range": f"bytes=0-{MiB - 1}"})
    assert r.status == 206 and await r.read() == data[:MiB]  # what is there is still served


class FakeGateway:
    """Stands in for Kubo's gateway (the RPC stays the real Kubo): answers every request
    with `head`, then `body`, then stalls (stall=True) or closes."""

    def __init__(self):
        self.head = b""
        self.body = b""
        self.stall = False
        self.requests: list[bytes] = []
        self.server = None
        self.writers: list = []

    async def handle(self, reader, writer):
        self.writers.append(writer)
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(self.head + self.body)
        await writer.drain()
        if self.stall:
            await asyncio.sleep(3600)
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self):
        for w in self.writers:
            w.transport.abort()
        self.server.close()


@pytest.fixture
async def fake_gateway():
    fake = FakeGateway()
    url = await fake.start()
    yield fake, url
    await fake.stop()


def head_for(status: str, **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_short_body_from_the_gateway_cuts_the_connection(node_factory, fake_gateway, caplog):
    fake, url = fake_gateway
    node = await node_factory("kubo", storage__kubo_gateway=url)
    rec = await upload(node, BIG, "big.bin")
    size = len(BIG)
    fake.head = head_for("206 Partial Content", Content_Length=str(size),
                         Content_Range=f"bytes 0-{size - 1}/{size}")
    fake.body = BIG[:2 * MiB]
    status, got = await read_until_cut(node, f"/ipfs/{rec['cid']}")
    assert status == 200 and got == 2 * MiB
    request = fake.requests[-1].decode()
    assert request.startswith(f"GET /ipfs/{rec['cid']} HTTP/1.0\r\n") and f"Range: bytes=0-{size - 1}" in request
    assert any("ended after 2097152 of" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_stalled_gateway_is_bounded_by_the_engine_timeout(node_factory, fake_gateway):
    fake, url = fake_gateway
    node = await node_factory("kubo", storage__kubo_gateway=url, storage__kubo_timeout=1)
    rec = await upload(node, BIG, "big.bin")
    size = len(BIG)
    fake.head = head_for("206 Partial Content", Content_Length=str(size - 1),
                         Content_Range=f"bytes 1-{size - 1}/{size}")
    fake.body, fake.stall = BIG[1:MiB], True
    started = asyncio.get_running_loop().time()
    status, got = await read_until_cut(node, f"/ipfs/{rec['cid']}", {"Range": "bytes=1-"})
    assert status == 206 and 0 < got <= MiB - 1
    assert asyncio.get_running_loop().time() - started < 10
    # a head that never comes: 504 before any byte
    fake.head, fake.body = b"", b""
    r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=1-"})
    assert r.status == 504


async def test_gateway_answers_that_do_not_fit(node_factory, fake_gateway):
    fake, url = fake_gateway
    node = await node_factory("kubo", storage__kubo_gateway=url)
    rec = await upload(node, BIG, "big.bin")
    size = len(BIG)
    # bytes from elsewhere in the file than asked: 502 before any byte
    fake.head = head_for("206 Partial Content", Content_Length=str(size - 5), Content_Range=f"bytes 5-{size - 1}/{size}")
    fake.body = BIG[5:]
    r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=4-"})
    assert r.status == 502
    # chunked framing (not the bytes as they are: cat() reads them through aiohttp), or an
    # unexpected status (cat()'s own gateway request gets it too, then the RPC cat answers)
    chunked = f"{size - 4:x}\r\n".encode() + BIG[4:] + b"\r\n0\r\n\r\n"
    for head, body in ((head_for("206 Partial Content", Transfer_Encoding="chunked",
                                 Content_Range=f"bytes 4-{size - 1}/{size}"), chunked),
                       (head_for("302 Found", Location="/elsewhere", Content_Length="0"), b"")):
        fake.head, fake.body = head, body
        r = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=4-"})
        assert r.status == 206 and await r.read() == BIG[4:]
    assert spliced(node) == (0, 0)
    # a 404 while reads are local: the content is not there
    fake.head, fake.body = head_for("404 Not Found", Content_Length="9"), b"not found"
    assert (await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=4-"})).status == 404


# --- the client going away ------------------------------------------------------------------------
@pytest.mark.parametrize("cancel", [False, True], ids=["served", "cancelled"])
async def test_client_disconnecting_mid_transfer_is_quiet_and_ends_the_kubo_connection(node_factory, caplog,
                                                                                    monkeypatch, cancel):
    node = await node_factory("kubo")
    cancellation(node, cancel)
    rec = await upload(node, os.urandom(48 * MiB), "big.bin")
    sources = []
    original_init = _GatewaySocket.__init__

    def track(self, *args, **kw):
        original_init(self, *args, **kw)
        sources.append(self)

    monkeypatch.setattr(_GatewaySocket, "__init__", track)
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what start-up and the upload logged is not this test's business
    before = requests_seen(node, "/ipfs/{cid}", "GET")
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    writer.write(f"GET /ipfs/{rec['cid']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await reader.readexactly(2 * MiB)
    writer.transport.abort()
    await wait_for(lambda: requests_seen(node, "/ipfs/{cid}", "GET") > before)
    await asyncio.sleep(0.1)
    assert_quiet(caplog)
    assert len(sources) == 1 and sources[0]._sock is None  # Kubo's connection is closed
    assert 0 < spliced(node)[1] < 48 * MiB
    assert node.app[METRICS].requests.value(route="/ipfs/{cid}", method="GET", status=499) == 1


async def test_engine_error_before_the_head_is_a_proper_error(node_factory, fake_gateway, monkeypatch):
    """file_socket raising (here: EngineError) happens before the status is committed."""
    fake, url = fake_gateway
    node = await node_factory("kubo", storage__kubo_gateway=url)
    rec = await upload(node, BIG, "big.bin")

    async def boom(self, node, start, end):
        raise EngineError("nope")

    monkeypatch.setattr(KuboEngine, "file_socket", boom)
    r = await node.get(f"/ipfs/{rec['cid']}")
    assert r.status == 502 and (await r.json())["error"]["code"] == "storage_error"
