"""DNSLink (https://dnslink.dev, specs.ipfs.tech/http-gateways/dnslink-gateway/):
a DNS name points to content through a TXT record at `_dnslink.{name}`:

    _dnslink.example.org.  60  IN  TXT  "dnslink=/ipfs/bafy.../optional/path"

What this name system does, one hop at a time (the Resolver follows `/ipns/`
values, DNSLink to DNSLink or to IPNS, and joins the paths):

* `handles(name)`: a DNS name with at least one dot (a libp2p key or CID never has
  one), letters/digits/hyphens/underscores in labels of 1..63, 253 at most;
  a trailing dot and upper case are accepted (`Example.ORG.` is `example.org`),
  non-ASCII names go through IDNA.
* `resolve(name)`: `[dns] static` first (air-gapped nodes: no DNS at all), then
  the cache, then a TXT query for `_dnslink.{name}` only: the spec says records
  MUST be on the `_dnslink` subdomain, and Kubo 0.42 (boxo's DNS resolver) no
  longer looks at the bare name either. CNAME chains are followed (in the
  answer, as a recursive resolver sends them).
* Values: TXT strings starting with `dnslink=` whose rest is `/ipfs/{cid}[/path]`
  (a valid CID) or `/ipns/{name}[/path]`; every other value (other namespaces,
  bad CIDs, `.`/`..` segments, not UTF-8) is ignored, as the spec says ("never
  error on invalid record"). Several valid values: sorted lexicographically and
  the first taken (the spec's suggestion for deterministic results; Kubo answers
  an error instead).
* TTL: the smallest TTL of the answer's records (CNAMEs included), bounded by
  `[dns] min_ttl` / `max_ttl`; the answer is cached that long (per process) and
  the gateway's Cache-Control says the time left. No record (NXDOMAIN, no TXT,
  no valid value): NameNotFound, cached `negative_ttl` (or less, if the zone's
  SOA says less). DNS servers failing (timeout, refused, SERVFAIL, garbage, DoH
  errors): NameUnavailable (the gateway answers 502 + Retry-After; 504 when no
  answer came within `[dns] timeout`), not cached.
  Concurrent lookups of one name share one query.

Which DNS server answers: `[dns] resolvers` maps a domain suffix to a server, as
Kubo's `DNS.Resolvers` (`"eth."`, `"example.org."`, `"."` for everything else;
the longest matching suffix wins). A server is `udp://host[:port]` (falls back to
TCP when the answer is truncated), `tcp://host[:port]`, `https://...` (DNS over
HTTPS, RFC 8484 GET, through the node's guarded outbound client and its
`[outbound]` policy; `http://` only with `allow_http`), or `system` (the
servers of /etc/resolv.conf, the default for names no suffix covers).
"""
from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import urlsplit

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from storage.cid import CID, InvalidCID

from .resolver import InvalidName, NameNotFound, NameUnavailable, Resolution, split_value

log = logging.getLogger("hearth.dnslink")


class DnsTimeout(NameUnavailable):
    """No DNS answer within `[dns] timeout`: the gateway's 504 (other failures: 502)."""

    status = 504

PREFIX = "dnslink="
MAX_ENTRIES = 4096  # cached names per process (least recently used go first)
MAX_DOH_RESPONSE = 65535


# --- names ----------------------------------------------------------------------------

def normalize(name: str) -> str | None:
    """The name in the form it is looked up and cached under (lower case, no trailing
    dot, IDNA for non-ASCII), or None if it is not a DNS name with at least one dot."""
    if not name or len(name) > 260:
        return None
    name = name[:-1] if name.endswith(".") else name
    if not name.isascii():
        try:
            name = dns.name.from_unicode(name).to_text(omit_final_dot=True)
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return None
    name = name.lower()
    if "." not in name or not _labels_ok(name):
        return None
    return name


def _labels_ok(name: str) -> bool:
    if len(name) > 253:
        return False
    for label in name.split("."):
        if not 0 < len(label) <= 63 or label.startswith("-") or label.endswith("-"):
            return False
        if not all(c.isascii() and (c.isalnum() or c in "-_") for c in label):
            return False
    return True


