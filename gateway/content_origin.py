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

    @property
    def root_path(self) -> str:
        return f"/{self.namespace}/{self.root}"


CONTENT_ORIGIN = web.RequestKey("hearth_content_origin", ContentOrigin)
