"""GET/HEAD /ipfs/{cid}[/{path}] and /ipns/{name}[/{path}]: parse the request,
resolve the name (naming/: every name system through one resolver) and the
path, pick the response format, and hand over to the file for that format."""
from __future__ import annotations

import time
from urllib.parse import quote, unquote

from aiohttp import web

from storage.cid import CID, InvalidCID

from ..errors import HTTPError, bad_request
from naming import NameNotFound, NameUnavailable, NamingError

from ..keys import CACHE, ENGINE, IPNS, NAMES
from ..content_origin import content_origin, public_path, trustless_only
from ..routing_api import IPNS_RECORD, record_headers
from naming.ipns.system import canonical_key_name, parse_name as parse_ipns_name
from storage import unixfs

from . import block, car, redirects, unixfs_dir, unixfs_file
from .resolve import path_error, resolve_path
from .headers import (CORS, GatewayRequest, cache_control, cache_key_for, content_disposition, etag_matches, ipfs_uri,
                      not_modified, response_etag_matches)

SUPPORTED_FORMATS = {"raw", "car"}
KNOWN_UNSUPPORTED = {"tar", "dag-json", "dag-cbor", "json", "cbor", "ipns-record"}
ACCEPT_FORMATS = {"application/vnd.ipld.raw": "raw", "application/vnd.ipld.car": "car"}


def parse_request(request: web.Request, namespace: str = "ipfs") -> GatewayRequest:
    raw_path = request.rel_url.raw_path
    rest = raw_path[len(f"/{namespace}/"):]
    parts = rest.split("/")
    root_text = unquote(parts[0])
    root = None  # an /ipns/ name is resolved later (handle_ipns)
    if namespace == "ipfs":
        try:
            root = CID.parse(root_text)
        except InvalidCID as exc:
            # as Kubo (and the conformance suite looks for it): the path as requested, case kept
            raise bad_request(f'invalid path "/ipfs/{root_text}": invalid CID: {exc}', "invalid_cid") from None
    elif not root_text:
        raise bad_request("a name is required: /ipns/{name}[/{path}]", "invalid_name")
    trailing = rest.endswith("/") and len(parts) > 1
    segments = [unquote(p) for p in parts[1:]]
    if trailing:
        segments = segments[:-1]
    for seg in segments:
        if seg in ("", ".", "..") or "\x00" in seg:
            raise bad_request(f"invalid path segment {seg!r} in {unquote(raw_path)!r}", "invalid_path")
    q = request.query
    fmt = q.get("format") or None
    from_accept = False
    car_params: dict[str, str] = {}
    if fmt is not None:
        if fmt in KNOWN_UNSUPPORTED:
            raise bad_request(f"format={fmt} is not supported by this gateway (supported: raw, car)", "unsupported_format")
        if fmt not in SUPPORTED_FORMATS:
            raise bad_request(f"unknown format {fmt!r} (supported: raw, car)", "invalid_format")
    accept = request.headers.get("Accept", "")
    for item in accept.split(","):
        media, *params = [p.strip() for p in item.split(";")]
        media = media.lower()
        if media in ACCEPT_FORMATS:
            if fmt is None:
                fmt, from_accept = ACCEPT_FORMATS[media], True
            if ACCEPT_FORMATS[media] == "car":
                for p in params:
                    if "=" in p:
                        k, v = p.split("=", 1)
                        car_params[k.strip().lower()] = v.strip().strip('"')
            break
    for k in ("version", "order", "dups"):
        if q.get(f"car-{k}"):
            car_params[k] = q[f"car-{k}"]
    filename = q.get("filename")
    if filename is not None and (not filename or "/" in filename or "\x00" in filename):
        raise bad_request("filename must be a non-empty name without '/'", "invalid_filename")
    download = q.get("download", "").lower() == "true"
    content_path = f"/{namespace}/" + unquote(rest)
    if namespace == "ipfs":
        authority = root.v1().encode()
    else:  # a libp2p key in its base36 form; a DNSLink name with a dot (IPIP-548), lower case
        authority = canonical_key_name(root_text) or \
            (root_text.rstrip(".").lower() if "." in root_text.rstrip(".") else None)
    return GatewayRequest(request, root, root_text, segments, content_path, trailing, fmt, from_accept,
                          car_params, filename, download, namespace,
                          ipfs_uri=ipfs_uri(namespace, authority, segments, trailing))