def parse_value(txt: str) -> str | None:
    """The content path of one TXT string if it is a DNSLink value this node can
    follow (`dnslink=/ipfs/{cid}[/...]` or `dnslink=/ipns/{name}[/...]`), else None."""
    if not txt.startswith(PREFIX):
        return None
    value = txt[len(PREFIX):]
    try:
        namespace, root, _segments = split_value(value)
        if namespace == "ipfs":
            CID.parse(root)
    except (InvalidName, InvalidCID):
        return None
    return value


# --- config values ([dns] resolvers, [dns] static) -------------------------------------

def _as_mapping(value: Any, what: str) -> dict[str, str]:
    if isinstance(value, str):  # from the environment: a JSON object
        text = value.strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError(f"must be a table of {what} (from the environment: a JSON object), got {text[:100]!r}") \
                from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError(f"must be a table of {what} (strings), got {value!r:.200}")
    return dict(value)


def parse_server(url: str) -> tuple[str, str, int] | None:
    """("udp"|"tcp", host, port) for a plain DNS server URL, None for `system`;
    ValueError for anything else but http(s) (DoH, checked by the caller)."""
    if url in ("", "system"):
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("udp", "tcp"):
        raise ValueError(f"{url!r}: a DNS server is udp://host[:port], tcp://host[:port], https://... (DoH) "
                         "or system")
    if parts.path not in ("", "/") or parts.query or parts.username or not parts.hostname:
        raise ValueError(f"{url!r}: expected {scheme}://host[:port]")
    try:
        port = parts.port or 53
        ipaddress.ip_address(parts.hostname)
    except ValueError as exc:
        raise ValueError(f"{url!r}: the host must be an IP address ({exc})") from None
    return scheme, parts.hostname, port


def config_resolvers(value: Any) -> dict[str, str]:
    """Validate `[dns] resolvers`: {"suffix." or ".": server URL}."""
    table = _as_mapping(value, '"domain suffix" = "server URL"')
    out = {}
    for suffix, url in table.items():
        key = suffix.strip().lower()
        if key != ".":
            if not key.endswith(".") or not _labels_ok(key[:-1]):
                raise ValueError(f"{suffix!r} is not a domain suffix written as an FQDN (e.g. \"eth.\", "
                                 "\"example.org.\", or \".\" for every name)")
        url = url.strip()
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("http", "https"):
            if not urlsplit(url).hostname:
                raise ValueError(f"{suffix!r}: {url!r} is not a DoH URL")
        else:
            parse_server(url)
        out[key] = url
    return out


def config_static(value: Any) -> dict[str, str]:
    """Validate `[dns] static`: {"name": "/ipfs/..." or "/ipns/..."} (or "dnslink=...")."""
    table = _as_mapping(value, '"name" = "/ipfs/..."')
    out = {}
    for name, target in table.items():
        key = normalize(name)
        if key is None:
            raise ValueError(f"{name!r} is not a DNS name with at least one dot")
        target = target.strip()
        path = parse_value(target if target.startswith(PREFIX) else PREFIX + target)
        if path is None:
            raise ValueError(f"{name!r} = {target!r}: the value must be /ipfs/{{cid}}[/path] or /ipns/{{name}}[/path]")
        out[key] = path
    return out


# --- DNS servers ------------------------------------------------------------------------

class Upstream:
    """One way to send a DNS query and get the response message."""

    label = "?"

    async def query(self, q: dns.message.Message, timeout: float) -> dns.message.Message:
        raise NotImplementedError


class PlainUpstream(Upstream):
    def __init__(self, proto: str, host: str, port: int):
        self.proto, self.host, self.port = proto, host, port
        self.label = f"{proto}://{host}:{port}" if ":" not in host else f"{proto}://[{host}]:{port}"

    async def query(self, q, timeout):
        if self.proto == "tcp":
            return await dns.asyncquery.tcp(q, self.host, timeout=timeout, port=self.port)
        response, _used_tcp = await dns.asyncquery.udp_with_fallback(q, self.host, timeout=timeout, port=self.port)
        return response


