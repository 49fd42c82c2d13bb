"""JSON errors, `{"error": {"code", "message"}}`, and the middleware that maps
engine and input failures to the right status."""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from storage.dagpb import InvalidNode
from storage.engine import BlockNotFound, EngineError, EngineTimeout, EngineUnavailable, InvalidContent, UploadTooLarge

log = logging.getLogger("hearth")

RETRY_AFTER = "10"


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def json_error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"error": {"code": code, "message": message}}).encode(),
        content_type="application/json",
        headers=headers,
    )


def bad_request(message: str, code: str = "bad_request") -> HTTPError:
    return HTTPError(400, code, message)


def error_for(exc: BaseException) -> HTTPError | None:
    """The HTTP answer for an exception raised below the gateway, or None."""
    if isinstance(exc, HTTPError):
        return exc
    if isinstance(exc, BlockNotFound):
        return HTTPError(404, "not_found", str(exc))
    if isinstance(exc, EngineUnavailable):
        return HTTPError(503, "storage_unavailable", f"storage engine unavailable: {exc}", {"Retry-After": RETRY_AFTER})
    if isinstance(exc, EngineTimeout):
        return HTTPError(504, "timeout", f"timed out: {exc}", {"Retry-After": RETRY_AFTER})
    if isinstance(exc, EngineError):
        return HTTPError(502, "storage_error", f"storage engine error: {exc}", {"Retry-After": RETRY_AFTER})
    if isinstance(exc, UploadTooLarge):
        return HTTPError(413, "too_large", str(exc))
    if isinstance(exc, (InvalidContent, InvalidNode)):
        return HTTPError(400, "invalid_content", str(exc))
    return None


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
            return json_error(exc.status, code, exc.reason if exc.status != 413 else exc.text or exc.reason,
                              {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")})
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - last line of defence
        mapped = error_for(exc)
        if mapped is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return json_error(500, "internal", "internal server error")
        return json_error(mapped.status, mapped.code, mapped.message, mapped.headers)
