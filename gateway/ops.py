"""Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI."""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from storage.engine import EngineError

from .keys import CACHE, ENGINE, METRICS, METRICS_SHARE, RECONCILED, SCRUBBER, STORE
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, PIN_STATUSES
from .openapi import openapi_document

log = logging.getLogger("hearth")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    checks = {"database": "ok", "engine": "ok"}
    status = 200
    try:
        store = request.app[STORE]
        await store.run(store.schema_version)
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"error: {exc}"
        status = 503
    try:
        await engine.check_ready()
    except EngineError as exc:
        checks["engine"] = f"unavailable: {exc}"
        status = 503
    body = {"status": "ready" if status == 200 else "not ready", "engine": engine.name, "checks": checks,
            "details": {"reconciliation": await _reconciliation(request.app)}}
    scrubber = request.app[SCRUBBER]
    if scrubber is not None:  # blocks found damaged are listed; they do not make the node unready
        body["details"]["scrub"] = scrubber.status()
    return web.json_response(body, status=status, headers={"Retry-After": "10"} if status != 200 else None)


async def _reconciliation(app: web.Application) -> dict:
    """The start-up reconciliation: its state, and records whose content is missing
    (the node still serves everything else, so they do not make it unready)."""
    state, report = await app[RECONCILED].shared_report()
    if report is None:
        return {"state": state}
    counts = report["counts"]
    return {"state": state, "missing_content": counts["missing"], "missing_cids": report["missing"],
            "removed_pins": counts["removed_pins"], "repinned": counts["repinned"], "requeued": counts["requeued"]}


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition 0.0.4 (see gateway/metrics.py for the registry)."""
    registry = request.app[METRICS]
    cache = request.app[CACHE]
    registry.cache_bytes.set(cache.size)
    registry.cache_hits.set_total(cache.hits)
    registry.cache_misses.set_total(cache.misses)
    store = request.app[STORE]
    try:
        counts = await store.run(store.pin_status_counts)
    except Exception as exc:  # noqa: BLE001 - metrics must not fail on a db hiccup: keep the last values
        log.warning("metrics: could not count pin requests: %r", exc)
    else:
        for status in PIN_STATUSES:
            registry.pin_requests.set(counts.get(status, 0), status=status)
    await registry.collect()
    share = request.app.get(METRICS_SHARE)
    others = await asyncio.to_thread(share.others) if share is not None else []  # the other workers'
    return web.Response(body=registry.render(others).encode(), headers={"Content-Type": METRICS_CONTENT_TYPE,
                                                                        "Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
