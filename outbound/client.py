"""GuardedClient: the one HTTP client for URLs that users can influence.

PSA origins, `[storage] fetch_gateways` and, later, CCIP-read gateways and
credential status lists are URLs that someone other than the operator chose.
Fetched naively they turn the node into a proxy into its own network (SSRF):
`http://127.0.0.1:5001/api/v0/...` (Kubo's RPC), `http://169.254.169.254/`
(cloud metadata), the LAN behind the host. Every such request goes through
this client, which enforces, by default:

* https only (`[outbound] allow_http` lifts it);
* no loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10),
  benchmark, documentation, reserved, multicast or unspecified targets, IPv6
  forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4) judged by that
  address, Teredo refused (`[outbound] allow_private` lifts all but
  multicast/unspecified, for tests and private networks);
* a name is resolved once per connection and EVERY address it resolves to is
  checked; a name with any refused address is refused;
* redirects are followed by hand, at most MAX_REDIRECTS, each hop checked again;
* one deadline for the whole exchange, redirects and body included
  (`[outbound] timeout`), and a cap on the body (`[outbound] max_response_bytes`,
  or a smaller one per request), enforced while streaming: the connection is
  dropped as soon as the cap is passed, never buffered first.

Why hand-written on top of aiohttp rather than aiohttp alone: aiohttp has no
notion of a destination policy. It connects to whatever address a name resolves
to; checking the host name before the request is useless against DNS rebinding
(aiohttp resolves again when it connects, and the second answer may be
127.0.0.1); it follows redirects to any host and scheme; its `read()` buffers a
body of any size; and it honours HTTP(S)_PROXY from the environment when asked
to. So the check lives where the address is chosen: a resolver wrapped around
aiohttp's own refuses the name unless every address passes, and the connector
can only dial the addresses that resolver returned (no second lookup, no
rebinding window). IP literals never reach a resolver in aiohttp, so they are
checked on the URL before each hop. Proxies from the environment are ignored
(`trust_env=False`): through a proxy, the vetted address would be the proxy's.
Bodies are asked for uncompressed (`Accept-Encoding: identity`, no automatic
decompression), so the cap counts the bytes that cross the wire.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass
from typing import AsyncIterator, Mapping

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

log = logging.getLogger("hearth.outbound")

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RESPONSE = 10 * 1024 * 1024
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 10.0
USER_AGENT = "hearth (+https://github.com/hearth)"
_REDIRECTS = (301, 302, 303, 307, 308)


class OutboundError(Exception):
    """An outbound request failed: unreachable, TLS, protocol error..."""

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.url = url


class OutboundRefused(OutboundError):
    """The outbound policy refused the target (scheme, address, redirect)."""


class OutboundTooLarge(OutboundError):
    """The response body went over the size cap (the connection was dropped)."""


class OutboundTimeout(OutboundError):
    """The exchange did not finish within its time limit."""


# --- the address policy -------------------------------------------------------------------------
def _nets(*specs: tuple[str, str]) -> list[tuple[ipaddress._BaseNetwork, str]]:
    return [(ipaddress.ip_network(net), label) for net, label in specs]


_BLOCKED_V4 = _nets(
    ("0.0.0.0/8", "'this network' address"),
    ("10.0.0.0/8", "private address"),
    ("100.64.0.0/10", "shared (CGNAT) address"),
    ("127.0.0.0/8", "loopback address"),
    ("169.254.0.0/16", "link-local address"),
    ("172.16.0.0/12", "private address"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("192.168.0.0/16", "private address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("224.0.0.0/4", "multicast address"),
    ("240.0.0.0/4", "reserved address"),
)
_BLOCKED_V6 = _nets(
    ("::1/128", "loopback address"),
    ("::/96", "IPv4-compatible (deprecated) address"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001::/23", "IETF protocol assignment"),
    ("2001:db8::/32", "documentation address"),
    ("3fff::/20", "documentation address"),
    ("5f00::/16", "segment-routing address"),
    ("fc00::/7", "unique-local (private) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("ff00::/8", "multicast address"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")


def address_refusal(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address, *,
                    allow_private: bool = False) -> str | None:
    """Why the policy refuses to connect to this IP address, or None if it may.

    Unspecified and multicast addresses are always refused (they are never a
    server); allow_private lifts everything else."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)
    if ip.is_unspecified:
        return "unspecified address"
    if ip.is_multicast:
        return "multicast address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            why = address_refusal(inner, allow_private=allow_private)
            return f"{why} embedded in an IPv6 address" if why else None
        if ip in _TEREDO and not allow_private:
            return "Teredo address"
    if allow_private:
        return None
    for net, label in _BLOCKED_V4 if ip.version == 4 else _BLOCKED_V6:
        if ip in net:
            return label
    if not ip.is_global or ip.is_reserved or ip.is_private or ip.is_link_local or ip.is_loopback:
        return "non-global address"
    return None


_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")


