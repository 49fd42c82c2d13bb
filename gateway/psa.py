"""IPFS Pinning Services API v1.0.0, under /psa.

    GET    /psa/pins               list the caller's pin requests (filters, newest first)
    POST   /psa/pins               add a pin request                    -> 202 PinStatus
    GET    /psa/pins/{requestid}   one pin request
    POST   /psa/pins/{requestid}   replace a pin request                -> 202 PinStatus
    DELETE /psa/pins/{requestid}   remove a pin request                 -> 202

Every endpoint needs a bearer token (the token's name owns the requests; no
anonymous access here). Errors use the PSA's own shape,
`{"error": {"reason": "...", "details": "..."}}`, never the node's.
The pinning itself happens in the background: storage/pin_worker.py.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone

from aiohttp import web

from outbound.multiaddr import is_http_url
from storage.cid import CID, InvalidCID, record_key
from storage.engine import EngineError, EngineTimeout, EngineUnavailable

from .auth import authenticate, bearer_token
from .errors import access_log, client_gone
from .json_body import BadJSON, parse_json
from .keys import CONFIG, ENGINE, PIN_WORKER, STORE
from identity.keyring import keyring_for

from .peer_id import own_delegate
from storage.pin_worker import PinWorker

log = logging.getLogger("hearth.psa")

PREFIX = "/psa"
STATUSES = ("queued", "pinning", "pinned", "failed")
MATCHES = ("exact", "iexact", "partial", "ipartial")
MAX_NAME = 255
MAX_CIDS = 10
MAX_ORIGINS = 20
MAX_META = 1000
MAX_BODY = 1024 * 1024  # a Pin body, as JSON (the app's client_max_size)
MAX_META_QUERY = 4 * 1024  # the `meta` query value (aiohttp refuses request lines over 8190 bytes anyway)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
DELEGATES_TTL = 60.0
DELEGATES_TIMEOUT = 5.0  # a slow engine must not hold up the API

DELEGATES = web.AppKey("psa_delegates", object)

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


# --- errors ------------------------------------------------------------------------------------
class PSAError(Exception):
    def __init__(self, status: int, reason: str, details: str, headers: dict | None = None):
        super().__init__(details)
        self.status, self.reason, self.details, self.headers = status, reason, details, headers or {}


def failure(status: int, reason: str, details: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"reason": reason, "details": details}}, status=status, headers=headers)


def bad_request(details: str) -> PSAError:
    return PSAError(400, "BAD_REQUEST", details)


def not_found(requestid: str) -> PSAError:
    return PSAError(404, "NOT_FOUND", f"no pin request {requestid!r} for this access token")


def psa_handler(fn):
    """Authenticate, and turn every failure into the PSA error shape."""

    @functools.wraps(fn)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            owner = await require_token(request)
            return await fn(request, owner)
        except PSAError as exc:
            return _answer(request, exc.status, exc.reason, exc.details, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = {413: "PAYLOAD_TOO_LARGE"}.get(exc.status, "BAD_REQUEST" if exc.status < 500 else "INTERNAL_SERVER_ERROR")
            return _answer(request, exc.status, reason, exc.text or exc.reason)
        except EngineUnavailable as exc:
            return _answer(request, 503, "SERVICE_UNAVAILABLE", f"storage engine unavailable: {exc}", {"Retry-After": "10"})
        except EngineTimeout as exc:
            return _answer(request, 504, "TIMEOUT", f"storage engine timed out: {exc}", {"Retry-After": "10"})
        except EngineError as exc:
            return _answer(request, 502, "STORAGE_ERROR", f"storage engine error: {exc}", {"Retry-After": "10"})
        except ConnectionError:
            if client_gone(request):
                raise  # the client went away mid-request: error_middleware logs it once, at debug
            log.exception("unhandled error on %s %s", request.method, request.path[:200])
            return failure(500, "INTERNAL_SERVER_ERROR", "internal server error")
        except Exception:  # noqa: BLE001 - last line of defence, still in the PSA shape
            log.exception("unhandled error on %s %s", request.method, request.path)
            return failure(500, "INTERNAL_SERVER_ERROR", "internal server error")

    return wrapper


def _answer(request: web.Request, status: int, reason: str, details: str, headers: dict | None = None) -> web.Response:
    """A PSA error answer, logged once without a traceback: client errors at debug,
    server-side conditions (engine down, timeouts) at warning."""
    level = logging.DEBUG if status < 500 else logging.WARNING
    (access_log if status < 500 else log).log(level, "%s %s -> %d %s: %s", request.method, request.path[:200], status,
                                              reason, details[:300])
    return failure(status, reason, details, headers)


async def require_token(request: web.Request) -> str:
    headers = {"WWW-Authenticate": 'Bearer realm="hearth"'}
    if bearer_token(request) is None:
        raise PSAError(401, "UNAUTHORIZED", "an access token is required (Authorization: Bearer <token>)", headers)
    owner = await authenticate(request)
    if owner is None:
        raise PSAError(401, "UNAUTHORIZED", "the access token is invalid or revoked", headers)
    return owner


# --- validation ----------------------------------------------------------------------------------
def parse_cid(value, what: str = "cid") -> str:
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string")
    if not value:
        raise bad_request(f"{what} must not be empty")
    try:
        CID.parse(value)
    except (InvalidCID, ValueError) as exc:
        raise bad_request(f"{what} {value[:100]!r} is not a valid CID: {exc}") from None
    return value


def _multiaddr_ok(addr: str) -> bool:
    if len(addr) > 1024 or not addr.startswith("/") or addr.endswith("/") and addr != "/":
        return False
    parts = addr[1:].split("/")
    return len(parts) >= 2 and all(parts) and not any(c.isspace() for c in addr)


def _origin_ok(origin: str) -> bool:
    """An origin is a multiaddr (libp2p, or /.../http for a trustless gateway) or an
    http(s) URL of a trustless gateway (what the embedded engine fetches from)."""
    return _multiaddr_ok(origin) or is_http_url(origin)


def parse_pin(body: bytes) -> dict:
    """A Pin object from a request body, validated: {cid, name, origins, meta}."""
    if not body.strip():
        raise bad_request("a JSON Pin object is required in the request body")
    try:
        data = parse_json(body, max_bytes=MAX_BODY)
    except BadJSON as exc:
        if exc.status == 413:
            raise PSAError(413, "PAYLOAD_TOO_LARGE", exc.message) from None
        raise bad_request(exc.message) from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object (a Pin)")
    if "cid" not in data:
        raise bad_request("cid is required")
    cid = parse_cid(data["cid"])
    name = data.get("name")
    if "name" in data:
        if not isinstance(name, str):
            raise bad_request("name must be a string")
        if len(name) > MAX_NAME:
            raise bad_request(f"name must be at most {MAX_NAME} characters (got {len(name)})")
    origins = data.get("origins", [])
    if not isinstance(origins, list):
        raise bad_request("origins must be an array of multiaddr (or http(s) URL) strings")
    if len(origins) > MAX_ORIGINS:
        raise bad_request(f"origins may hold at most {MAX_ORIGINS} multiaddrs (got {len(origins)})")
    for o in origins:
        if not isinstance(o, str):
            raise bad_request("origins must be an array of multiaddr (or http(s) URL) strings")
        if not _origin_ok(o):
            raise bad_request(f"origins: {o[:100]!r} is neither a multiaddr nor an http(s) URL")
    if len(set(origins)) != len(origins):
        raise bad_request("origins must not repeat a multiaddr")
    meta = data.get("meta", {})
    meta = parse_meta_object(meta, "meta")
    return {"cid": cid, "name": name, "origins": origins, "meta": meta}


def parse_meta_object(meta, what: str) -> dict:
    if not isinstance(meta, dict):
        raise bad_request(f"{what} must be a JSON object with string values")
    if len(meta) > MAX_META:
        raise bad_request(f"{what} may hold at most {MAX_META} keys (got {len(meta)})")
    for k, v in meta.items():
        if not isinstance(v, str):
            raise bad_request(f"{what}[{k[:100]!r}] must be a string")
    return meta


def parse_time(value: str, what: str, *, round_up: bool) -> str:
    """An RFC 3339 date-time, as a string comparable with stored `created` values
    (UTC, millisecond precision: rounded up for `before`, down for `after`)."""
    text = value
    m = _RFC3339.match(text)
    if m is None and re.search(r" \d{2}:\d{2}$", text):  # an unencoded '+' became a space
        m = _RFC3339.match(text[:-6] + "+" + text[-5:])
    if m is None:
        raise bad_request(f"{what} must be an RFC 3339 date-time such as 2020-07-27T17:32:28Z (got {value[:60]!r})")
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    try:
        sec = min(int(second), 59)  # a leap second
        micro = int((frac or "0")[:6].ljust(6, "0"))
        if z:
            tz = timezone.utc
        else:
            if int(oh) > 23 or int(om) > 59:
                raise ValueError("bad offset")
            offset = timedelta(hours=int(oh), minutes=int(om))
            tz = timezone(offset if sign == "+" else -offset)
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), sec, micro, tzinfo=tz)
        dt = dt.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise bad_request(f"{what} is not a valid date-time: {value[:60]!r}") from None
    # precision finer than the microsecond counts for rounding up
    extra = bool(frac and frac[6:].strip("0"))
    ms, rest = divmod(dt.microsecond, 1000)
    if round_up and (rest or extra):
        dt = dt.replace(microsecond=ms * 1000) + timedelta(milliseconds=1)
        ms = dt.microsecond // 1000
    return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
            f"{ms:03d}Z")


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"{name} was given more than once")
    return values[0] if values else None


def _csv(request: web.Request, name: str) -> list[str] | None:
    values = request.query.getall(name, [])
    if not values:
        return None
    items = [item.strip() for v in values for item in v.split(",")]
    if any(not item for item in items):
        raise bad_request(f"{name} must be a comma-separated list without empty items")
    if len(set(items)) != len(items):
        raise bad_request(f"{name} must not repeat a value")
    return items


def parse_list_query(request: web.Request) -> dict:
    out: dict = {}
    cids = _csv(request, "cid")
    if cids is not None:
        if len(cids) > MAX_CIDS:
            raise bad_request(f"cid accepts at most {MAX_CIDS} CIDs (got {len(cids)})")
        out["cids"] = [parse_cid(c) for c in cids]
        if len({record_key(c) for c in out["cids"]}) != len(cids):
            raise bad_request("cid must not repeat a CID")
    name = _one(request, "name")
    if name is not None:
        if len(name) > MAX_NAME:
            raise bad_request(f"name must be at most {MAX_NAME} characters (got {len(name)})")
        out["name"] = name
    match = _one(request, "match")
    if match is not None:
        if match not in MATCHES:
            raise bad_request(f"match must be one of {', '.join(MATCHES)} (got {match[:40]!r})")
        out["match"] = match
    statuses = _csv(request, "status")
    if statuses is not None:
        bad = [s for s in statuses if s not in STATUSES]
        if bad:
            raise bad_request(f"status must be a comma-separated subset of {','.join(STATUSES)} (got {bad[0][:40]!r})")
        out["statuses"] = statuses
    before = _one(request, "before")
    if before is not None:
        out["before"] = parse_time(before, "before", round_up=True)
    after = _one(request, "after")
    if after is not None:
        out["after"] = parse_time(after, "after", round_up=False)
    limit = _one(request, "limit")
    out["limit"] = DEFAULT_LIMIT
    if limit is not None:
        if not re.fullmatch(r"[0-9]{1,10}", limit) or not 1 <= int(limit) <= MAX_LIMIT:  # ASCII digits only
            raise bad_request(f"limit must be an integer from 1 to {MAX_LIMIT} (got {limit[:40]!r})")
        out["limit"] = int(limit)
    meta = _one(request, "meta")
    if meta is not None:
        try:
            parsed = parse_json(meta, what="meta", max_bytes=MAX_META_QUERY, too_large_status=400)
        except BadJSON as exc:
            raise bad_request(f"{exc.message} (meta must be a JSON object with string values)") from None
        parsed = parse_meta_object(parsed, "meta")
        if parsed:
            out["meta"] = parsed
    # The spec (GET /pins): "when no filter is provided, only successful pins are
    # returned"; its filters are cid, name, status, before, after and meta ("pass the
    # `before` filter", "optional `after`, `cid`, `name`, `status`, or `meta` filters").
    # So status=pinned is implied only when none of them is in the query: `?name=x`
    # lists x in every state (the compliance suite's matchPin lists a just-created,
    # possibly still queued, pin by name alone and expects it). `limit` and `match`
    # shape a listing but filter nothing by themselves. Clients that page with
    # `before` pass their status filter on every page (Kubo and the suite do).
    filters = ("cid", "name", "status", "before", "after", "meta")
    if "statuses" not in out and not any(f in request.query for f in filters):
        out["statuses"] = ["pinned"]
    return out


# --- responses ---------------------------------------------------------------------------------------
class Delegates:
    """The engine's multiaddrs, cached briefly; the last known list if the engine is down.

    Never empty (the spec: minItems 1): when the engine has no address to give (the
    embedded engine has its own HTTP one, Kubo may list none or be down), the node's
    own HTTP address stands in, from [server] public_url (else host:port), as a
    multiaddr such as /ip4/127.0.0.1/tcp/8787/http/p2p/12D3KooW... (the peer ID is
    there because Kubo's client rejects a delegate without one: see peer_id.py)."""

    def __init__(self, ttl: float = DELEGATES_TTL, own: str | None = None):
        self.ttl = ttl
        self.own = own
        self.value: list[str] = []
        self.fetched = float("-inf")

    def _fallback(self, app: web.Application) -> list[str]:
        if self.own is None:
            config = app[CONFIG]
            server = config["server"]
            try:
                self.own = own_delegate(server, config.data_dir, keyring_for(config))
            except ValueError:  # a bad public_url: the listen address still names the node
                self.own = own_delegate({**server, "public_url": ""}, config.data_dir, keyring_for(config))
        return [self.own]

    async def get(self, app: web.Application) -> list[str]:
        if time.monotonic() - self.fetched < self.ttl:
            return self.value or self._fallback(app)
        try:
            addrs = await asyncio.wait_for(app[ENGINE].addresses(), DELEGATES_TIMEOUT)
        except (EngineError, asyncio.TimeoutError) as exc:
            log.debug("no fresh delegates: %r", exc)
            return self.value or self._fallback(app)
        seen: list[str] = []
        for a in addrs:
            if a not in seen:
                seen.append(a)
        self.value, self.fetched = seen[:MAX_ORIGINS], time.monotonic()
        return self.value or self._fallback(app)


def pin_status(row: dict, delegates: list[str]) -> dict:
    pin: dict = {"cid": row["cid"]}
    if row.get("name") is not None:
        pin["name"] = row["name"]
    pin["origins"] = row.get("origins") or []
    pin["meta"] = row.get("meta") or {}
    info = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in (row.get("info") or {}).items()}
    return {"requestid": row["requestid"], "status": row["status"], "created": row["created"], "pin": pin,
            "delegates": delegates, "info": info}


