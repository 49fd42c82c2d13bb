"""HTTP multiaddrs <-> URLs.

The forms accepted are the ones boxo (`bitswap/network.ExtractHTTPAddress`,
used by Kubo's HTTP retrieval) and @multiformats/multiaddr-to-uri read:

    /ip4/A/tcp/P/http                  http://A:P
    /ip6/A/tcp/P/http                  http://[A]:P
    /dns|dns4|dns6/H/tcp/P/http        http://H:P
    /.../tcp/P/https                   https://...:P   (443 left implicit)
    /.../tcp/P/tls/http                https://...:P
    /.../tcp/P/tls/sni/S/http          https://...:P, TLS server name (and Host) S

optionally followed by `/http-path/<url-escaped path>` (a path prefix) and a
trailing `/p2p/<peer id>` (ignored). Anything else (libp2p transports such as
`/ip4/A/tcp/P/p2p/ID`, `/quic-v1`, `/ws`...) is not an HTTP address.

The other way, a node's own URL becomes `/ip4|ip6/A/tcp/P/http[s]` or
`/dns4/H/tcp/P/http[s]` (the `/https` form is what delegated routing and IPNI
announce for HTTP providers, and every reader above understands it).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

MAX_LEN = 1024


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """A base URL (no trailing slash) and, for `/tls/sni/NAME`, the TLS server name."""

    url: str
    sni: str | None = None

    def __str__(self) -> str:
        return self.url if self.sni is None else f"{self.url} (sni {self.sni})"


def is_http_url(text: str) -> bool:
    """A syntactically usable http(s) URL with a host (policy is checked elsewhere)."""
    if not isinstance(text, str) or len(text) > MAX_LEN or any(c.isspace() for c in text):
        return False
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises on a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _host_for_url(proto: str, value: str) -> str | None:
    if proto == "ip4":
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            return None
    if proto == "ip6":
        try:
            return f"[{ipaddress.IPv6Address(value)}]"
        except ValueError:
            return None
    if not value or any(c in value for c in "/@:[]?#%") or any(c.isspace() for c in value):
        return None
    return value.lower()


def multiaddr_to_http(addr: str) -> HttpTarget | None:
    """The HTTP(S) endpoint a multiaddr names, or None if it is not an HTTP multiaddr."""
    if not isinstance(addr, str) or not addr.startswith("/") or len(addr) > MAX_LEN:
        return None
    parts = addr[1:].split("/")
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 3:
        return None
    proto, value = parts[0], parts[1]
    if proto not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        return None
    host = _host_for_url(proto, value)
    if host is None:
        return None
    i = 2
    port = None
    if parts[i:i + 1] == ["tcp"]:
        if i + 1 >= len(parts) or not parts[i + 1].isdigit() or not 0 < int(parts[i + 1]) < 65536:
            return None
        port = int(parts[i + 1])
        i += 2
    tls, sni, scheme = False, None, None
    if parts[i:i + 1] == ["tls"]:
        tls = True
        i += 1
        if parts[i:i + 1] == ["sni"]:
            if i + 1 >= len(parts):
                return None
            sni = _host_for_url("dns", parts[i + 1])
            if sni is None:
                return None
            i += 2
    if parts[i:i + 1] == ["http"]:
        scheme = "https" if tls else "http"
    elif parts[i:i + 1] == ["https"] and not tls:
        scheme = "https"
    else:
        return None
    i += 1
    path = ""
    if parts[i:i + 1] == ["http-path"]:
        if i + 1 >= len(parts):
            return None
        path = "/" + unquote(parts[i + 1]).strip("/")
        i += 2
    if parts[i:i + 1] == ["p2p"] and len(parts) == i + 2:
        i += 2
    if i != len(parts):
        return None
    if port is None:
        port = 443 if scheme == "https" else 80
    default = 443 if scheme == "https" else 80
    netloc = host if port == default else f"{host}:{port}"
    return HttpTarget(f"{scheme}://{netloc}{path.rstrip('/')}", sni)


def http_target(origin: str) -> HttpTarget | None:
    """A PSA origin (an http(s) URL or an HTTP multiaddr) as an HTTP endpoint, else None."""
    if not isinstance(origin, str):
        return None
    if origin.startswith("/"):
        return multiaddr_to_http(origin)
    if not is_http_url(origin):
        return None
    parts = urlsplit(origin)
    base = f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}"
    if parts.path.rstrip("/").endswith("/ipfs"):  # someone pasted ".../ipfs" as the gateway
        base = base[: -len("/ipfs")]
    return HttpTarget(base)


def url_to_multiaddr(url: str) -> str:
    """A node's public URL as a multiaddr: http://127.0.0.1:8787 -> /ip4/127.0.0.1/tcp/8787/http,
    https://node.example.org -> /dns4/node.example.org/tcp/443/https. ValueError if it is not
    an http(s) URL with a host."""
    if not is_http_url(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is None:
        head = f"/dns4/{host.rstrip('.')}"
    elif ip.version == 4:
        head = f"/ip4/{ip}"
    else:
        head = f"/ip6/{ip}"
    out = f"{head}/tcp/{port}/{scheme}"
    path = parts.path.strip("/")
    if path:
        out += "/http-path/" + quote(path, safe="")
    return out


def node_multiaddr(public_url: str, host: str, port: int) -> str:
    """This node's own HTTP address as a multiaddr, from `[server] public_url`, or when
    that is empty from the listen address (`http://{host}:{port}`; a wildcard listen
    address stands for loopback, the only address known to reach it)."""
    if public_url:
        return url_to_multiaddr(public_url)
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return url_to_multiaddr(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