async def handle_ipfs(request: web.Request) -> web.StreamResponse:
    cache = request.app[CACHE]
    # Fast path first: an immutable response already built for this exact request
    # (origin, path, query, Accept) is served before any parsing -- but not on a Host
    # that takes only trustless requests: what is cached may be a deserialized answer.
    trustless = trustless_only(request)
    if "Range" not in request.headers and not trustless:
        hit = cache.get(cache_key_for(request))
        if hit is not None:
            status, headers, body = hit
            if response_etag_matches(request.headers.get("If-None-Match"), headers.get("Etag", "")):
                return not_modified(headers)
            return web.Response(status=status, headers=headers, body=body)  # aiohttp drops it for HEAD

    req = parse_request(request)
    if trustless:
        refuse_deserialized(req)
    return await serve_content(request, req)


async def handle_ipns(request: web.Request) -> web.StreamResponse:
    """/ipns/{name}[/{path}]: the name resolved (naming.Resolver: IPNS, DNSLink...),
    then served as its /ipfs/ root would be, cacheable for the name's TTL.
    `?format=ipns-record` (or Accept: application/vnd.ipfs.ipns-record): the verified
    IPNS record itself. A libp2p-key name in another encoding than CIDv1 base36
    (a legacy base58 peer ID `12D3KooW...`, base32...) redirects to that canonical form."""
    cache = request.app[CACHE]
    ipns = request.app.get(IPNS)
    trustless = trustless_only(request)
    fast_key = None
    if "Range" not in request.headers and not trustless:
        # Fast path, as /ipfs/'s: this very request (origin, path, query, Accept) answered
        # before, while the name's answer still holds (its TTL; no record stored since)
        fast_key = ("ipns-request",) + cache_key_for(request)[1:]
        hit = cache.get(fast_key)
        if hit is not None:
            expires, version, status, headers, body = hit
            left = int(expires - time.monotonic())
            if left >= 1 and version == (ipns.version if ipns is not None else 0):
                headers = dict(headers)
                headers["Cache-Control"] = f"public, max-age={left}"
                if response_etag_matches(request.headers.get("If-None-Match"), headers.get("Etag", "")):
                    return not_modified(headers)
                return web.Response(status=status, headers=headers, body=body)
    if content_origin(request) is None:
        canonical_redirect(request)
    if wants_ipns_record(request):
        return await serve_ipns_record(request)
    req = parse_request(request, "ipns")
    if trustless:
        refuse_deserialized(req)
    version = ipns.version if ipns is not None else 0
    try:
        resolved = await request.app[NAMES].resolve_path(req.root_text, req.segments)
    except NamingError as exc:
        raise naming_error(exc) from None
    req.root, req.segments, req.ttl = resolved.cid, resolved.segments, resolved.ttl
    if any(r.stale for _name, r in resolved.chain):  # a last good answer (ENS [ens] stale_s): not kept by name
        request[STALE_NAME] = True  # the Warning header: stale_warning below
        fast_key = None
    if fast_key is not None and req.format is None:
        # what the name resolved to may already have been answered (keyed by the root too)
        hit = cache.get(cache_key_for(req))
        if hit is not None:
            status, headers, body = hit
            # only for names whose systems keep their answers for the TTL themselves (IPNS,
            # DNSLink): this entry is then never staler than a new resolution would be
            if 1 <= resolved.ttl < float("inf") and all(
                    r.source in _caching_sources(request) for _name, r in resolved.chain):
                cache.put(fast_key, (time.monotonic() + resolved.ttl, version, status, headers, body),
                          len(body) + 512)
            headers = dict(headers)
            headers["Cache-Control"] = cache_control(req)  # the time left of the name's TTL
            if response_etag_matches(request.headers.get("If-None-Match"), headers.get("Etag", "")):
                return not_modified(headers)
            return web.Response(status=status, headers=headers, body=body)
    return await serve_content(request, req)