class SystemUpstream(Upstream):
    """The name servers of /etc/resolv.conf, tried in turn."""

    label = "system"

    def __init__(self):
        self._servers: list[PlainUpstream] | None = None

    def servers(self) -> list[PlainUpstream]:
        if self._servers is None:
            try:
                conf = dns.resolver.Resolver(configure=True)
                addresses = [str(ns) for ns in conf.nameservers]
            except dns.exception.DNSException as exc:
                raise NameUnavailable(f"no system DNS configuration: {exc}") from None
            self._servers = [PlainUpstream("udp", a, 53) for a in addresses if _is_ip(a)]
        if not self._servers:
            raise NameUnavailable("no DNS server in the system configuration")
        return self._servers

    async def query(self, q, timeout):
        servers = self.servers()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for server in servers:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = await server.query(q, left)
            except (dns.exception.DNSException, OSError) as exc:
                last = exc
                continue
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            last = NameUnavailable(f"{server.label} answered {dns.rcode.to_text(response.rcode())}")
        if isinstance(last, NameUnavailable):
            raise last
        raise dns.exception.Timeout() if last is None else last


class DohUpstream(Upstream):
    """DNS over HTTPS (RFC 8484, GET with ?dns=), through the guarded outbound client."""

    def __init__(self, url: str, client):
        self.url, self.client = url, client
        self.label = url

    async def query(self, q, timeout):
        from outbound import OutboundError

        q.id = 0  # RFC 8484 4.1: cache friendly
        param = base64.urlsafe_b64encode(q.to_wire()).rstrip(b"=").decode()
        url = self.url + ("&" if "?" in self.url else "?") + "dns=" + param
        try:
            resp = await self.client.get(url, headers={"Accept": "application/dns-message"},
                                         max_bytes=MAX_DOH_RESPONSE, timeout=timeout)
        except OutboundError as exc:
            raise NameUnavailable(f"DoH server {self.url}: {exc}") from None
        if resp.status != 200:
            raise NameUnavailable(f"DoH server {self.url} answered HTTP {resp.status}")
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/dns-message":
            raise NameUnavailable(f"DoH server {self.url} answered {ctype or 'no Content-Type'}, "
                                  "not application/dns-message")
        response = dns.message.from_wire(resp.body)
        if not q.is_response(response):
            raise NameUnavailable(f"DoH server {self.url} answered another question")
        return response


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


# --- the name system ----------------------------------------------------------------------

@dataclass
class _Entry:
    expires: float
    value: str | None  # None: no DNSLink (negative entry)
    message: str = ""
    ttl: float = 0.0  # as stored