async def _read_body(request: web.Request) -> bytes:
    return await request.read()  # raises HTTPRequestEntityTooLarge over client_max_size


# --- handlers -------------------------------------------------------------------------------------------
@psa_handler
async def list_pins(request: web.Request, owner: str) -> web.Response:
    q = parse_list_query(request)
    store = request.app[STORE]
    count, rows = await store.run(
        lambda: store.list_pins(owner, cids=q.get("cids"), name=q.get("name"), match=q.get("match", "exact"),
                                statuses=q.get("statuses"), before=q.get("before"), after=q.get("after"),
                                meta=q.get("meta"), limit=q["limit"]))
    delegates = await request.app[DELEGATES].get(request.app)
    return web.json_response({"count": count, "results": [pin_status(r, delegates) for r in rows]})


@psa_handler
async def add_pin(request: web.Request, owner: str) -> web.Response:
    pin = parse_pin(await _read_body(request))
    store = request.app[STORE]
    row = await store.run(store.create_pin, owner, pin["cid"], pin["name"], pin["origins"], pin["meta"])
    request.app[PIN_WORKER].wake()
    delegates = await request.app[DELEGATES].get(request.app)
    return web.json_response(pin_status(row, delegates), status=202)


@psa_handler
async def get_pin(request: web.Request, owner: str) -> web.Response:
    rid = request.match_info["requestid"]
    store = request.app[STORE]
    row = await store.run(store.get_pin, owner, rid)
    if row is None:
        raise not_found(rid)
    delegates = await request.app[DELEGATES].get(request.app)
    return web.json_response(pin_status(row, delegates))


