"""JSON errors, `{"error": {"code", "message"}}`, and the middleware that maps
engine and input failures to the right status."""
from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from storage.dagpb import InvalidNode
from storage.engine import BlockNotFound, EngineError, EngineTimeout, EngineUnavailable, InvalidContent, UploadTooLarge

log = logging.getLogger("hearth")
access_log = logging.getLogger("hearth.http")  # one line per client error, at debug

RETRY_AFTER = "10"
CLIENT_CLOSED = 499


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


def client_gone(request: web.BaseRequest) -> bool:
    """True if the client's connection is closed or closing (it disconnected)."""
    transport = request.transport
    return transport is None or transport.is_closing()


def is_client_fault(exc: BaseException) -> str | None:
    """What a client did wrong, if `exc` is one of the failures clients cause:
    a request aiohttp's parser refused, or a connection the client dropped."""
    if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
        return f"malformed HTTP request ({type(exc).__name__}: {exc.message or exc})"
    if isinstance(exc, ConnectionError):  # ConnectionResetError, BrokenPipeError, ClientConnectionResetError
        return f"client disconnected ({type(exc).__name__}: {exc})"
    return None


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
            message = exc.reason if exc.status != 413 else exc.text or exc.reason
            _log_answer(request, exc.status, code, message)
            return json_error(exc.status, code, message,
                              {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")})
        raise
    except asyncio.CancelledError:
        if client_gone(request):  # the server cancels a handler whose client went away (handler_cancellation)
            access_log.debug("%s %s: client disconnected (handler cancelled)", request.method, request.path[:200])
        raise
    except ConnectionError as exc:
        if not client_gone(request):
            return _internal_error(request)  # an upstream connection, not the client's: a bug to look at
        # the client went away mid-request (upload or download): nothing to answer, nothing to alarm about
        access_log.debug("%s %s: %s", request.method, request.path[:200], is_client_fault(exc))
        return client_closed()
    except Exception as exc:  # noqa: BLE001 - last line of defence
        mapped = error_for(exc)
        if mapped is None:
            return _internal_error(request)
        if client_gone(request):  # e.g. an upload whose body stopped because the client went away
            access_log.debug("%s %s: client disconnected (would have answered %d %s: %s)", request.method,
                             request.path[:200], mapped.status, mapped.code, mapped.message[:300])
            return client_closed()
        _log_answer(request, mapped.status, mapped.code, mapped.message)
        return json_error(mapped.status, mapped.code, mapped.message, mapped.headers)


def client_closed() -> web.Response:
    """The answer to a request whose client is gone: it never reaches anyone; its
    status, 499 (nginx's "client closed request"), is what /metrics counts."""
    return web.Response(status=CLIENT_CLOSED, reason="Client Closed Request")


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled error on %s %s", request.method, request.path[:200])
    return json_error(500, "internal", "internal server error")


def _log_answer(request: web.Request, status: int, code: str, message: str) -> None:
    """One line per error answer, no traceback: client errors at debug (expected, and a
    public node sees many), server-side conditions (engine down, timeouts) at warning."""
    if status < 500:
        access_log.debug("%s %s -> %d %s: %s", request.method, request.path[:200], status, code, message[:300])
    else:
        log.warning("%s %s -> %d %s: %s", request.method, request.path[:200], status, code, message[:300])


class ClientFaultFilter(logging.Filter):
    """On aiohttp's server logger: aiohttp logs a request its parser refuses (bad
    request line, bad header, oversized line) and a client that disconnects while a
    response is written as ERROR with a traceback. Those are the client's doing:
    drop the record and log one debug line instead. Everything else passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        fault = is_client_fault(exc) if exc is not None else None
        if fault is None:
            return True
        access_log.debug("%s: %s", record.getMessage(), fault)
        return False


_FILTER = ClientFaultFilter()


def quiet_client_faults() -> None:
    """Install ClientFaultFilter on aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
