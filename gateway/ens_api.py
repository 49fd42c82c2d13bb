"""ENS names (naming/ens.py) through the API:

    GET    /api/v1/ens/{name}?text=KEY&text=...&coin_type=N...   the name's records
           -> {"name", "normalized", "resolver", "address", "contenthash": {"protocol", "cid", "uri",
               "raw"} | null, "texts": {KEY: value|null}, "coins": {N: address|null}, "resolved_at",
               "ttl", "stale"}
    GET    /api/v1/ens/reverse/{address}  -> {"address", "name" (null unless it resolves forward to
           the address), "claimed", "forward_address", "verified"}
    DELETE /api/v1/operator/ens/{name}    forget the cached answer (operator): {"name", "purged"}

Reads need a bearer token, as the other /api/v1 reads. Metrics: hearth_ens_* (hits, misses,
RPC calls, RPC failures, stale answers served).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from aiohttp import web

from naming import InvalidName, NameNotFound, NameUnavailable, NamingError
from naming.ens import UnsupportedContenthash, decode_contenthash, normalize

from .auth import require_owner
from .errors import HTTPError, bad_request
from .ipfs.handler import naming_error, stale_warning
from .keys import CACHE, ENS, METRICS
from .operator_api import require_operator

MAX_TEXTS = 32


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _normal(name: str) -> str:
    try:
        return normalize(name)
    except InvalidName as exc:
        raise HTTPError(400, "invalid_name", str(exc)) from None


async def get_name(request: web.Request) -> web.Response:
    await require_owner(request)
    ens = request.app[ENS]
    name = request.match_info["name"]
    normal = _normal(name)
    if not ens.handles(normal):
        raise bad_request(f"{normal!r} is not an ENS name this node resolves (names ending in .eth)", "invalid_name")
    keys = request.query.getall("text", [])
    coins_asked = request.query.getall("coin_type", [])
    if len(keys) + len(coins_asked) > MAX_TEXTS:
        raise bad_request(f"at most {MAX_TEXTS} text keys and coin types per request", "invalid_parameter")
    try:
        coin_types = [int(c) for c in coins_asked]
    except ValueError:
        raise bad_request("coin_type must be an integer (ENSIP-9/11 coin type)", "invalid_parameter") from None
    if any(not 0 <= c < 2**256 for c in coin_types):
        raise bad_request("coin_type out of range", "invalid_parameter")
    try:
        answer, stale = await ens.answer(normal)
        contenthash = None
        if answer.contenthash:
            try:
                contenthash = decode_contenthash(answer.contenthash).as_json()
            except UnsupportedContenthash as exc:
                contenthash = {"protocol": exc.protocol, "cid": None, "uri": None,
                               "raw": "0x" + answer.contenthash.hex()}
        address = texts = coins = None
        if answer.resolver is not None:
            try:
                address = await ens.address(normal)
                texts = {k: await ens.text(normal, k) for k in keys}
                coins = {str(c): await ens.address(normal, c) for c in coin_types}
            except NameUnavailable:
                if not stale:
                    raise
                # the RPC is down and the name's last good answer is served: records unknown (null)
                texts = {k: None for k in keys}
                coins = {str(c): None for c in coin_types}
    except NameNotFound as exc:
        raise HTTPError(404, "name_not_found", str(exc)) from None
    except NamingError as exc:
        raise naming_error(exc) from None
    if answer.resolver is None:
        raise HTTPError(404, "no_resolver", f"ENS name {normal!r} has no resolver")
    ttl = max(0, int(answer.fetched_at + ens.cache_ttl - time.time()))
    out = {"name": name, "normalized": normal, "resolver": answer.resolver, "address": address,
           "contenthash": contenthash, "texts": texts or {}, "coins": coins or {},
           "resolved_at": _iso(answer.fetched_at), "ttl": ttl, "stale": stale}
    headers = {"Cache-Control": "no-store"}
    if stale:
        headers["Warning"] = '110 hearth "Response is Stale"'
    return web.json_response(out, headers=headers)


async def get_reverse(request: web.Request) -> web.Response:
    await require_owner(request)
    try:
        out = await request.app[ENS].reverse(request.match_info["address"])
    except InvalidName as exc:
        raise HTTPError(400, "invalid_address", str(exc)) from None
    except NamingError as exc:
        raise naming_error(exc) from None
    return web.json_response(out, headers={"Cache-Control": "no-store"})


async def purge(request: web.Request) -> web.Response:
    await require_operator(request)
    name = request.match_info["name"]
    normal = _normal(name)
    purged = await request.app[ENS].purge(normal)  # every worker's memory of it too (a shared generation)
    request.app[CACHE].invalidate_everywhere()  # responses kept for the name's TTL: dropped in every worker
    request.app[ENS].counts["purges"] = request.app[ENS].counts.get("purges", 0) + 1
    return web.json_response({"name": normal, "purged": purged})


def register_metrics(app: web.Application) -> None:
    m = app[METRICS]
    ens = app[ENS]
    counters = {
        "hits": m.counter("hearth_ens_cache_hits_total", "ENS names answered from the cache."),
        "misses": m.counter("hearth_ens_cache_misses_total", "ENS names not in the cache (or expired): looked up."),
        "rpc_calls": m.counter("hearth_ens_rpc_calls_total", "ENS JSON-RPC lookups made (one eth_call each)."),
        "rpc_failures": m.counter("hearth_ens_rpc_failures_total", "ENS JSON-RPC lookups that failed."),
        "stale": m.counter("hearth_ens_stale_total", "Stale ENS answers served while the RPC failed ([ens] stale_s)."),
    }

    def collect(_m) -> None:
        for key, counter in counters.items():
            counter.set_total(ens.counts.get(key, 0))

    m.add_collector(collect)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/ens/reverse/{address}", get_reverse)
    app.router.add_get("/api/v1/ens/{name}", get_name)
    app.router.add_delete("/api/v1/operator/ens/{name}", purge)
    app.on_response_prepare.append(stale_warning)
    register_metrics(app)
