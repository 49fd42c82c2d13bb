"""Raw-body uploads on the Kubo engine move the body from the client's socket into
Kubo's with splice(2) (gateway/socket_body.py): the same CIDs as `ipfs add`, the
same 413 and the same "nothing kept" when a body stops short or stalls, and the
connection closes after the response (Connection: close)."""
from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from gateway.socket_body import SPLICE_MIN, SocketBody
from tests.gateway_helpers import upload

BIG = SPLICE_MIN * 5 + 12345  # spliced (several pipe loads, not a multiple of anything)


@pytest.fixture
def spliced(monkeypatch) -> list:
    """Bodies the node forwarded with splice in this test: (size, bytes moved)."""
    seen: list = []
    send_to = SocketBody.send_to

    async def counting(self, fd, **kw):
        try:
            await send_to(self, fd, **kw)
        finally:
            seen.append((self.size, self.moved))

    monkeypatch.setattr(SocketBody, "send_to", counting)
    return seen


def only_hash(kubo, tmp_path, data: bytes, *flags) -> str:
    p = tmp_path / f"f{len(list(tmp_path.iterdir()))}"
    p.write_bytes(data)
    return kubo.add_only_hash(str(p), *flags)


async def _records(client) -> list:
    resp = await client.get("/api/v1/content", headers=client.auth)
    return (await resp.json())["results"]


def _pinned(kubo) -> str:
    return kubo.ipfs("pin", "ls", "--type=recursive")