def _ip_literal(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


class _VettingResolver(AbstractResolver):
    """aiohttp's resolver, but a name resolves only if every address it has passes
    the policy; the connector dials nothing but what is returned here."""

    def __init__(self, inner: AbstractResolver, allow_private: bool):
        self._inner, self._allow_private = inner, allow_private

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if not infos:
            raise OSError(f"{host} resolved to no address")
        for info in infos:
            why = address_refusal(info["host"], allow_private=self._allow_private)
            if why is not None:
                raise OutboundRefused(f"{host} resolves to {info['host']}, a {why}: refused "
                                      "(set [outbound] allow_private to allow it)")
        return infos

    async def close(self) -> None:
        await self._inner.close()


class _GuardedConnector(aiohttp.TCPConnector):
    """Belt and braces: once a socket is connected (before any byte is sent), the address it is
    actually connected to must pass the policy too. The vetting resolver already made the vetted
    addresses the only ones the connector can dial; this holds even if that were bypassed."""

    def __init__(self, *args, allow_private: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self._allow_private = allow_private

    async def _wrap_create_connection(self, *args, **kwargs):
        transport, proto = await super()._wrap_create_connection(*args, **kwargs)
        peer = transport.get_extra_info("peername")
        why = address_refusal(peer[0], allow_private=self._allow_private) if peer else "unknown peer"
        if why is not None:
            transport.close()
            raise OutboundRefused(f"connected to {peer[0] if peer else '?'}, a {why}: refused "
                                  "(set [outbound] allow_private to allow it)")
        return transport, proto


# --- responses ----------------------------------------------------------------------------------------
@dataclass(slots=True)
class OutboundResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


class OutboundStream:
    """A response whose body is read piecewise under the size cap and the deadline."""

    def __init__(self, resp: aiohttp.ClientResponse, url: str, max_bytes: int, deadline: float):
        self._resp = resp
        self.status = resp.status
        self.headers = resp.headers
        self.url = url
        self.max_bytes = max_bytes
        self.received = 0
        self._deadline = deadline
        declared = resp.content_length
        if declared is not None and declared > max_bytes:
            raise OutboundTooLarge(f"{url} announced {declared} bytes, over the {max_bytes}-byte limit", url)

    async def read(self, n: int = 1 << 16) -> bytes:
        """Up to n bytes of the body; b"" at its end."""
        try:
            async with asyncio.timeout_at(self._deadline):
                chunk = await self._resp.content.read(n)
        except TimeoutError:
            raise OutboundTimeout(f"{self.url} did not finish in time", self.url) from None
        except aiohttp.ClientError as exc:
            raise OutboundError(f"reading {self.url} failed: {exc.__class__.__name__}: {exc}", self.url) from None
        self.received += len(chunk)
        if self.received > self.max_bytes:
            raise OutboundTooLarge(f"{self.url} sent more than {self.max_bytes} bytes", self.url)
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read(1 << 16):
            parts.append(chunk)
        return b"".join(parts)


# --- the client ------------------------------------------------------------------------------------------
class GuardedClient:
    """allow_http: plain http:// targets too; allow_private: loopback/private/link-local
    targets too; timeout: seconds for a whole exchange; max_response_bytes: body cap.
    Per request, timeout and max_bytes can only be lowered, never raised."""

    def __init__(self, *, allow_http: bool = False, allow_private: bool = False, timeout: float = DEFAULT_TIMEOUT,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE, max_redirects: int = MAX_REDIRECTS,
                 user_agent: str = USER_AGENT, resolver: AbstractResolver | None = None):
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.timeout = float(timeout) if timeout else DEFAULT_TIMEOUT
        self.max_response_bytes = int(max_response_bytes) if max_response_bytes else DEFAULT_MAX_RESPONSE
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._inner_resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, outbound: Mapping) -> "GuardedClient":
        """From the `[outbound]` config section."""
        return cls(allow_http=bool(outbound.get("allow_http", False)),
                   allow_private=bool(outbound.get("allow_private", False)),
                   timeout=float(outbound.get("timeout", DEFAULT_TIMEOUT)),
                   max_response_bytes=int(outbound.get("max_response_bytes", DEFAULT_MAX_RESPONSE)))

    # --- policy -----------------------------------------------------------------------
    def check_url(self, url: str | URL) -> URL:
        """The URL, parsed, if the policy lets a request start there (the addresses
        a host name resolves to are checked when connecting); OutboundRefused if not."""
        try:
            u = url if isinstance(url, URL) else URL(url)
        except (ValueError, TypeError) as exc:
            raise OutboundRefused(f"invalid URL {str(url)[:200]!r}: {exc}") from None
        text = str(u)[:200]
        scheme = (u.scheme or "").lower()
        if scheme not in ("http", "https"):
            raise OutboundRefused(f"{text}: only http(s) URLs can be fetched", text)
        if scheme == "http" and not self.allow_http:
            raise OutboundRefused(f"{text}: plain http is refused, https only (set [outbound] allow_http to allow it)",
                                  text)
        if u.user is not None or u.password is not None:
            raise OutboundRefused(f"{text}: URLs with credentials are refused", text)
        host = u.raw_host
        if not host:
            raise OutboundRefused(f"{text}: no host", text)
        ip = _ip_literal(host)
        if ip is not None:
            why = address_refusal(ip, allow_private=self.allow_private)
            if why is not None:
                raise OutboundRefused(f"{text}: {ip} is a {why}: refused (set [outbound] allow_private to allow it)",
                                      text)
        elif _NUMERIC_HOST.match(host) and (host.rsplit(".", 1)[-1].isdigit() or host.lower().startswith("0x")):
            # 2130706433, 0x7f.1, 127.1: numeric forms the C library maps onto addresses
            raise OutboundRefused(f"{text}: non-canonical numeric host {host!r} refused", text)
        return u

    # --- session --------------------------------------------------------------------------
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            inner = self._inner_resolver or aiohttp.resolver.DefaultResolver()
            connector = _GuardedConnector(resolver=_VettingResolver(inner, self.allow_private),
                                          allow_private=self.allow_private,
                                          use_dns_cache=False, limit=64, limit_per_host=32,
                                          keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- requests ---------------------------------------------------------------------------
    async def get(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int | None = None,
                  timeout: float | None = None, server_hostname: str | None = None) -> OutboundResponse:
        """GET url, body read whole (under the cap). Any status is returned: the caller
        decides what a 404 means. Raises OutboundRefused/TooLarge/Timeout/Error."""
        async with self.stream(url, headers=headers, max_bytes=max_bytes, timeout=timeout,
                               server_hostname=server_hostname) as s:
            body = await s.read_all()
        return OutboundResponse(s.status, s.headers, body, s.url)

    async def post(self, url: str, body: bytes, *, content_type: str = "application/json",
                   headers: Mapping[str, str] | None = None, max_bytes: int | None = None,
                   timeout: float | None = None) -> OutboundResponse:
        """POST body to url, response body read whole, under the same policy as get().
        Redirects: 307/308 repeat the POST (same body) at the new target, 301/302/303
        turn into a GET without body (as browsers do); every hop is checked again."""
        hdrs = dict(headers or {})
        hdrs["Content-Type"] = content_type
        async with self.stream(url, headers=hdrs, max_bytes=max_bytes, timeout=timeout,
                               method="POST", body=bytes(body)) as s:
            data = await s.read_all()
        return OutboundResponse(s.status, s.headers, data, s.url)

    @contextlib.asynccontextmanager
    async def stream(self, url: str, *, headers: Mapping[str, str] | None = None, max_bytes: int | None = None,
                     timeout: float | None = None, server_hostname: str | None = None,
                     method: str = "GET", body: bytes | None = None) -> AsyncIterator[OutboundStream]:
        """GET (or `method` with `body`) url; yields an OutboundStream to read the body piecewise."""
        limit = self.max_response_bytes if max_bytes is None else min(int(max_bytes), self.max_response_bytes)
        seconds = self.timeout if timeout is None else min(float(timeout), self.timeout)
        deadline = asyncio.get_running_loop().time() + seconds
        resp, final = await self._open(url, dict(headers or {}), deadline, server_hostname, method, body)
        try:
            yield OutboundStream(resp, final, limit, deadline)
        finally:
            resp.release()

    async def _open(self, url: str, headers: dict, deadline: float, server_hostname: str | None,
                    method: str = "GET", body: bytes | None = None) -> tuple[aiohttp.ClientResponse, str]:
        session = self._get_session()
        loop = asyncio.get_running_loop()
        current = self.check_url(url)
        hops = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise OutboundTimeout(f"{current} did not answer in time", str(current))
            hop_headers = dict(headers)
            kwargs = {}
            if server_hostname and hops == 0:  # a /tls/sni/NAME multiaddr: TLS and Host name NAME
                kwargs["server_hostname"] = server_hostname
                hop_headers["Host"] = server_hostname if current.explicit_port is None else \
                    f"{server_hostname}:{current.explicit_port}"
            try:
                async with asyncio.timeout_at(deadline):
                    resp = await session.request(
                        method, current, headers=hop_headers, data=body, allow_redirects=False,
                        timeout=aiohttp.ClientTimeout(total=remaining, sock_connect=min(remaining, CONNECT_TIMEOUT)),
                        **kwargs)
            except OutboundError as exc:
                exc.url = exc.url or str(current)
                raise
            except TimeoutError:
                raise OutboundTimeout(f"{current} did not answer in time", str(current)) from None
            except aiohttp.ClientError as exc:
                raise OutboundError(f"{current}: {exc.__class__.__name__}: {exc}", str(current)) from None
            except OSError as exc:
                raise OutboundError(f"{current}: {exc}", str(current)) from None
            if resp.status not in _REDIRECTS or "Location" not in resp.headers:
                return resp, str(current)
            location = resp.headers["Location"]
            resp.release()
            hops += 1
            if hops > self.max_redirects:
                raise OutboundRefused(f"{url}: more than {self.max_redirects} redirects", url)
            try:
                target = current.join(URL(location))
            except (ValueError, TypeError):
                raise OutboundError(f"{current}: bad redirect Location {location[:200]!r}", str(current)) from None
            log.debug("outbound redirect %s -> %s", current, target)
            current = self.check_url(target)
            if method != "GET" and resp.status not in (307, 308):  # 301/302/303: the next hop is a GET
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
