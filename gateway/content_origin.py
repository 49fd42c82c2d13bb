"""What origin a request arrived on, as far as content is concerned.

Set by the origin routing (subdomain gateway: `{cid}.ipfs.{domain}`,
`{name}.ipns.{domain}`; DNSLink gateway: a Host that is a DNSLink name) on the
request, under CONTENT_ORIGIN, before the request reaches the /ipfs/ or /ipns/
handler it is rewritten to. Absent on the plain path gateway (requests on the
node's own origin, e.g. 127.0.0.1:8787/ipfs/{cid}).

Who reads it: `_redirects` (honoured only on such origins, per the
web-redirects-file spec), the CSP sandbox (only the plain path gateway needs it),
and the routing of API endpoints (never served on a content origin).
"""
from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class ContentOrigin:
    kind: str  # "subdomain" or "dnslink"
    namespace: str  # "ipfs" or "ipns"
    root: str  # the CID (ipfs) or the name (ipns) the origin serves, as in /{namespace}/{root}
    host: str  # the Host the request came with (after X-Forwarded-Host)
    scheme: str = "http"  # after X-Forwarded-Proto
    gateway: str = ""  # subdomain: the gateway domain's host it hangs under ("localhost:8787"); "" for dnslink

    @property
    def root_path(self) -> str:
        return f"/{self.namespace}/{self.root}"


CONTENT_ORIGIN = web.RequestKey("hearth_content_origin", ContentOrigin)
# set (True) on a request whose Host allows only trustless responses (raw, CAR): a gateway
# domain with `deserialized_responses = false`, or `[gateway] deserialized_responses = false`
TRUSTLESS_ONLY = web.RequestKey("hearth_trustless_only", bool)


def content_origin(request: web.BaseRequest) -> ContentOrigin | None:
    """request.get(CONTENT_ORIGIN), minus the cost of a miss: Request is a Mapping whose
    .get() raises and catches a KeyError when the key is absent (~0.7 us), and this is
    asked on every path-gateway request (response cache key, CSP sandbox)."""
    return request._state.get(CONTENT_ORIGIN)


def trustless_only(request: web.BaseRequest) -> bool:
    return request._state.get(TRUSTLESS_ONLY, False)


def public_path(request: web.BaseRequest) -> str:
    """The raw (percent-encoded) path as the client asked for it: on a content origin the
    request was rewritten to `{root_path}{path}`, and what the client sees (Location of a
    redirect, links in a listing, Content-Location) must be that `{path}`."""
    raw = request.rel_url.raw_path
    origin = content_origin(request)
    if origin is None:
        return raw
    return raw[len(origin.root_path):] or "/"
