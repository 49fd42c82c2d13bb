"""Headers every /ipfs/ response shares, and the request options that shape them."""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from aiohttp import web

from storage.cid import CID

from ..content_origin import content_origin

IMMUTABLE = "public, max-age=29030400, immutable"

# Content-addressed data is public and verifiable: any origin may read it.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Range, User-Agent, X-Requested-With",
    "Access-Control-Expose-Headers": "Content-Length, Content-Range, X-Ipfs-Path, X-Ipfs-Roots, X-Stream-Output",
}


@dataclass
class GatewayRequest:
    request: web.Request
    root: CID
    root_text: str  # the CID as the client wrote it
    segments: list[str]
    content_path: str  # /ipfs/<cid>/<path> as requested, for X-Ipfs-Path
    trailing_slash: bool
    format: str | None  # "raw" | "car" | None (deserialized)
    format_from_accept: bool = False
    car_params: dict = field(default_factory=dict)
    filename: str | None = None
    download: bool = False
    namespace: str = "ipfs"  # "ipns": root came from a name (root_text), and may change
    ttl: float | None = None  # ipns: seconds the name's answer holds (None: immutable /ipfs/)
    via_redirects: bool = False  # answered through a `_redirects` rule (redirects.py): never cached by path
    ipfs_uri: str | None = None  # the Ipfs-Uri header (ipfs_uri()), for the path as requested


    @property
    def is_head(self) -> bool:
        return self.request.method == "HEAD"


def cache_control(req: GatewayRequest) -> str:
    """/ipfs/ content never changes; what a name points to holds for its TTL."""
    if req.namespace == "ipfs":
        return IMMUTABLE
    if req.ttl is None or req.ttl == float("inf"):
        return "public"
    return f"public, max-age={max(0, int(req.ttl))}"


def ipfs_uri(namespace: str, authority: str | None, segments: list[str], trailing_slash: bool) -> str | None:
    """The `Ipfs-Uri` response header (IPIP-548, as the conformance suite checks it): the
    content path as one canonical URI, `ipfs://{cidv1-base32}` or `ipns://{name}`, each
    path segment percent-encoded over RFC 3986's unreserved set (upper-case hex), a
    trailing slash kept, no query. `authority` is the canonical root (None: no header,
    as for a DNSLink name without a dot, which is no ipns:// authority)."""
    if not authority:
        return None
    path = "".join("/" + quote(seg, safe="-._~") for seg in segments)
    return f"{namespace}://{authority}{path}" + ("/" if trailing_slash else "")


def common_headers(req: GatewayRequest, roots: list[CID], etag: str) -> dict[str, str]:
    headers = {
        "Etag": etag,
        "Cache-Control": cache_control(req),
        "X-Ipfs-Path": req.content_path,
        "X-Ipfs-Roots": ",".join(str(r) for r in roots),
        "Vary": "Accept, Accept-Encoding",
    }
    if req.ipfs_uri:
        headers["Ipfs-Uri"] = req.ipfs_uri
    headers.update(CORS)
    return headers


def content_disposition(filename: str, attachment: bool) -> str:
    """Both forms, as boxo sends them: a quoted ASCII fallback and RFC 5987 UTF-8."""
    kind = "attachment" if attachment else "inline"
    ascii_name = "".join(c if 0x20 <= ord(c) < 0x7F else "_" for c in filename)
    ascii_name = quote(ascii_name, safe="!$&'()*+,;=:@-._~")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    want = etag[2:] if etag.startswith("W/") else etag
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == want:
            return True
    return False


def response_etag_matches(if_none_match: str | None, etag: str) -> bool:
    """etag_matches, and for a directory listing (`"DirIndex-..._CID-{cid}"`) also the
    directory's CID as Etag, as boxo: what a client holds from the directory's other
    forms (its raw block, index.html) still means "not modified"."""
    if etag_matches(if_none_match, etag):
        return True
    if if_none_match and etag.startswith('"DirIndex-') and "_CID-" in etag:
        return etag_matches(if_none_match, '"' + etag.rsplit("_CID-", 1)[1])
    return False


def not_modified(headers: dict[str, str]) -> web.Response:
    keep = {k: v for k, v in headers.items() if k in ("Etag", "Cache-Control", "X-Ipfs-Path", "X-Ipfs-Roots", "Vary")}
    return web.Response(status=304, headers=keep)


def cache_key_for(req: "GatewayRequest | web.Request"):
    """The response-cache key: everything a response depends on (GET and HEAD share it).
    For named content (/ipns/) the resolved root and path are part of the key. None for
    answers made by a `_redirects` rule (they depend on the origin, not only the path):
    not kept (ResponseCache.put ignores None)."""
    if isinstance(req, GatewayRequest) and req.via_redirects:
        return None
    r = req.request if isinstance(req, GatewayRequest) else req
    # on a content origin the same rewritten path answers differently (the Location of a
    # directory redirect, the links of a listing, no CSP sandbox): keyed by its Host too
    origin = content_origin(r)
    key = ("resp", r.rel_url.raw_path, r.rel_url.raw_query_string, r.headers.get("Accept", ""),
           origin.host if origin is not None else None)
    if isinstance(req, GatewayRequest) and req.namespace != "ipfs":
        # a name: keyed by what it resolved to as well, so a new value is never answered
        # from an old entry (the handler sets Cache-Control from the name's TTL on a hit)
        return key + (req.root.codec, req.root.multihash, tuple(req.segments))
    return key
