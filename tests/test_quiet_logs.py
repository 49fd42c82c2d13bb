"""Client errors are logged once, at debug, without a traceback: malformed HTTP that
aiohttp's parser refuses, bad input, clients that disconnect mid-upload or
mid-download. Only real bugs are ERROR with a traceback."""
from __future__ import annotations

import asyncio
import logging
import os

import pytest

from gateway.keys import METRICS
from tests.gateway_helpers import upload


def requests_seen(node, route: str, method: str) -> int:
    counter = node.app[METRICS].requests
    return sum(n for (r, m, _s), n in counter._values.items() if r == route and m == method)


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def assert_quiet(caplog) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not loud, [(r.name, r.levelname, r.getMessage(), r.exc_info and r.exc_info[0]) for r in loud]


async def raw_exchange(node, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",      # bad header
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",                        # control character
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",                                      # bad version
    b"GET /he lthz HTTP/1.1\r\nHost: x\r\n\r\n",                                      # bad request line
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",               # bad framing
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nBREW /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # 2nd request: bad method
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",                        # line too long
])
async def test_malformed_http_is_quiet(node, caplog, raw):
    caplog.set_level(logging.DEBUG)
    answer = await raw_exchange(node, raw)
    assert b" 400 " in answer or b" 505 " in answer or b" 414 " in answer or b" 431 " in answer, answer[:200]
    await asyncio.sleep(0.05)
    assert_quiet(caplog)
    assert any(r.name == "hearth.http" and "malformed HTTP request" in r.getMessage() for r in caplog.records)


async def test_bad_input_is_logged_once_at_debug(node, caplog):
    caplog.set_level(logging.DEBUG)
    resp = await node.get("/api/v1/content?cursor=OTIyMzM3MjAzNjg1NDc3NTgwOA", headers=node.auth)
    assert resp.status == 400
    resp = await node.post("/psa/pins", data=b"[" * 50000, headers=node.auth)
    assert resp.status == 400
    assert_quiet(caplog)
    lines = [r.getMessage() for r in caplog.records if r.name == "hearth.http"]
    assert sum("invalid_parameter" in line for line in lines) == 1, lines
    assert sum("BAD_REQUEST" in line and "levels deep" in line for line in lines) == 1, lines


def cancellation(node, cancel: bool) -> None:
    """`hearth serve` runs with aiohttp's default, handler_cancellation=False (the handler
    sees its reads and writes fail); aiohttp's test server cancels the handler instead."""
    node.server.runner.server.handler_cancellation = cancel


@pytest.mark.parametrize("cancel", [False, True], ids=["served", "cancelled"])
@pytest.mark.parametrize("engine", ["kubo", "embedded"])
async def test_disconnect_mid_upload_is_quiet(node_factory, caplog, engine, cancel):
    node = await node_factory(engine)
    cancellation(node, cancel)
    caplog.set_level(logging.DEBUG)
    before = requests_seen(node, "/api/v1/content", "POST")
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    writer.write(b"POST /api/v1/content?filename=cut.bin HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + node.token.encode() + b"\r\n"
                 b"Content-Length: 10000000\r\n\r\n" + os.urandom(300_000))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()  # RST, mid-body
    await wait_for(lambda: requests_seen(node, "/api/v1/content", "POST") > before)
    await asyncio.sleep(0.1)
    assert_quiet(caplog)
    assert [r.getMessage() for r in caplog.records if r.name == "hearth.http" and "client disconnected" in r.getMessage()]
    assert requests_seen(node, "/api/v1/content", "POST") == before + 1
    assert node.app[METRICS].requests.value(route="/api/v1/content", method="POST", status=499) == 1
    page = await (await node.get("/api/v1/content", headers=node.auth)).json()
    assert page["results"] == []  # nothing recorded


@pytest.mark.parametrize("cancel", [False, True], ids=["served", "cancelled"])
@pytest.mark.parametrize("engine", ["kubo", "embedded"])
async def test_disconnect_mid_download_is_quiet(node_factory, caplog, engine, cancel):
    node = await node_factory(engine)
    cancellation(node, cancel)
    rec = await upload(node, os.urandom(24 * 1024 * 1024), "big.bin")  # streamed, not cached
    caplog.set_level(logging.DEBUG)
    before = requests_seen(node, "/ipfs/{cid}", "GET")
    reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
    writer.write(f"GET /ipfs/{rec['cid']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    got = await reader.read(65536)
    assert b"200 OK" in got
    writer.transport.abort()
    await wait_for(lambda: requests_seen(node, "/ipfs/{cid}", "GET") > before)
    await asyncio.sleep(0.1)
    assert_quiet(caplog)


async def test_real_bugs_stay_loud(node, caplog):
    """A handler that raises is still an ERROR with its traceback."""
    async def broken(request):
        raise RuntimeError("boom")

    node.app.router._frozen = False
    node.app.router.add_get("/api/v1/broken", broken)
    node.app.router._frozen = True
    resp = await node.get("/api/v1/broken")
    assert resp.status == 500
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info and errors[0].exc_info[0] is RuntimeError