@psa_handler
async def replace_pin(request: web.Request, owner: str) -> web.Response:
    rid = request.match_info["requestid"]
    pin = parse_pin(await _read_body(request))
    store = request.app[STORE]
    result = await store.run(store.replace_pin, owner, rid, pin["cid"], pin["name"], pin["origins"], pin["meta"])
    if result is None:
        raise not_found(rid)
    old, new = result
    worker: PinWorker = request.app[PIN_WORKER]
    await worker.cancel(old["requestid"])
    for cid, key in worker.replaced(old, new):
        await worker.release(cid, key)
    worker.wake()
    delegates = await request.app[DELEGATES].get(request.app)
    return web.json_response(pin_status(new, delegates), status=202)


@psa_handler
async def delete_pin(request: web.Request, owner: str) -> web.Response:
    rid = request.match_info["requestid"]
    store = request.app[STORE]
    old = await store.run(store.delete_pin, owner, rid)
    if old is None:
        raise not_found(rid)
    worker: PinWorker = request.app[PIN_WORKER]
    await worker.cancel(rid)
    await worker.forget(rid)
    # unpins unless another record or request wants the content; engine down: retried later
    await worker.release(old["cid"], old["key"])
    return web.Response(status=202)


@web.middleware
async def psa_route_errors(request: web.Request, handler):
    """Unknown paths and methods under /psa answer in the PSA error shape too."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        if not _under_prefix(request.path):
            raise
        return failure(405, "METHOD_NOT_ALLOWED", f"{request.method} is not allowed on {request.path[:200]}",
                       {"Allow": ",".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        if not _under_prefix(request.path):
            raise
        return failure(404, "NOT_FOUND", f"no such endpoint: {request.path[:200]}")


def _under_prefix(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


# --- wiring ---------------------------------------------------------------------------------------------
def setup(app: web.Application) -> None:
    app[DELEGATES] = Delegates()

    app.router.add_get(f"{PREFIX}/pins", list_pins)
    app.router.add_post(f"{PREFIX}/pins", add_pin)
    app.router.add_get(f"{PREFIX}/pins/{{requestid}}", get_pin)
    app.router.add_post(f"{PREFIX}/pins/{{requestid}}", replace_pin)
    app.router.add_delete(f"{PREFIX}/pins/{{requestid}}", delete_pin)
    app.middlewares.append(psa_route_errors)  # innermost: sees the router's 404/405 first