STALE_NAME = web.RequestKey("hearth_stale_name", bool)
STALE_WARNING = '110 hearth "Response is Stale: the name system could not be reached, last good answer served"'


async def stale_warning(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: a response served from a stale name answer says so (RFC 7234 Warning 110)."""
    if request.get(STALE_NAME):
        response.headers["Warning"] = STALE_WARNING


def _caching_sources(request: web.Request) -> set[str]:
    return {s.name for s in request.app[NAMES].systems if getattr(s, "caches_answers", False)}


def canonical_redirect(request: web.Request) -> None:
    """302 to /ipns/{k51...}/{rest} when the name is a libp2p key not written as CIDv1 base36
    (302, as Kubo: boxo's gateway answers this redirect with Found)."""
    raw = request.rel_url.raw_path
    name_text, sep, rest = raw[len("/ipns/"):].partition("/")
    name_text = unquote(name_text)
    canonical = canonical_key_name(name_text)  # memoized: base36 decoding is costly
    if canonical is None:
        return  # not a key name, or a CID of another codec: the name system answers 400
    if canonical != name_text:
        query = request.rel_url.raw_query_string
        raise web.HTTPFound(f"/ipns/{canonical}{sep}{rest}" + (f"?{query}" if query else ""), headers=CORS)


def wants_ipns_record(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt:
        return fmt == "ipns-record"
    return IPNS_RECORD in request.headers.get("Accept", "")


async def serve_ipns_record(request: web.Request) -> web.Response:
    raw = request.rel_url.raw_path
    name_text, _, rest = raw[len("/ipns/"):].partition("/")
    name_text = unquote(name_text)
    if rest:
        raise bad_request("an IPNS record has no path: ask for /ipns/{name}?format=ipns-record", "invalid_path")
    system = request.app[IPNS]
    if not system.handles(name_text):
        raise bad_request(f"{name_text[:100]!r} is not an IPNS name (a libp2p key): only those have records",
                          "invalid_name")
    try:
        name = parse_ipns_name(name_text)
        rec = await system.lookup(name)
    except NamingError as exc:
        raise naming_error(exc) from None
    headers = dict(CORS, **record_headers(name, rec))
    # the record's own TTL, as boxo's gateway and the conformance suite (t0124, trustless
    # IPNS: `public, max-age=<TTL>`), not bounded by the record's validity as on
    # /routing/v1: the bytes are signed and the client checks their validity itself
    headers["Cache-Control"] = f"public, max-age={int(rec.ttl_seconds)}"
    headers["X-Ipfs-Path"] = f"/ipns/{name}"
    filename = request.query.get("filename") or f"{name}.ipns-record"
    headers["Content-Disposition"] = content_disposition(filename, True)
    if not request.query.get("format"):  # negotiated by Accept: where the same bytes live by URL, as boxo
        qs = request.rel_url.raw_query_string
        headers["Content-Location"] = public_path(request) + "?" + (qs + "&" if qs else "") + "format=ipns-record"
    if etag_matches(request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    return web.Response(body=rec.raw, headers=headers)


def refuse_deserialized(req: GatewayRequest) -> None:
    """On a Host with deserialized responses off (`deserialized_responses = false`), only
    what a client can verify is served, as boxo's isTrustlessRequest: a raw block of a
    CID without a path, a CAR, or an IPNS record (answered before this check)."""
    if req.format == "car" or (req.format == "raw" and req.namespace == "ipfs" and not req.segments):
        return
    raise HTTPError(406, "not_acceptable", "only trustless requests are accepted on this gateway: "
                    "https://specs.ipfs.tech/http-gateways/trustless-gateway/ (a block: /ipfs/{cid}?format=raw, "
                    "a CAR: ?format=car, an IPNS record: /ipns/{name}?format=ipns-record)")


def naming_error(exc: NamingError) -> HTTPError:
    http = getattr(exc, "http", None)  # (status, code) of a name system's own answer (ENS: 422, 503)
    if http is not None:
        return HTTPError(http[0], http[1], str(exc), dict(getattr(exc, "headers", None) or {}))
    if isinstance(exc, NameNotFound):
        return HTTPError(404, "name_not_found", str(exc))
    if isinstance(exc, NameUnavailable):
        # 502, or what the name system says (504: DNS gave no answer in time)
        return HTTPError(getattr(exc, "status", 502), "name_unavailable", str(exc), {"Retry-After": "10"})
    return bad_request(str(exc), "invalid_name")  # InvalidName, NameLoop


async def serve_content(request: web.Request, req: GatewayRequest) -> web.StreamResponse:
    """The response for a parsed request whose root is known."""
    cache = request.app[CACHE]
    engine = request.app[ENGINE]

    async def get_block(cid: CID) -> bytes:
        key = ("block", cid.codec, cid.multihash)
        data = cache.get(key)
        if data is None:
            data = await engine.get_block(cid)
            cache.put(key, data, len(data))
        return data

    if "only-if-cached" in request.headers.get("Cache-Control", "") and not await engine.has_block(req.root):
        raise HTTPError(412, "not_cached", f"{req.root} is not on this node")

    if req.format == "car":
        return await car.serve(req, get_block)

    if redirects.applies(req):  # content origin, web response: a missing path may have a `_redirects` rule
        try:
            resolved = await unixfs.resolve(get_block, req.root, req.segments)
        except (unixfs.PathNotFound, unixfs.NotTraversable) as exc:
            outcome = await redirects.recover(req, get_block, engine, cache)
            if outcome is None:
                raise path_error(req, exc) from None
            if isinstance(outcome, web.StreamResponse):
                return outcome
            resolved = outcome  # rewritten (200)
    else:
        resolved = await resolve_path(req, get_block)

    if req.format == "raw":
        return await block.serve(req, resolved, cache)

    node = resolved.node
    if node.kind in ("directory", "hamt"):
        return await unixfs_dir.serve(req, resolved, get_block, engine, cache)
    if node.kind in ("file", "symlink"):
        return await unixfs_file.serve(req, resolved, get_block, engine, cache)
    if node.kind in ("dag-cbor", "dag-json"):
        return await block.serve_codec(req, resolved, cache)
    raise HTTPError(501, "unsupported_node", f"{node.cid} is a {node.cid.codec_name} node this gateway cannot render; "
                    "request it with ?format=raw or ?format=car")


async def handle_ipfs_root(request: web.Request) -> web.Response:
    """`/ipfs/?uri=ipfs://{cid}/{path}` (the path gateway's protocol-handler form)
    redirects to `/ipfs/{cid}/{path}`; anything else lacks a CID."""
    uri = request.query.get("uri")
    if uri is None:
        raise bad_request("a CID is required: /ipfs/{cid}[/{path}]", "invalid_cid")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.lower() not in ("ipfs", "ipns") or not rest:
        raise bad_request(f"uri must be ipfs://... or ipns://..., got {uri[:100]!r}", "invalid_uri")
    if scheme.lower() == "ipfs":
        try:
            CID.parse(unquote(rest.split("/", 1)[0].split("?", 1)[0]))
        except InvalidCID as exc:
            raise bad_request(f"invalid CID in uri: {exc}", "invalid_cid") from None
    raise web.HTTPMovedPermanently(f"/{scheme.lower()}/{rest}")


async def handle_ipfs_options(request: web.Request) -> web.Response:
    """CORS preflight."""
    return web.Response(status=200, headers=dict(CORS, **{"Access-Control-Max-Age": "86400"}))