class DNSLink:
    name = "dnslink"
    caches_answers = True  # for the (bounded) TTL: the gateway may keep responses that long

    def __init__(self, resolvers: Mapping[str, str] | None = None, static: Mapping[str, str] | None = None, *,
                 min_ttl: float = 10, max_ttl: float = 3600, negative_ttl: float = 10, timeout: float = 5,
                 client=None, max_entries: int = MAX_ENTRIES):
        self.static = config_static(dict(static or {}))
        self.min_ttl, self.max_ttl = float(min_ttl), float(max(max_ttl, min_ttl))
        self.negative_ttl = float(negative_ttl)
        self.timeout = float(timeout)
        self.max_entries = max_entries
        self._client = client
        self._own_client = False
        self.upstreams: dict[str, Upstream] = {}
        system = SystemUpstream()
        for suffix, url in config_resolvers(dict(resolvers or {})).items():
            scheme = urlsplit(url).scheme.lower()
            if scheme in ("http", "https"):
                self.upstreams[suffix] = DohUpstream(url, self._outbound())
            else:
                server = parse_server(url)
                self.upstreams[suffix] = system if server is None else PlainUpstream(*server)
        self.upstreams.setdefault(".", system)
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future] = {}
        self.queries = 0  # DNS queries sent (tests, metrics)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], outbound: Mapping[str, Any] | None = None) -> "DNSLink":
        from outbound import GuardedClient

        client = GuardedClient.from_settings(outbound or {}) if _uses_doh(section.get("resolvers") or {}) else None
        system = cls(section.get("resolvers") or {}, section.get("static") or {}, min_ttl=section["min_ttl"],
                     max_ttl=section["max_ttl"], negative_ttl=section["negative_ttl"], timeout=section["timeout"],
                     client=client)
        system._own_client = client is not None
        return system

    def _outbound(self):
        if self._client is None:
            from outbound import GuardedClient

            self._client = GuardedClient()
            self._own_client = True
        return self._client

    async def close(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.close()

    # --- NameSystem ---------------------------------------------------------------------
    def handles(self, name: str) -> bool:
        return normalize(name) is not None

    async def resolve(self, name: str) -> Resolution:
        key = normalize(name)
        if key is None:
            raise InvalidName(f"{name[:200]!r} is not a DNS name")
        if key in self.static:
            return Resolution(self.static[key], self.max_ttl, self.name)
        now = time.monotonic()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            self._cache.move_to_end(key)
            return self._answer(key, entry, float(int(entry.expires - now)))  # cached: the whole seconds left
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._lookup(key))
            self._inflight[key] = pending
            pending.add_done_callback(lambda _f, k=key: self._inflight.pop(k, None))
        entry = await asyncio.shield(pending)
        return self._answer(key, entry, entry.ttl)  # fresh: the whole TTL

    def _answer(self, key: str, entry: _Entry, ttl: float) -> Resolution:
        if entry.value is None:
            raise NameNotFound(entry.message)
        return Resolution(entry.value, max(0.0, ttl), self.name)

    # --- lookups --------------------------------------------------------------------------
    def upstream_for(self, qname: str) -> Upstream:
        """The server for a name: the longest `[dns] resolvers` suffix it ends with."""
        fqdn = qname.lower().rstrip(".") + "."
        best, best_len = self.upstreams["."], 0
        for suffix, upstream in self.upstreams.items():
            if suffix == ".":
                continue
            if (fqdn == suffix or fqdn.endswith("." + suffix)) and len(suffix) > best_len:
                best, best_len = upstream, len(suffix)
        return best

    async def _lookup(self, key: str) -> _Entry:
        qname = f"_dnslink.{key}"
        values, ttl = await self.lookup_txt(qname)
        links = sorted({v for v in (parse_value(t) for t in values) if v is not None})
        now = time.monotonic()
        if not links:
            what = "no TXT record" if not values else "no valid dnslink=/ipfs/... or dnslink=/ipns/... value"
            message = f"{key} has no DNSLink: {what} at {qname}"
            negative = min(self.negative_ttl, ttl if ttl is not None else self.negative_ttl)
            entry = _Entry(now + negative, None, message, negative)
        else:
            if len(links) > 1:
                log.debug("%s has %d DNSLink values, using the first in lexicographic order: %s", qname, len(links),
                          links[0])
            bounded = min(self.max_ttl, max(self.min_ttl, ttl if ttl is not None else self.min_ttl))
            entry = _Entry(now + bounded, links[0], ttl=bounded)
        self._store(key, entry)
        return entry

    def _store(self, key: str, entry: _Entry) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def lookup_txt(self, qname: str) -> tuple[list[str], float | None]:
        """The TXT strings at qname (each record's strings joined) and the answer's TTL
        (the negative TTL when there is none, None if unknown). NameUnavailable if the
        server fails."""
        upstream = self.upstream_for(qname)
        q = dns.message.make_query(qname, dns.rdatatype.TXT)
        self.queries += 1
        try:
            response = await upstream.query(q, self.timeout)
        except NameUnavailable:
            raise
        except dns.exception.Timeout:
            raise DnsTimeout(f"DNS server {upstream.label} did not answer for {qname} within "
                             f"{self.timeout:g} s") from None
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise NameUnavailable(f"DNS server {upstream.label} failed for {qname}: "
                                  f"{exc.__class__.__name__}: {exc}") from None
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise NameUnavailable(f"DNS server {upstream.label} answered {dns.rcode.to_text(rcode)} for {qname}")
        try:
            chain = response.resolve_chaining()
        except dns.exception.DNSException as exc:
            raise NameUnavailable(f"DNS server {upstream.label} sent an unusable answer for {qname}: {exc}") from None
        if chain.answer is None:
            has_soa = bool(response.authority)
            return [], float(chain.minimum_ttl) if has_soa else None
        values = []
        for rdata in chain.answer:
            try:
                values.append(b"".join(rdata.strings).decode("utf-8"))
            except UnicodeDecodeError:
                continue
        return values, float(chain.minimum_ttl)


def _uses_doh(resolvers: Mapping[str, str]) -> bool:
    return any(urlsplit(str(url)).scheme.lower() in ("http", "https") for url in dict(resolvers).values())
