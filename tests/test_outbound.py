"""The guarded outbound client (outbound/client.py) and the HTTP multiaddr <-> URL
conversions (outbound/multiaddr.py): the address rules, scheme, redirects, size and
time limits, DNS answers checked at connect time, and a loopback server that is
refused by default and reached with allow_private + allow_http."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from outbound import (
    GuardedClient,
    HttpTarget,
    OutboundError,
    OutboundRefused,
    OutboundTimeout,
    OutboundTooLarge,
    address_refusal,
    http_target,
    is_http_url,
    multiaddr_to_http,
    node_multiaddr,
    url_to_multiaddr,
)


# --- address rules ---------------------------------------------------------------------------------
@pytest.mark.parametrize("addr", [
    "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254",
    "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.1.1.1", "255.255.255.255",
    "240.0.0.1", "198.18.0.1", "192.0.2.5", "198.51.100.7", "203.0.113.9", "192.0.0.8",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "64:ff9b::7f00:1", "64:ff9b::a00:1",
    "2002:7f00:1::1", "2002:a00:1::", "2001::1", "2001:0:4136:e378::1", "::127.0.0.1", "100::1",
])
def test_refused_addresses(addr):
    assert address_refusal(addr) is not None


@pytest.mark.parametrize("addr", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "100.63.255.255", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111",
    "2a00:1450:4001::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
])
def test_global_addresses_allowed(addr):
    assert address_refusal(addr) is None


def test_allow_private_lifts_all_but_unspecified_and_multicast():
    for addr in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1"):
        assert address_refusal(addr, allow_private=True) is None, addr
    for addr in ("0.0.0.0", "::", "224.0.0.1", "ff02::1", "::ffff:0.0.0.0"):
        assert address_refusal(addr, allow_private=True) is not None, addr


def test_refusal_reasons_are_readable():
    assert address_refusal("127.0.0.1") == "loopback address"
    assert address_refusal("100.64.1.1") == "shared (CGNAT) address"
    assert address_refusal("169.254.169.254") == "link-local address"
    assert "embedded in an IPv6 address" in address_refusal("::ffff:192.168.0.1")


@pytest.mark.parametrize("url, allow_http, why", [
    ("ftp://example.org/x", True, "only http(s)"),
    ("file:///etc/passwd", True, "only http(s)"),
    ("http://example.org/", False, "https only"),
    ("https://user:pw@example.org/", False, "credentials"),
    ("https://127.0.0.1/", False, "loopback"),
    ("https://[::1]:8443/", False, "loopback"),
    ("https://[::ffff:7f00:1]/", False, "loopback address embedded"),
    ("https://169.254.169.254/latest/meta-data", False, "link-local"),
    ("https://2130706433/", False, "non-canonical numeric host"),
    ("https://0x7f.1/", False, "non-canonical numeric host"),
    ("https://127.1/", False, "non-canonical numeric host"),
    ("https:///nohost", False, "no host"),
])
def test_check_url_refuses(url, allow_http, why):
    client = GuardedClient(allow_http=allow_http)
    with pytest.raises(OutboundRefused) as exc:
        client.check_url(url)
    assert why in str(exc.value)


def test_check_url_accepts_public_targets():
    client = GuardedClient()
    for url in ("https://example.org/ipfs/x", "https://93.184.216.34/", "https://[2606:4700:4700::1111]/"):
        assert str(client.check_url(url)).startswith("https://")
    assert str(GuardedClient(allow_http=True).check_url("http://example.org")) == "http://example.org"


def test_from_settings():
    c = GuardedClient.from_settings({"allow_http": True, "allow_private": False, "timeout": 7,
                                     "max_response_bytes": 1234})
    assert (c.allow_http, c.allow_private, c.timeout, c.max_response_bytes) == (True, False, 7.0, 1234)


# --- against a loopback server ---------------------------------------------------------------------
@pytest.fixture
async def origin(aiohttp_server):
    """A small loopback HTTP server that counts what it is asked."""
    hits: list[str] = []

    async def ok(request):
        hits.append(request.path)
        return web.Response(body=b"hello")

    async def big(request):
        hits.append(request.path)
        return web.Response(body=b"x" * 5000)

    async def stream(request):  # no Content-Length: the cap must hold while streaming
        hits.append(request.path)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp

    async def slow(request):
        hits.append(request.path)
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    async def redirect(request):
        hits.append(request.path)
        raise web.HTTPFound(request.query["to"])

    async def loop_(request):
        hits.append(request.path)
        raise web.HTTPFound("/loop")

    app = web.Application()
    for path, h in (("/ok", ok), ("/big", big), ("/stream", stream), ("/slow", slow), ("/redirect", redirect),
                    ("/loop", loop_)):
        app.router.add_get(path, h)
    server = await aiohttp_server(app)
    server.hits = hits
    server.base = f"http://127.0.0.1:{server.port}"
    return server


@pytest.fixture
async def clients():
    made: list[GuardedClient] = []

    def make(**kw) -> GuardedClient:
        c = GuardedClient(**kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def test_loopback_server_refused_by_default(origin, clients):
    for client in (clients(), clients(allow_http=True), clients(allow_private=True)):
        with pytest.raises(OutboundRefused):
            await client.get(origin.base + "/ok")
    with pytest.raises(OutboundRefused) as exc:  # through a name: refused when resolved, before connecting
        await clients(allow_http=True).get(f"http://localhost:{origin.port}/ok")
    assert "localhost resolves to" in str(exc.value)
    assert origin.hits == []  # nothing reached the server


async def test_loopback_server_allowed_with_allow_private_and_http(origin, clients):
    client = clients(allow_http=True, allow_private=True)
    resp = await client.get(origin.base + "/ok")
    assert (resp.status, resp.body) == (200, b"hello")
    resp = await client.get(f"http://localhost:{origin.port}/ok")
    assert resp.body == b"hello"
    assert origin.hits == ["/ok", "/ok"]


async def test_size_cap(origin, clients):
    client = clients(allow_http=True, allow_private=True, max_response_bytes=4096)
    with pytest.raises(OutboundTooLarge):  # announced by Content-Length
        await client.get(origin.base + "/big")
    with pytest.raises(OutboundTooLarge):  # streamed, cut when over
        await client.get(origin.base + "/stream")
    assert (await client.get(origin.base + "/ok")).body == b"hello"
    # a request may lower the cap, never raise it
    with pytest.raises(OutboundTooLarge):
        await client.get(origin.base + "/ok", max_bytes=3)
    with pytest.raises(OutboundTooLarge):
        await client.get(origin.base + "/big", max_bytes=1 << 20)


async def test_time_limit(origin, clients):
    client = clients(allow_http=True, allow_private=True, timeout=0.3)
    started = asyncio.get_running_loop().time()
    with pytest.raises(OutboundTimeout):
        await client.get(origin.base + "/slow")
    assert asyncio.get_running_loop().time() - started < 2
    client = clients(allow_http=True, allow_private=True, timeout=30)
    with pytest.raises(OutboundTimeout):  # a request may lower the limit
        await client.get(origin.base + "/slow", timeout=0.2)


async def test_redirects_rechecked_each_hop(origin, clients):
    client = clients(allow_http=True, allow_private=True)
    resp = await client.get(f"{origin.base}/redirect?to=/ok")
    assert resp.body == b"hello" and resp.url.endswith("/ok")
    for target in ("file:///etc/passwd", f"http://0.0.0.0:{origin.port}/ok", "ftp://127.0.0.1/"):
        with pytest.raises(OutboundRefused):
            await client.get(f"{origin.base}/redirect?to={target}")
    with pytest.raises(OutboundRefused) as exc:
        await client.get(origin.base + "/loop")
    assert "redirects" in str(exc.value)
    # https only: a redirect down to plain http is refused like a first hop would be
    strict = clients(allow_private=True)
    with pytest.raises(OutboundRefused):
        strict.check_url(f"{origin.base}/ok")


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in self.answers[host]]

    async def close(self):
        pass


async def test_every_resolved_address_is_checked(origin, clients):
    fake = FakeResolver({"mixed.test": ["93.184.216.34", "127.0.0.1"], "rebind.test": ["127.0.0.1"],
                         "meta.test": ["169.254.169.254"]})
    client = clients(allow_http=True, resolver=fake)
    for name in ("mixed.test", "rebind.test", "meta.test"):
        with pytest.raises(OutboundRefused) as exc:
            await client.get(f"http://{name}:{origin.port}/ok")
        assert f"{name} resolves to" in str(exc.value)
    assert origin.hits == []
    # the same answers are fine when private targets are allowed: the connector dials what was vetted
    ok = clients(allow_http=True, allow_private=True, resolver=FakeResolver({"rebind.test": ["127.0.0.1"]}))
    assert (await ok.get(f"http://rebind.test:{origin.port}/ok")).body == b"hello"


async def test_environment_proxy_ignored(origin, clients, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:1")
    client = clients(allow_http=True, allow_private=True)
    assert (await client.get(origin.base + "/ok")).body == b"hello"


async def test_unreachable_is_an_outbound_error(clients):
    from tests.support.kubo import free_port

    client = clients(allow_http=True, allow_private=True)
    with pytest.raises(OutboundError) as exc:
        await client.get(f"http://127.0.0.1:{free_port()}/")
    assert not isinstance(exc.value, OutboundRefused)


# --- multiaddrs <-> URLs ----------------------------------------------------------------------------
@pytest.mark.parametrize("addr, url, sni", [
    ("/ip4/127.0.0.1/tcp/8080/http", "http://127.0.0.1:8080", None),
    ("/ip4/1.2.3.4/tcp/80/http", "http://1.2.3.4", None),
    ("/ip6/::1/tcp/8080/http", "http://[::1]:8080", None),
    ("/ip6/2001:db8::7/tcp/443/https", "https://[2001:db8::7]", None),
    ("/dns4/gw.example.org/tcp/443/https", "https://gw.example.org", None),
    ("/dns/gw.example.org/tcp/8443/https", "https://gw.example.org:8443", None),
    ("/dns6/GW.example.org/tcp/80/http", "http://gw.example.org", None),
    ("/dns4/gw.example.org/tcp/443/tls/http", "https://gw.example.org", None),
    ("/ip4/1.2.3.4/tcp/443/tls/sni/gw.example.org/http", "https://1.2.3.4", "gw.example.org"),
    ("/dns4/gw.example.org/tcp/443/tls/http/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
     "https://gw.example.org", None),
    ("/dns/gw.example.org/tcp/443/https/http-path/prefix%2Fipfs-gw", "https://gw.example.org/prefix/ipfs-gw", None),
    ("/dns/gw.example.org/https", "https://gw.example.org", None),
])
def test_multiaddr_to_http(addr, url, sni):
    assert multiaddr_to_http(addr) == HttpTarget(url, sni)
    assert http_target(addr) == HttpTarget(url, sni)


@pytest.mark.parametrize("addr", [
    "/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
    "/ip4/1.2.3.4/udp/4001/quic-v1", "/dns4/x.org/tcp/443/wss", "/ip4/999.1.1.1/tcp/80/http", "/ip4/1.2.3.4/tcp/x/http",
    "/ip4/1.2.3.4/tcp/70000/http", "/ip6/nothex/tcp/80/http", "/unix/tmp/http", "/ip4/1.2.3.4/tcp/80/http/extra",
    "/dns4/a@b/tcp/80/http", "/ip4/1.2.3.4/tcp/443/tls/https", "", "http://x.org",
])
def test_not_http_multiaddrs(addr):
    assert multiaddr_to_http(addr) is None


def test_http_targets_from_urls():
    assert http_target("http://127.0.0.1:8080") == HttpTarget("http://127.0.0.1:8080")
    assert http_target("https://gw.example.org/") == HttpTarget("https://gw.example.org")
    assert http_target("https://gw.example.org/ipfs/") == HttpTarget("https://gw.example.org")
    assert http_target("HTTPS://gw.example.org/sub") == HttpTarget("https://gw.example.org/sub")
    for bad in ("ftp://x.org", "http://", "not a url", "https://x.org:99999/", "/ip4/1.2.3.4/tcp/1"):
        assert http_target(bad) is None, bad
    assert is_http_url("https://x.org") and not is_http_url("https://x .org")


@pytest.mark.parametrize("url, addr", [
    ("http://127.0.0.1:8787", "/ip4/127.0.0.1/tcp/8787/http"),
    ("http://127.0.0.1:8787/", "/ip4/127.0.0.1/tcp/8787/http"),
    ("https://node.example.org", "/dns4/node.example.org/tcp/443/https"),
    ("https://node.example.org:8443", "/dns4/node.example.org/tcp/8443/https"),
    ("http://node.example.org", "/dns4/node.example.org/tcp/80/http"),
    ("http://[::1]:8787", "/ip6/::1/tcp/8787/http"),
    ("https://[2001:db8::1]", "/ip6/2001:db8::1/tcp/443/https"),
    ("https://node.example.org/hearth", "/dns4/node.example.org/tcp/443/https/http-path/hearth"),
])
def test_url_to_multiaddr_and_back(url, addr):
    assert url_to_multiaddr(url) == addr
    back = multiaddr_to_http(addr)
    assert back is not None and back.url == http_target(url).url


def test_node_multiaddr_defaults():
    assert node_multiaddr("", "127.0.0.1", 8787) == "/ip4/127.0.0.1/tcp/8787/http"
    assert node_multiaddr("", "0.0.0.0", 9000) == "/ip4/127.0.0.1/tcp/9000/http"
    assert node_multiaddr("", "::", 9000) == "/ip6/::1/tcp/9000/http"
    assert node_multiaddr("", "localhost", 80) == "/dns4/localhost/tcp/80/http"
    assert node_multiaddr("https://node.example.org", "127.0.0.1", 8787) == "/dns4/node.example.org/tcp/443/https"
    with pytest.raises(ValueError):
        url_to_multiaddr("ftp://node.example.org")


async def test_post_and_its_redirects(aiohttp_server, clients):
    """POST under the same policy: 307/308 repeat the POST with its body, 301/302/303 become a
    GET without body (as browsers do); every hop checked again."""
    seen: list[tuple[str, str, bytes]] = []

    async def echo(request):
        body = await request.read()
        seen.append((request.method, request.path, body))
        return web.json_response({"method": request.method, "body": body.decode(),
                                  "type": request.headers.get("Content-Type", "")})

    async def moved(request):
        await request.read()
        raise {"307": web.HTTPTemporaryRedirect, "308": web.HTTPPermanentRedirect,
               "303": web.HTTPSeeOther, "302": web.HTTPFound}[request.match_info["code"]](request.query["to"])

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/moved/{code}", moved)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    client = clients(allow_http=True, allow_private=True)
    resp = await client.post(base + "/echo", b'{"a": 1}')
    assert resp.status == 200
    assert json.loads(resp.body) == {"method": "POST", "body": '{"a": 1}', "type": "application/json"}
    for code in ("307", "308"):
        doc = json.loads((await client.post(f"{base}/moved/{code}?to=/echo", b"x")).body)
        assert (doc["method"], doc["body"]) == ("POST", "x")
    for code in ("302", "303"):
        doc = json.loads((await client.post(f"{base}/moved/{code}?to=/echo", b"x")).body)
        assert (doc["method"], doc["body"], doc["type"]) == ("GET", "", "")
    with pytest.raises(OutboundRefused):  # a redirect to a refused target, from a POST too
        await client.post(f"{base}/moved/307?to=http://0.0.0.0:{server.port}/echo", b"x")
    with pytest.raises(OutboundRefused):  # the first hop is checked like a GET's
        await clients(allow_http=True).post(base + "/echo", b"x")
    with pytest.raises(OutboundTooLarge):
        await client.post(base + "/echo", b"y" * 100, max_bytes=10)


async def test_connected_peer_checked_again(origin, clients, monkeypatch):
    """Belt and braces: were the vetting resolver bypassed, the address the socket is actually
    connected to is still checked before the response is used."""
    import outbound.client as oc

    async def unvetted(self, host, port=0, family=socket.AF_INET):
        return await self._inner.resolve(host, port, family)

    monkeypatch.setattr(oc._VettingResolver, "resolve", unvetted)
    client = clients(allow_http=True, resolver=FakeResolver({"rebind.test": ["127.0.0.1"]}))
    with pytest.raises(OutboundRefused) as exc:
        await client.get(f"http://rebind.test:{origin.port}/ok")
    assert "connected to 127.0.0.1, a loopback address" in str(exc.value)
    assert origin.hits == []  # refused before a byte was sent
