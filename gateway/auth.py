"""Bearer-token authentication. Tokens are stored only as SHA-256 hashes."""
from __future__ import annotations

from aiohttp import web

from .errors import HTTPError
from .keys import CONFIG, STORE

ANONYMOUS = "anonymous"


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(request: web.Request) -> str | None:
    """The caller's identity (token name), 'anonymous' when allowed, else None."""
    token = bearer_token(request)
    if token is not None:
        return await request.app[STORE].run(request.app[STORE].check_token, token)
    if request.app[CONFIG]["auth"]["anonymous_uploads"]:
        return ANONYMOUS
    return None


async def require_owner(request: web.Request) -> str:
    owner = await authenticate(request)
    if owner is None:
        message = "a valid bearer token is required (Authorization: Bearer <token>)"
        if bearer_token(request) is not None:
            message = "the bearer token is invalid or revoked"
        raise HTTPError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="hearth"'})
    return owner
