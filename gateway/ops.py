"""Operations endpoints: liveness, readiness, Prometheus metrics, OpenAPI."""
from __future__ import annotations

from aiohttp import web

from storage.engine import EngineError

from .keys import CACHE, ENGINE, METRICS, STORE
from .openapi import openapi_document


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
    body = {"status": "ready" if status == 200 else "not ready", "engine": engine.name, "checks": checks}
    return web.json_response(body, status=status, headers={"Retry-After": "10"} if status != 200 else None)


async def metrics(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    store = request.app[STORE]
    extra = {"hearth_cache_bytes": cache.size, "hearth_cache_hits_total": cache.hits,
             "hearth_cache_misses_total": cache.misses}
    try:
        for status, n in (await store.run(store.pin_status_counts)).items():
            extra[f'hearth_pin_requests{{status="{status}"}}'] = n
    except Exception:  # noqa: BLE001 - metrics must not fail on a db hiccup
        pass
    return web.Response(text=request.app[METRICS].render(extra), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
