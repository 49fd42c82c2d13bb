"""Origin routing: which origin a request arrived on, decided from its Host before
URL dispatch, as boxo's `NewHostnameHandler` (gateway/hostname.go, what Kubo 0.42
runs) and the subdomain and DNSLink gateway specs say.

Three kinds of Host (after `X-Forwarded-Host`, which a reverse proxy sets):

* A configured gateway domain (`[gateway.domains."example.org"]`; `localhost` is
  built in, with subdomains, as Kubo's implicit default): the node's own origin.
  The API, the Pinning Services API, operator and ops endpoints are served there
  as on any other Host. `/ipfs/...` and `/ipns/...` are served only if the domain's
  `paths` has them (else 404); with `use_subdomains`, a GET/HEAD of one redirects
  (301) to its subdomain, `{cidv1-base32}.ipfs.{domain}/{rest}?{query}` (a CIDv0
  is converted; a CID whose base32 does not fit a 63-character DNS label goes in
  base36, and one that fits neither gets a 400 that says so), `{k51...}.ipns.{domain}`
  for libp2p keys (peer IDs in base58 or as CIDs of any codec: base36 libp2p-key CID),
  and DNSLink names as they are, or inlined into one label (`en.wikipedia-on-ipfs.org`
  -> `en-wikipedia--on--ipfs-org`) when the domain has `inline_dnslink` or the
  request came over https (`X-Forwarded-Proto: https`, which also makes the
  Location https). Only the root is checked before redirecting (the spec's SHOULD:
  the path and `_redirects` are the subdomain's business), so the redirect costs no
  lookup. Other methods are not redirected (a CORS preflight cannot follow one).
* `{root}.{ipfs|ipns}.{domain}` under a configured domain: a content origin (a
  subdomain gateway). 404 if the domain has `use_subdomains` off or lacks that
  namespace in `paths`; a CID longer than a DNS label is redirected to its base36
  form (400 if even that does not fit), an `.ipns.` CID that is not a libp2p-key
  to the libp2p-key CID, as boxo does; an `.ipns.` label that is not a CID and has
  a `-` but no `.` is an inlined DNSLink name and is decoded (unless a name system
  takes the label as it is). Then the request is rewritten to
  `/{ns}/{root}{path}` and carries `request[CONTENT_ORIGIN]`.
* Any other Host that is not an IP literal, not the node's own `[server] host` or
  `public_url` host, and that a name system handles (`NAMES.system_for`; with
  `[gateway] dnslink_hosts`): tried as a DNSLink name. If it resolves, the request
  is served as `/ipns/{host}{path}` on a content origin; if not (no record, an
  invalid name, or the name system failing), it is the plain path gateway, as boxo
  does. Everything else is the plain path gateway, today's behaviour.

On a content origin every path is a path in the content, as in Kubo: the API, the
PSA, operator and ops endpoints are not reachable there (`/api/v1/content` is the
file `api/v1/content` of the root, so 404 unless the content has one), and neither is
other content (`/ipfs/{cid}` is the path `ipfs/{cid}` under the root).

Mechanism. The routing needs the path to change before aiohttp's URL dispatch, and
every middleware (metrics, CORS, errors) must still see the request. So
OriginApplication, a web.Application, overrides two private but stable methods of
aiohttp 3.x (pinned in pyproject.toml, as gateway/server.py already relies on):

* `_make_request`, where aiohttp turns a parsed message into a Request: the
  synchronous decisions (every kind of Host but DNSLink) are made here, on the
  message, so a rewritten request is born with its new URL. `request.clone()`
  would cost ~3 us per request (a second Request), about 4% of a cached 4 KiB
  response; rewriting the message costs ~0.5 us. Decisions per Host string are
  kept in a bounded dict, so a request on a known Host costs one dict lookup.
* `_handle`, the app's entry point, for DNSLink Hosts only: resolving the name is
  asynchronous, so the request is cloned to `/ipns/{host}{path}` after it resolved.

Answers the routing makes itself (redirects, 404, 400) are left on the request and
given by `origin_answers`, the innermost middleware, so metrics, CORS and the JSON
error shape apply to them as to any answer. They carry the gateway's CORS headers
(as Kubo, whose gateway adds them to every response; fetch() follows a redirect only
if it passes CORS).

The CSP sandbox: on the plain path gateway, user content shares the origin of the
API (and later the dashboard), so a response a browser would run (HTML, XHTML,
SVG, XML, JavaScript) carries `Content-Security-Policy: sandbox ...` without
`allow-same-origin`: it runs in an opaque origin, with no access to the node's
origin (`[gateway] sandbox_path_gateway = false` turns it off). Added in an
on_response_prepare hook, the one place every response passes (cached, streamed,
listings, `_redirects` pages), and never on content origins, which are isolated
by their own origin.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from aiohttp import web
from yarl import URL

from naming import InvalidName, NamingError
from storage.cid import CID, LIBP2P_KEY, InvalidCID, b58decode, decode_varint

from .config import Config
from .content_origin import CONTENT_ORIGIN, TRUSTLESS_ONLY, ContentOrigin, content_origin, public_path
from .errors import HTTPError
from .ipfs.headers import CORS
from .keys import NAMES

log = logging.getLogger("hearth.origins")

LABEL_MAX = 63  # a DNS label (RFC 1034)
NAMESPACES = ("ipfs", "ipns")
ENS_TLDS = ("eth",)  # `{name}.eth.{domain}`: the ENS name `{name}.eth` on a content origin (naming/ens.py)
MAX_HOSTS = 4096  # Host decisions kept; the dict is emptied when full (random Hosts cannot grow it)
_ROOT_LABELS = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

# what a browser renders as a document that can run script: CSP sandbox on the path gateway
EXECUTABLE_TYPES = frozenset((
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/xsl",
    "application/xslt+xml", "text/javascript", "application/javascript", "application/ecmascript",
    "text/ecmascript", "application/x-javascript", "text/jscript", "application/x-ecmascript", "text/x-javascript",
    "multipart/x-mixed-replace",
))
# no allow-same-origin: the document gets an opaque origin; scripts, forms and popups work
# (a page stays usable), but nothing of the node's origin (storage, cookies, same-origin reads)
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

_ANSWER = web.RequestKey("hearth_origin_answer", object)  # HTTPError or web.Response, given by origin_answers
_DNSLINK = web.RequestKey("hearth_dnslink_candidate", tuple)  # (name, effective host, scheme)


# --- names in DNS labels ---------------------------------------------------------------------

def inline_dnslink(fqdn: str) -> str:
    """`my.v-long.example.com` -> `my-v--long-example-com` (the subdomain gateway spec)."""
    return fqdn.replace("-", "--").replace(".", "-")


def uninline_dnslink(label: str) -> str:
    """`my-v--long-example-com` -> `my.v-long.example.com`: every `--` is a `-`, every
    other `-` a `.` (boxo's UninlineDNSLink)."""
    return ".".join(part.replace("\x00", "-") for part in label.replace("--", "\x00").split("-"))


def peer_id_cid(text: str) -> CID | None:
    """A libp2p peer ID as a CIDv1 with the libp2p-key codec: base58 multihashes
    (`12D3KooW...`, `Qm...`) and CIDs (any codec, as boxo fixes the codec on the way);
    None if `text` is neither."""
    if text.startswith(("1", "Qm")):
        try:
            mh = b58decode(text)
            _code, pos = decode_varint(mh, 0)
            length, pos = decode_varint(mh, pos)
        except InvalidCID:
            return None
        if pos + length != len(mh) or length == 0:
            return None
        return CID(1, LIBP2P_KEY, mh)
    try:
        cid = CID.parse(text)
    except InvalidCID:
        return None
    return CID(1, LIBP2P_KEY, cid.multihash)


class LabelTooLong(ValueError):
    pass


def dns_label(cid: CID, namespace: str) -> str:
    """The CID as a subdomain gateway writes it in a DNS label: base32 CIDv1 under
    `.ipfs.`, base36 libp2p-key CIDv1 under `.ipns.`; base36 when base32 is too long.
    LabelTooLong if nothing fits in 63 characters."""
    if namespace == "ipns":
        label = CID(1, LIBP2P_KEY, cid.multihash).encode_base36()
    else:
        label = cid.v1().encode()
        if len(label) > LABEL_MAX:
            label = cid.encode_base36()
    if len(label) > LABEL_MAX:
        raise LabelTooLong(label)
    return label


def too_long(what: str, label: str) -> HTTPError:
    return HTTPError(400, "dns_label_too_long",
                     f"{what} incompatible with DNS label length limit of {LABEL_MAX}: {label} ({len(label)} characters); "
                     "a subdomain gateway cannot give it an origin. Ask a path gateway for it instead: a Host that is "
                     "not a subdomain gateway domain (for example the node's IP address, 127.0.0.1:8787/ipfs/...)")


def split_host(host: str) -> tuple[str, str]:
    """("name", ":port" or "") of a Host value; IPv6 literals keep their brackets."""
    if host.startswith("["):
        end = host.find("]")
        return (host[: end + 1], host[end + 1:]) if end > 0 else (host, "")
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and name:
        return name, ":" + port
    return host, ""


def _is_ip(name: str) -> bool:
    if name.startswith("["):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# --- the routing table -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    paths: frozenset  # {"/ipfs", "/ipns"} or a part of it
    use_subdomains: bool
    inline_dnslink: bool
    deserialized: bool


@dataclass(slots=True)
class HostRoute:
    """What a Host string means, worked out once (OriginRouter.host_route)."""

    kind: str  # "plain" | "domain" | "subdomain" | "dnslink"
    trustless: bool = False
    domain: Domain | None = None
    gateway: str = ""  # domain: the Host as sent; subdomain: the gateway part after `{root}.{ns}.`
    namespace: str = ""
    root: str = ""  # subdomain: the root as in the Host; dnslink: the lower-case name
    refused: tuple | None = None  # subdomain: (status, code, message) answered to every request
    canonical: str | None = None  # subdomain: the label to redirect to (CID too long, ipns codec)
    maybe_inlined: bool = False  # subdomain: an .ipns. label that may be an inlined DNSLink name
    origins: dict | None = None  # subdomain: scheme -> its ContentOrigin, once built


class OriginRouter:
    def __init__(self, config: Config):
        gw = config["gateway"]
        self.deserialized = gw["deserialized_responses"]
        self.dnslink_hosts = gw["dnslink_hosts"]
        self.domains = {
            name: Domain(name, frozenset(spec["paths"]), spec["use_subdomains"], spec["inline_dnslink"],
                         self.deserialized if spec["deserialized_responses"] is None else spec["deserialized_responses"])
            for name, spec in gw["domains"].items()
        }
        server = config["server"]
        own = {str(server["host"]).lower().strip("[]")}
        if server["public_url"]:
            own.add((urlsplit(server["public_url"]).hostname or "").lower())
        self.own_hosts = frozenset(own)
        self._plain = HostRoute("plain", trustless=not self.deserialized)
        self._hosts: dict[str, HostRoute] = {}

    # -- per Host ------------------------------------------------------------------------------

    def host_route(self, host: str) -> HostRoute:
        route = self._hosts.get(host)
        if route is None:
            route = self._classify(host)
            if len(self._hosts) >= MAX_HOSTS:
                self._hosts.clear()
            self._hosts[host] = route
        return route

    def _classify(self, host: str) -> HostRoute:
        name, port = split_host(host)
        name = name[:-1] if name.endswith(".") else name
        lower = name.lower()
        if not lower or _is_ip(lower):
            return self._plain
        domain = self.domains.get(lower)
        if domain is not None:
            return HostRoute("domain", trustless=not domain.deserialized, domain=domain, gateway=host)
        labels = lower.split(".")
        for i in range(len(labels) - 1, 1, -1):  # the longest known suffix with a namespace label before it
            domain = self.domains.get(".".join(labels[i:]))
            if domain is not None and labels[i - 1] in ENS_TLDS:  # `{name}.eth.{domain}`, as eth.limo
                return self._subdomain(domain, "ipns", ".".join(name.split(".")[:i]),
                                       ".".join(name.split(".")[i:]) + port)
            if domain is None or labels[i - 1] not in NAMESPACES:
                continue
            original = name.split(".")
            return self._subdomain(domain, labels[i - 1], ".".join(original[: i - 1]),
                                   ".".join(original[i:]) + port)
        if lower in self.own_hosts or not self.dnslink_hosts or not _ROOT_LABELS.match(lower):
            return self._plain
        return HostRoute("dnslink", trustless=not self.deserialized, root=lower)

    def _subdomain(self, domain: Domain, ns: str, root: str, gateway: str) -> HostRoute:
        route = HostRoute("subdomain", trustless=not domain.deserialized, domain=domain, gateway=gateway,
                          namespace=ns, root=root)
        if not domain.use_subdomains:
            route.refused = (404, "not_found", f"{domain.name} is not a subdomain gateway here "
                                               f"([gateway.domains.\"{domain.name}\"] use_subdomains is off)")
        elif "/" + ns not in domain.paths:
            route.refused = (404, "not_found", f"/{ns} is not served on {domain.name} "
                                               f"([gateway.domains.\"{domain.name}\"] paths)")
        elif not _ROOT_LABELS.match(root):
            route.refused = (400, "invalid_host", f"{root[:100]!r} is not a CID or a name (the Host is "
                                                  "{cid}.ipfs.{domain} or {name}.ipns.{domain})")
        else:
            try:
                cid = CID.parse(root)
            except InvalidCID:
                cid = None
            if cid is not None:
                try:
                    if len(root) > LABEL_MAX or (ns == "ipns" and cid.codec != LIBP2P_KEY):
                        route.canonical = dns_label(cid, ns)
                except LabelTooLong as exc:
                    error = too_long("CID", str(exc))
                    route.refused = (error.status, error.code, error.message)
            elif ns == "ipns" and "." not in root and "-" in root:
                route.maybe_inlined = True
        return route

    # -- per request ---------------------------------------------------------------------------

    def route(self, message, app: web.Application) -> tuple[Any, dict | None]:
        """(the message, possibly rewritten; request state to set, or None)."""
        if message.method == "CONNECT":
            # An HTTP proxy client tunnelling to the gateway (the conformance suite's "HTTP
            # proxy tunneling via CONNECT", as Kubo): 200, and the connection stays this
            # server's; the requests that follow are routed by their own Host like any other.
            # Nothing is relayed anywhere: whatever the CONNECT names, it reaches this node.
            return message, _answer(web.Response(status=200))
        headers = message.headers
        host = headers.get("X-Forwarded-Host") or headers.get("Host") or ""
        if "," in host:  # several proxies: the first is the client's
            host = host.split(",", 1)[0].strip()
        route = self.host_route(host)
        kind = route.kind
        if kind == "plain":
            return message, (_TRUSTLESS if route.trustless else None)
        if kind == "domain":
            return message, self._on_domain(route, message)
        if kind == "subdomain":
            return self._on_subdomain(route, message, host, app)
        # dnslink: only if some name system takes the name, resolved in OriginApplication._handle
        try:
            app[NAMES].system_for(route.root)
        except InvalidName:
            return message, (_TRUSTLESS if route.trustless else None)
        state = {_DNSLINK: (route.root, host, _scheme(headers))}
        if route.trustless:
            state[TRUSTLESS_ONLY] = True
        return message, state

    def _on_domain(self, route: HostRoute, message) -> dict | None:
        raw = message.url.raw_path
        ns = "ipfs" if raw.startswith("/ipfs/") or raw == "/ipfs" else \
            "ipns" if raw.startswith("/ipns/") or raw == "/ipns" else None
        state = _TRUSTLESS if route.trustless else None
        if ns is None:
            return state  # the API, ops endpoints...: the node's own origin
        domain = route.domain
        if "/" + ns not in domain.paths:
            return _answer(HTTPError(404, "not_found", f"/{ns} paths are not served on {domain.name} "
                                                       f"([gateway.domains.\"{domain.name}\"] paths)", dict(CORS)))
        if not domain.use_subdomains or message.method not in ("GET", "HEAD"):
            return state
        parts = raw.split("/", 3)  # "", ns, root[, rest]
        root = unquote(parts[2]) if len(parts) > 2 else ""
        scheme = _scheme(message.headers)
        try:
            location = subdomain_url(ns, root, parts[3] if len(parts) > 3 else "", message.url.raw_query_string,
                                     route.gateway, scheme, domain.inline_dnslink)
        except LabelTooLong as exc:
            what = "CID" if ns == "ipfs" or peer_id_cid(root) is not None else "inlined DNSLink name"
            error = too_long(what, str(exc))
            error.headers.update(CORS)
            return _answer(error)
        if location is None:
            return state  # not a CID under /ipfs/: the path gateway says what is wrong with it
        return _answer(redirect(location))

    def _on_subdomain(self, route: HostRoute, message, host: str, app: web.Application):
        if route.refused is not None:
            status, code, text = route.refused
            return message, _answer(HTTPError(status, code, text, dict(CORS)))
        scheme = _scheme(message.headers)
        if route.canonical is not None:
            query = message.url.raw_query_string
            location = f"{scheme}://{route.canonical}.{route.namespace}.{route.gateway}{message.url.raw_path}" + \
                (f"?{query}" if query else "")
            return message, _answer(redirect(location))
        origin = None if route.origins is None else route.origins.get(scheme)
        if origin is None:
            root = route.root
            if route.maybe_inlined:  # an inlined DNSLink name, unless a name system takes the label itself
                try:
                    app[NAMES].system_for(root)
                except InvalidName:
                    root = uninline_dnslink(root)
            origin = ContentOrigin("subdomain", route.namespace, root, host, scheme, route.gateway)
            if not route.maybe_inlined:  # the same for every request on this Host and scheme
                if route.origins is None:
                    route.origins = {}
                route.origins[scheme] = origin
        url = message.url
        target = origin.root_path + url.raw_path
        query = url.raw_query_string
        new_url = URL.build(path=target, query_string=query, encoded=True)
        message = message._replace(url=new_url, path=target + "?" + query if query else target)
        state = {CONTENT_ORIGIN: origin}
        if route.trustless:
            state[TRUSTLESS_ONLY] = True
        return message, state


_TRUSTLESS = {TRUSTLESS_ONLY: True}


def _answer(answer) -> dict:
    return {_ANSWER: answer}


def _scheme(headers) -> str:
    proto = headers.get("X-Forwarded-Proto")
    return "https" if proto is not None and proto.strip().lower() == "https" else "http"


def redirect(location: str) -> web.Response:
    return web.Response(status=301, headers={"Location": location, **CORS})


def subdomain_url(ns: str, root: str, rest: str, query: str, gateway: str, scheme: str, inline: bool) -> str | None:
    """boxo's toSubdomainURL: where `/{ns}/{root}/{rest}?{query}` on the gateway domain
    `gateway` lives on its subdomain gateway; None if it has no subdomain (not a CID
    under /ipfs/: the path gateway answers). `rest` and `query` stay as sent
    (percent-encoded). LabelTooLong if the root cannot fit in a DNS label."""
    if not root:
        return None
    cid = peer_id_cid(root) if ns == "ipns" else None
    if cid is None:
        try:
            cid = CID.parse(root)
        except InvalidCID:
            cid = None
    if cid is not None:
        label = dns_label(cid, ns)
    elif ns == "ipfs":
        return None
    elif "." in root and (inline or scheme == "https"):  # a DNSLink name in one label (wildcard TLS certificates)
        label = inline_dnslink(root.lower())
        if len(label) > LABEL_MAX:
            raise LabelTooLong(label)
    else:
        label = root
    if not _ROOT_LABELS.match(label):
        return None  # not a name a Host can carry: the path gateway says what is wrong with it
    return f"{scheme}://{label}.{ns}.{gateway}/{rest}" + (f"?{query}" if query else "")


# --- the application --------------------------------------------------------------------------

ORIGINS = web.AppKey("origins", OriginRouter)

with warnings.catch_warnings():
    # aiohttp warns that subclassing Application is discouraged; see the module docstring for why
    warnings.simplefilter("ignore", DeprecationWarning)

    class OriginApplication(web.Application):
        """web.Application with origin routing before URL dispatch (module docstring)."""

        def _make_request(self, message, payload, protocol, writer, task, _cls=web.Request):
            router = self._state.get(ORIGINS)
            state = None
            if router is not None:
                try:
                    message, state = router.route(message, self)
                except Exception:  # noqa: BLE001 - a Host must never break a request: the path gateway
                    log.exception("origin routing failed for Host %r", message.headers.get("Host", "")[:200])
            request = super()._make_request(message, payload, protocol, writer, task, _cls)
            if state:
                for key, value in state.items():
                    request[key] = value
            return request

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            candidate = request._state.get(_DNSLINK)
            if candidate is None:
                return await super()._handle(request)
            name, host, scheme = candidate
            try:
                await self[NAMES].resolve(name)
            except NamingError as exc:  # no DNSLink there (or DNS failing): the plain path gateway, as boxo
                log.debug("Host %s: not a DNSLink name (%s): path gateway", name, exc)
                return await super()._handle(request)
            except Exception:  # noqa: BLE001
                log.exception("resolving Host %s as a DNSLink name failed: path gateway", name)
                return await super()._handle(request)
            request[CONTENT_ORIGIN] = ContentOrigin("dnslink", "ipns", name, host, scheme)
            url = request.rel_url
            inner = request.clone(rel_url=URL.build(path=f"/ipns/{name}" + url.raw_path,
                                                    query_string=url.raw_query_string, encoded=True))
            try:
                return await super()._handle(inner)
            finally:
                # aiohttp prepares a returned response with the request it made (this one):
                # give it the match info, so on_response_prepare hooks run for it too
                request._match_info = inner._match_info


@web.middleware
async def origin_answers(request: web.Request, handler):
    """The innermost middleware: a request the origin routing answered (redirect, 404,
    400) gets that answer; every other one goes to its handler.

    On a content origin, a request other than GET/HEAD for a path of the node's own
    endpoints (`/api/...`, `/psa/...`, `/healthz`...: `own_prefixes`) is 404, not the
    gateway's 405 (or, for OPTIONS, its CORS preflight answer): those endpoints do not
    exist there, whatever the method. GET and HEAD stay content lookups (a site may have
    an `api/` directory), as in Kubo."""
    answer = request._state.get(_ANSWER)
    if answer is None:
        if request.method not in _GET_HEAD and content_origin(request) is not None and \
                _is_own_path(request.app, public_path(request)):
            raise HTTPError(404, "not_found", "the node's own endpoints are not served on a content origin "
                                              "(use the node's own Host)", dict(CORS))
        return await handler(request)
    if isinstance(answer, Exception):
        raise answer
    return answer


_GET_HEAD = frozenset(("GET", "HEAD"))
_OWN_PREFIXES = web.AppKey("hearth_own_prefixes", tuple)


def own_prefixes(app: web.Application) -> tuple:
    """The first path segments of the node's own routes (everything but /ipfs/ and
    /ipns/), from the router: ("/api", "/psa", "/routing", "/healthz", ...)."""
    found = []
    for resource in app.router.resources():
        first = "/" + resource.canonical.lstrip("/").split("/", 1)[0]
        if "{" not in first and first not in ("/ipfs", "/ipns", "/") and first not in found:
            found.append(first)
    return tuple(found)


def _is_own_path(app: web.Application, path: str) -> bool:
    prefixes = app._state.get(_OWN_PREFIXES)
    if prefixes is None:  # the router is frozen once serving: worked out on first use
        prefixes = app._state[_OWN_PREFIXES] = own_prefixes(app)
    return any(path == p or path.startswith(p + "/") for p in prefixes)


async def sandbox_path_gateway(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: CSP sandbox on what a browser would run, on the plain path gateway."""
    ctype = response.headers.get("Content-Type")
    if ctype is None or content_origin(request) is not None:
        return
    media = ctype.partition(";")[0].strip().lower()
    if (media in EXECUTABLE_TYPES or media.endswith("+xml")) and \
            request.rel_url.raw_path.startswith(("/ipfs/", "/ipns/")):
        response.headers["Content-Security-Policy"] = SANDBOX


def setup(app: web.Application, config: Config) -> None:
    app[ORIGINS] = OriginRouter(config)
    if config["gateway"]["sandbox_path_gateway"]:
        app.on_response_prepare.append(sandbox_path_gateway)