async def _raw_post(client, head_extra: str, body: bytes, length: int, *, close: bool = True,
                    wait: float = 15) -> bytes:
    """POST a raw body by hand: announce `length` bytes, send `body`, then close (or not)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    auth = client.auth["Authorization"]
    writer.write(f"POST /api/v1/content?filename=big HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
                 f"Content-Length: {length}\r\n{head_extra}\r\n".encode() + body)
    await writer.drain()
    if close:
        writer.close()
        await asyncio.sleep(0.5)
        return b""
    try:
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


@pytest.mark.parametrize("size", [SPLICE_MIN, BIG])
async def test_spliced_upload_matches_ipfs_add(node, kubo, tmp_path, size, spliced):
    data = os.urandom(size)
    v1 = await upload(node, data, "f.bin")
    assert spliced == [(size, size)]
    assert v1["cid"] == only_hash(kubo, tmp_path, data, "--cid-version=1")
    assert v1["size"] == size and v1["pinned"] is True
    v0 = await upload(node, data, "f.bin", cid_version=0)  # on the pool's next connection
    assert v0["cid"] == only_hash(kubo, tmp_path, data)
    async with node.get(f"/ipfs/{v1['cid']}") as resp:
        assert await resp.read() == data


async def test_spliced_upload_says_connection_close_and_small_ones_keep_alive(node):
    resp = await node.post("/api/v1/content?filename=a", data=os.urandom(BIG), headers=node.auth)
    assert resp.status == 201 and resp.headers.get("Connection", "").lower() == "close"
    resp = await node.post("/api/v1/content?filename=b", data=b"small", headers=node.auth)
    assert resp.status == 201 and resp.headers.get("Connection", "").lower() != "close"


async def test_spliced_upload_from_a_slow_client(node, kubo, tmp_path):
    """A body that arrives in pieces, with pauses shorter than the idle timeout."""
    data = os.urandom(3 * SPLICE_MIN + 1)

    async def trickle():
        for i in range(0, len(data), 700_000):
            yield data[i:i + 700_000]
            await asyncio.sleep(0.05)

    resp = await node.post("/api/v1/content?filename=slow.bin", data=trickle(), headers=dict(
        node.auth, **{"Content-Length": str(len(data))}))
    body = await resp.json()
    assert resp.status == 201, body
    assert body["cid"] == only_hash(kubo, tmp_path, data, "--cid-version=1")


async def test_body_that_stops_midway_keeps_nothing(node, kubo, spliced):
    data = os.urandom(BIG)
    await _raw_post(node, "", data[:len(data) // 2], len(data), close=True)
    await asyncio.sleep(0.5)
    assert len(spliced) == 1 and spliced[0][0] == BIG and 0 < spliced[0][1] <= BIG // 2
    assert await _records(node) == []
    # Kubo never finished the add, so nothing of it is pinned; and the node still works
    before = _pinned(kubo)
    rec = await upload(node, data, "whole.bin")
    assert rec["cid"] in _pinned(kubo) and rec["cid"] not in before
    assert [r["cid"] for r in await _records(node)] == [rec["cid"]]


async def test_stalled_body_is_cut_off_and_nothing_is_kept(node_factory, spliced):
    client = await node_factory("kubo", server__body_idle_timeout=1)
    started = asyncio.get_running_loop().time()
    answer = await _raw_post(client, "", os.urandom(SPLICE_MIN), 4 * SPLICE_MIN, close=False)
    waited = asyncio.get_running_loop().time() - started
    assert 0.8 <= waited <= 6, waited
    assert spliced == [(4 * SPLICE_MIN, SPLICE_MIN)]
    assert not answer.startswith(b"HTTP/1.1 201")
    assert await _records(client) == []


async def test_over_the_limit_is_413_before_any_byte_moves(node_factory, kubo, spliced):
    client = await node_factory("kubo", storage__max_upload_bytes=2 * SPLICE_MIN)
    data = os.urandom(2 * SPLICE_MIN + 1)
    resp = await client.post("/api/v1/content?filename=big", data=data, headers=client.auth)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "too_large"
    assert await _records(client) == [] and spliced == []
    ok = await client.post("/api/v1/content?filename=fits", data=data[:-1], headers=client.auth)
    assert ok.status == 201 and spliced == [(2 * SPLICE_MIN, 2 * SPLICE_MIN)]


async def test_expect_100_continue(node, kubo, tmp_path):
    data = os.urandom(SPLICE_MIN + 3)
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    try:
        writer.write(f"POST /api/v1/content?filename=e.bin HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: {node.auth['Authorization']}\r\nExpect: 100-continue\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode())
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100")
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)  # the node closes after answering
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert only_hash(kubo, tmp_path, data, "--cid-version=1").encode() in answer


async def test_multipart_and_compressed_bodies_are_not_spliced(node, kubo, tmp_path, spliced):
    """Only a raw identity body is forwarded as is: multipart trees and encoded bodies
    still go through aiohttp (and give the CIDs they gave before)."""
    import gzip

    data = os.urandom(2 * SPLICE_MIN)
    resp = await node.post("/api/v1/content?filename=z.bin", data=gzip.compress(data, 1),
                           headers=dict(node.auth, **{"Content-Encoding": "gzip"}))
    body = await resp.json()
    assert resp.status == 201, body
    assert resp.headers.get("Connection", "").lower() != "close"
    assert body["cid"] == only_hash(kubo, tmp_path, data, "--cid-version=1")
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", data, filename="d/x.bin", content_type="application/octet-stream")
    form.add_field("file", b"y", filename="d/y.txt", content_type="text/plain")
    resp = await node.post("/api/v1/content?wrap=true", data=form, headers=node.auth)
    assert resp.status == 201, await resp.text()
    assert resp.headers.get("Connection", "").lower() != "close"
    assert spliced == []


async def test_real_server_spliced_uploads_and_body_idle_timeout(kubo, tmp_path):
    """Through `hearth serve` (its connection sweeper, its workers): a spliced upload that
    takes several times body_idle_timeout but keeps moving succeeds; one that stalls is
    closed after about body_idle_timeout, and nothing is recorded."""
    from tests.support.node import NodeProcess

    node = NodeProcess(tmp_path / "data", env={"HEARTH_STORAGE_ENGINE": "kubo",
                                               "HEARTH_STORAGE_KUBO_API": kubo.api_url,
                                               "HEARTH_SERVER_BODY_IDLE_TIMEOUT": "1"}).start()
    try:
        data = os.urandom(3 * SPLICE_MIN)

        async def trickle():
            for i in range(0, len(data), SPLICE_MIN // 4):
                yield data[i:i + SPLICE_MIN // 4]
                await asyncio.sleep(0.25)  # 12 pieces: ~3 s in all, never 1 s quiet

        async with aiohttp.ClientSession() as session:
            async with session.post(node.url + "/api/v1/content?filename=slow.bin", data=trickle(),
                                    headers=dict(node.auth, **{"Content-Length": str(len(data))})) as resp:
                body = await resp.json()
                assert resp.status == 201, body
                assert resp.headers.get("Connection", "").lower() == "close"
            assert body["cid"] == only_hash(kubo, tmp_path, data, "--cid-version=1")

            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(f"POST /api/v1/content?filename=stalled HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: {node.auth['Authorization']}\r\nContent-Length: {4 * SPLICE_MIN}\r\n\r\n"
                         .encode() + os.urandom(SPLICE_MIN))
            await writer.drain()
            started = asyncio.get_running_loop().time()
            answer = await asyncio.wait_for(reader.read(), 15)
            waited = asyncio.get_running_loop().time() - started
            writer.close()
            assert 0.8 <= waited <= 5, waited
            assert not answer.startswith(b"HTTP/1.1 201")
            async with session.get(node.url + "/api/v1/content", headers=node.auth) as resp:
                assert [r["name"] for r in (await resp.json())["results"]] == ["slow.bin"]
    finally:
        node.stop()


async def test_kubo_pin_of_a_pinned_root_does_not_walk_the_dag(kubo, tmp_path):
    """The node pins every upload again once its record is written (a Pinning API delete
    may have unpinned it meanwhile). Kubo's pin/add walks the whole DAG even when the pin
    is there: the engine asks pin/ls first, and only a missing pin, or one under another
    name, goes to pin/add."""
    from storage.cid import CID
    from storage.kubo import KuboEngine

    calls: list[str] = []
    engine = KuboEngine(kubo.api_url, observe=lambda cmd, secs: calls.append(cmd), pin_name="hearth-test-pins")
    await engine.start()
    try:
        path = tmp_path / "p.bin"
        path.write_bytes(os.urandom(3 * SPLICE_MIN))
        cid = CID.parse(kubo.ipfs("add", "-Q", "--pin=false", "--cid-version=1", str(path)).strip())
        await engine.pin(cid)  # not pinned: pin/add
        assert calls.count("pin/add") == 1
        await engine.pin(cid)  # pinned under our name: pin/ls only
        assert calls.count("pin/add") == 1
        kubo.ipfs("pin", "add", "--name", "someone-else", str(cid))  # renamed by Kubo
        await engine.pin(cid)
        assert calls.count("pin/add") == 2
        assert "hearth-test-pins" in kubo.ipfs("pin", "ls", "--type=recursive", "--names", str(cid))
        await engine.unpin(cid)
        await engine.pin(cid)
        assert calls.count("pin/add") == 3 and await engine.is_pinned(cid)
        await engine.unpin(cid)
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def kubo_unix():
    """A Kubo whose RPC also listens on a Unix socket."""
    from tests.support.kubo import KuboDaemon

    daemon = KuboDaemon(unix_api=True).start()
    yield daemon
    daemon.cleanup()


async def test_kubo_engine_over_a_unix_socket(node_factory, kubo_unix, tmp_path, spliced):
    """`[storage] kubo_api = "unix:/path"`: uploads (spliced into the Unix socket, and through
    aiohttp for small and multipart ones), reads (Kubo's gateway, over TCP, and the RPC
    cat), pins and readiness all work as over TCP."""
    client = await node_factory("kubo", storage__kubo_api=kubo_unix.api_unix)
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    big = os.urandom(BIG)
    rec = await upload(client, big, "big.bin")
    assert spliced == [(BIG, BIG)]
    assert rec["cid"] == only_hash(kubo_unix, tmp_path, big, "--cid-version=1")
    assert rec["cid"] in _pinned(kubo_unix)
    small = await upload(client, b"small over unix", "s.txt")
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", b"a", filename="d/a.txt", content_type="text/plain")
    form.add_field("file", b"b", filename="d/b.txt", content_type="text/plain")
    tree = await client.post("/api/v1/content?wrap=true", data=form, headers=client.auth)
    assert tree.status == 201, await tree.text()
    async with client.get(f"/ipfs/{rec['cid']}") as resp:
        assert resp.status == 200 and await resp.read() == big
    async with client.get(f"/ipfs/{small['cid']}", headers={"Range": "bytes=6-10"}) as resp:
        assert resp.status == 206 and await resp.read() == b"over "
    resp = await client.delete(f"/api/v1/content/{rec['cid']}", headers=client.auth)
    assert resp.status == 200
    assert rec["cid"] not in _pinned(kubo_unix)


async def test_kubo_engine_over_a_missing_unix_socket_is_503(node_factory, tmp_path):
    client = await node_factory("kubo", storage__kubo_api=f"unix:{tmp_path}/nothing.sock")
    resp = await client.post("/api/v1/content?filename=x", data=os.urandom(BIG), headers=client.auth)
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"]["code"] == "storage_unavailable"
