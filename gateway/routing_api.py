"""The Delegated Routing V1 HTTP API (specs.ipfs.tech/routing/http-routing-v1), the
parts an HTTP-only IPFS client needs from this node:

    GET  /routing/v1/ipns/{name}       the best valid record (application/vnd.ipfs.ipns-record)
    PUT  /routing/v1/ipns/{name}       keep a record: the signature is the authorization
    GET  /routing/v1/providers/{cid}   this node itself, as an HTTP gateway provider, for
                                       content it has (404 otherwise)

A PUT is checked before anything is kept: Content-Type, the body at most 10 KiB
(read no further), every rule of the record spec (400 naming the rule), and an
older record never replaces a newer one (400, rule `sequence`). PUTs are limited
per client address (`[ipns] put_per_minute`, per worker; 429 + Retry-After).
These routes are only served on the node's API origin, never on a content origin
(gateway/origins.py).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict

from aiohttp import web

from naming import NameNotFound, NameUnavailable
from outbound.multiaddr import node_multiaddr
from naming.ipns import record as records
from naming.ipns import store as db
from naming.ipns.record import MAX_RECORD_SIZE, RecordInvalid
from naming.ipns.system import IpnsNameSystem, parse_name
from naming.resolver import InvalidName
from storage.cid import CID, InvalidCID

from .errors import HTTPError, bad_request
from .keys import CONFIG, ENGINE, IPNS, STORE

IPNS_RECORD = "application/vnd.ipfs.ipns-record"
NDJSON = "application/x-ndjson"
TRANSPORT = "transport-ipfs-gateway-http"
NOT_FOUND_MAX_AGE = 60  # the spec's default for 404s and records without a TTL


def record_error(exc: RecordInvalid) -> HTTPError:
    return HTTPError(400, f"ipns_{exc.rule}", str(exc))


def _name(request: web.Request):
    try:
        return parse_name(request.match_info["name"])
    except InvalidName as exc:
        raise bad_request(str(exc), "invalid_name") from None


def record_headers(name, rec: records.Record) -> dict[str, str]:
    ttl = rec.ttl_seconds or NOT_FOUND_MAX_AGE
    max_age = int(max(0.0, min(ttl, rec.seconds_left())))
    return {"Content-Type": IPNS_RECORD, "Cache-Control": f"public, max-age={max_age}",
            "Etag": '"' + hashlib.sha256(rec.raw).hexdigest()[:32] + '"', "X-Content-Type-Options": "nosniff",
            "Vary": "Accept"}


async def get_ipns(request: web.Request) -> web.StreamResponse:
    accept = request.headers.get("Accept", "")
    if IPNS_RECORD not in accept and "*/*" not in accept:
        raise HTTPError(406, "not_acceptable", f"ask with Accept: {IPNS_RECORD}")
    name = _name(request)
    system: IpnsNameSystem = request.app[IPNS]
    try:
        rec = await system.lookup(name)
    except NameNotFound as exc:
        raise HTTPError(404, "name_not_found", str(exc), {"Cache-Control": f"public, max-age={NOT_FOUND_MAX_AGE}"})
    except NameUnavailable as exc:
        raise HTTPError(502, "name_unavailable", str(exc), {"Retry-After": "10"}) from None
    headers = record_headers(name, rec)
    if request.headers.get("If-None-Match") == headers["Etag"]:
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    return web.Response(body=rec.raw, headers=headers)


class RateLimit:
    """A token bucket per client address: `per_minute` records a minute, as a burst too."""

    def __init__(self, per_minute: int, max_clients: int = 10000):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> float:
        """0 if the client may go on now, else the seconds until it may."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


PUT_LIMIT = web.AppKey("routing_put_limit", RateLimit)


async def _read_record(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_RECORD_SIZE:
        raise record_error(RecordInvalid("size", f"the record is {length} bytes, over the {MAX_RECORD_SIZE}-byte "
                                                 "limit"))
    body = bytearray()
    while len(body) <= MAX_RECORD_SIZE:
        chunk = await request.content.read(MAX_RECORD_SIZE + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > MAX_RECORD_SIZE:
        raise record_error(RecordInvalid("size", f"the record is over the {MAX_RECORD_SIZE}-byte limit"))
    return bytes(body)


async def put_ipns(request: web.Request) -> web.Response:
    if IPNS_RECORD not in request.headers.get("Content-Type", ""):
        raise HTTPError(406, "not_acceptable", f"send the record with Content-Type: {IPNS_RECORD}")
    name = _name(request)
    wait = request.app[PUT_LIMIT].take(request.remote or "")
    if wait > 0:
        raise HTTPError(429, "rate_limited", "too many records from this address; retry later",
                        {"Retry-After": str(max(1, int(wait + 0.999)))})
    raw = await _read_record(request)
    try:
        rec = records.verify(raw, name)
    except RecordInvalid as exc:
        raise record_error(exc) from None
    store = request.app[STORE]
    try:
        outcome = await store.run(db.offer_record, store, str(name), rec, "routing")
    except RecordInvalid as exc:
        raise record_error(exc) from None
    if outcome == "stored":
        request.app[IPNS].changed(str(name))  # cached resolutions, in every worker
    return web.json_response({"Name": str(name), "Sequence": rec.sequence, "Outcome": outcome})


async def get_providers(request: web.Request) -> web.StreamResponse:
    text = request.match_info["cid"]
    try:
        cid = CID.parse(text)
    except (InvalidCID, ValueError) as exc:
        raise bad_request(f"invalid CID {text[:100]!r}: {exc}", "invalid_cid") from None
    if not await request.app[ENGINE].has_block(cid):
        raise HTTPError(404, "not_found", f"this node has no providers for {cid}: it does not have it")
    provider = request.app[SELF_PROVIDER]
    if NDJSON in request.headers.get("Accept", ""):
        return web.Response(body=json.dumps(provider).encode() + b"\n", content_type=NDJSON)
    return web.json_response({"Providers": [provider]})


SELF_PROVIDER = web.AppKey("routing_self_provider", dict)


def self_provider(config, peer_id: str) -> dict:
    """This node as a peer record: its peer ID, its public URL as a multiaddr, and the
    trustless-gateway transport (what HTTP-only clients fetch blocks with)."""
    server = config["server"]
    try:
        addr = node_multiaddr(server["public_url"], server["host"], server["port"])
    except ValueError:  # a bad public_url (create_app reports it): the listen address still reaches the node
        addr = node_multiaddr("", server["host"], server["port"])
    return {"Schema": "peer", "ID": peer_id, "Addrs": [addr], "Protocols": [TRANSPORT]}


def setup(app: web.Application, peer_id: str) -> None:
    app[PUT_LIMIT] = RateLimit(app[CONFIG]["ipns"]["put_per_minute"])
    app[SELF_PROVIDER] = self_provider(app[CONFIG], peer_id)
    app.router.add_get("/routing/v1/ipns/{name}", get_ipns)
    app.router.add_put("/routing/v1/ipns/{name}", put_ipns)
    app.router.add_get("/routing/v1/providers/{cid}", get_providers)
