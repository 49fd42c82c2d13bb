"""CORS for the bearer-token API (`/api/v1/...`, `/psa/...`), so a dApp served
from any origin can call it from a browser with its own token, and for the
Delegated Routing API (`/routing/v1/...`, public: any page may resolve and put
IPNS records, whose signatures are their authorization).

* Preflight: `OPTIONS` on an API route answers 204 with
  `Access-Control-Allow-Origin: *`, the route's methods, the requested headers
  that are allowed (`Authorization`, `Content-Type`, ...) and a max age. An
  `OPTIONS` without the preflight headers gets the same 204 (with `Allow`).
* Every other response under those prefixes, success or error, carries
  `Access-Control-Allow-Origin: *` and `Access-Control-Expose-Headers`.
* Never `Access-Control-Allow-Credentials`: the API is authorised by a bearer
  token the page sends itself, not by cookies, so any origin may call it and
  no browser ever attaches ambient credentials for it.

The gateway (`/ipfs/`) has its own CORS (gateway/ipfs/headers.py); ops
endpoints (/metrics, /readyz, ...) have none.
"""
from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

PREFIXES = ("/api/v1/", "/psa/", "/routing/v1/")  # /routing/v1: the Delegated Routing API's spec asks for CORS
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Accept", "Accept-Language", "Content-Language", "X-Requested-With")
EXPOSED_HEADERS = "Content-Length, Content-Type, Location, Retry-After, WWW-Authenticate, Allow"
MAX_AGE = "7200"  # Chromium caps preflight caching at 2 hours
_ALLOWED = {h.lower(): h for h in ALLOWED_HEADERS}


def _applies(path: str) -> bool:
    return path.startswith(PREFIXES) or path in ("/api/v1", "/psa")


def _route_methods(request: web.Request) -> set[str] | None:
    """The methods the matched route answers, or None if no route has this path."""
    info = request.match_info
    if isinstance(info, MatchInfoError):
        exc = info.http_exception
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return set(exc.allowed_methods)
        return None
    resource = info.route.resource
    if resource is None:
        return None
    return {route.method for route in resource}


def _preflight(request: web.Request, methods: set[str]) -> web.Response:
    methods = sorted(m for m in methods if m != "OPTIONS")
    requested = request.headers.get("Access-Control-Request-Headers", "")
    asked = [h.strip().lower() for h in requested.split(",") if h.strip()]
    allowed = [_ALLOWED[h] for h in asked if h in _ALLOWED] if asked else list(ALLOWED_HEADERS)
    headers = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Max-Age": MAX_AGE,
        "Allow": ", ".join(methods + ["OPTIONS"]),
        "Vary": "Access-Control-Request-Headers, Access-Control-Request-Method",
    }
    if allowed:
        headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
    return web.Response(status=204, headers=headers)


def _decorate(headers) -> None:
    headers["Access-Control-Allow-Origin"] = "*"
    headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


@web.middleware
async def cors_middleware(request: web.Request, handler):
    if not _applies(request.path):
        return await handler(request)
    if request.method == "OPTIONS":
        methods = _route_methods(request)
        if methods is not None:
            return _preflight(request, methods)
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        _decorate(exc.headers)
        raise
    if not resp.prepared:
        _decorate(resp.headers)
    return resp
