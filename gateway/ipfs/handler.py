"""GET/HEAD /ipfs/{cid}[/{path}] and /ipns/{name}[/{path}]: parse the request,
resolve the name (naming/: every name system through one resolver) and the
path, pick the response format, and hand over to the file for that format."""
from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from storage.cid import CID, InvalidCID

from ..errors import HTTPError, bad_request
from naming import NameNotFound, NameUnavailable, NamingError

from ..keys import CACHE, ENGINE, NAMES
from . import block, car, unixfs_dir, unixfs_file
from .resolve import resolve_path
from .headers import CORS, GatewayRequest, cache_key_for, etag_matches, not_modified

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
            raise bad_request(f"invalid CID {root_text!r}: {exc}", "invalid_cid") from None
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
    return GatewayRequest(request, root, root_text, segments, content_path, trailing, fmt, from_accept,
                          car_params, filename, download, namespace)


async def handle_ipfs(request: web.Request) -> web.StreamResponse:
    cache = request.app[CACHE]
    # Fast path first: an immutable response already built for this exact request
    # (path, query, Accept) is served before any parsing.
    if "Range" not in request.headers:
        hit = cache.get(cache_key_for(request))
        if hit is not None:
            status, headers, body = hit
            if etag_matches(request.headers.get("If-None-Match"), headers.get("Etag", "")):
                return not_modified(headers)
            return web.Response(status=status, headers=headers, body=body)  # aiohttp drops it for HEAD

    return await serve_content(request, parse_request(request))


async def handle_ipns(request: web.Request) -> web.StreamResponse:
    """/ipns/{name}[/{path}]: the name resolved (naming.Resolver: IPNS, DNSLink...),
    then served as its /ipfs/ root would be, cacheable for the name's TTL."""
    req = parse_request(request, "ipns")
    try:
        resolved = await request.app[NAMES].resolve_path(req.root_text, req.segments)
    except NamingError as exc:
        raise naming_error(exc) from None
    req.root, req.segments, req.ttl = resolved.cid, resolved.segments, resolved.ttl
    return await serve_content(request, req)


def naming_error(exc: NamingError) -> HTTPError:
    if isinstance(exc, NameNotFound):
        return HTTPError(404, "name_not_found", str(exc))
    if isinstance(exc, NameUnavailable):
        return HTTPError(502, "name_unavailable", str(exc), {"Retry-After": "10"})
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

