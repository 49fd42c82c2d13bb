"""/api/v1/operator: what an operator runs against a live node (`hearth gc` and
`hearth repo stat` call these when a node owns the data dir).

    POST /api/v1/operator/gc     collect garbage now        -> 200 the gc result
    GET  /api/v1/operator/repo   size, blocks, pins, records, gc, reconciliation and scrub state

Bearer token: an operator token (`hearth token create --operator`) or the data
dir's operator.key.
"""
from __future__ import annotations

import hmac

from aiohttp import web

from .auth import bearer_token
from .errors import HTTPError
from .keys import COLLECTOR, ENGINE, OPERATOR_KEY, RECONCILED, SCRUBBER, STORE


async def require_operator(request: web.Request) -> None:
    token = bearer_token(request)
    headers = {"WWW-Authenticate": 'Bearer realm="hearth"'}
    if token is None:
        raise HTTPError(401, "unauthorized", "an operator token is required (Authorization: Bearer <token>)", headers)
    if hmac.compare_digest(token.encode(), request.app[OPERATOR_KEY].encode()):
        return
    store = request.app[STORE]
    if await store.run(store.is_operator_token, token):
        return
    if await store.run(store.check_token, token):
        raise HTTPError(403, "forbidden", "this token is not an operator token (hearth token create --operator)")
    raise HTTPError(401, "unauthorized", "the bearer token is invalid or revoked", headers)


async def run_gc(request: web.Request) -> web.Response:
    await require_operator(request)
    result = await request.app[COLLECTOR].collect("operator")
    return web.json_response(result.as_json())


def _store_counts(store) -> dict:
    db = store.db
    content = dict(db.execute("SELECT status, COUNT(*) FROM content GROUP BY status").fetchall())
    pins = dict(db.execute("SELECT status, COUNT(*) FROM pins GROUP BY status").fetchall())
    return {"content_records": {"live": content.get("pinned", 0), "removed": content.get("removed", 0)},
            "pin_requests": {s: pins.get(s, 0) for s in ("queued", "pinning", "pinned", "failed")}}


async def repo_state(app: web.Application) -> dict:
    """What `hearth repo stat` prints (also used by the CLI without a server)."""
    stat = await app[ENGINE].repo_stat()
    store = app[STORE]
    collector = app[COLLECTOR]
    gc = await collector.state()
    state, report = await app[RECONCILED].shared_report()
    return {
        "engine": app[ENGINE].name,
        "size_bytes": stat.size_bytes,
        "blocks": stat.blocks,
        "pins": stat.pins,
        **(await store.run(_store_counts, store)),
        "gc": {"max_bytes": collector.max_bytes, "watermark_percent": collector.watermark,
               "threshold_bytes": collector.threshold, "period_s": collector.period, "runs": gc["runs"],
               "last": gc["last"]},
        "reconciliation": report if report is not None else {"state": state},
        **({"scrub": app[SCRUBBER].status()} if app[SCRUBBER] is not None else {}),
    }


async def repo(request: web.Request) -> web.Response:
    await require_operator(request)
    return web.json_response(await repo_state(request.app))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/operator/gc", run_gc)
    app.router.add_get("/api/v1/operator/repo", repo)
