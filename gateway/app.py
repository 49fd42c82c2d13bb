"""The application factory."""
from __future__ import annotations

import functools
import logging
import time

from aiohttp import web

from storage.engine import StorageEngine
from storage.metadata import MetadataStore
from storage.pin_worker import PinWorker

from . import content_api, ops, psa
from .cache import ResponseCache
from .config import Config
from .errors import error_middleware
from .ipfs.handler import handle_ipfs, handle_ipfs_options, handle_ipfs_root
from .keys import CACHE, CONFIG, ENGINE, METRICS, PIN_WORKER, STORE
from .metrics import Metrics, metrics_middleware

log = logging.getLogger("hearth")


def make_engine(config: Config, metrics: Metrics) -> StorageEngine:
    storage = config["storage"]
    local = config["gateway"]["serve"] == "local"
    if storage["engine"] == "kubo":
        from storage.kubo import KuboEngine

        return KuboEngine(storage["kubo_api"], timeout=storage["kubo_timeout"], offline_reads=local,
                          retrieval_timeout=config["gateway"]["retrieval_timeout"], observe=metrics.observe_engine,
                          gateway=storage["kubo_gateway"])
    from storage.embedded import EmbeddedEngine

    return _observed(EmbeddedEngine(config.data_dir), metrics)


def _observed(engine: StorageEngine, metrics: Metrics) -> StorageEngine:
    """Time the embedded engine's calls for /metrics (the Kubo engine times its RPCs itself)."""
    for name in ("get_block", "has_block", "add", "pin", "unpin", "import_car", "gc"):
        method = getattr(engine, name)

        @functools.wraps(method)
        async def timed(*args, __method=method, __name=name, **kwargs):
            started = time.perf_counter()
            try:
                return await __method(*args, **kwargs)
            finally:
                metrics.observe_engine(__name, time.perf_counter() - started)

        setattr(engine, name, timed)
    return engine


def create_app(config: Config, engine: StorageEngine | None = None) -> web.Application:
    metrics = Metrics()
    app = web.Application(
        middlewares=[metrics_middleware(metrics), error_middleware],
        client_max_size=1024**2,  # only for bodies read whole (JSON); uploads stream
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    app[CACHE] = ResponseCache(config["gateway"]["cache_bytes"], config["gateway"]["cache_max_item"])
    app[ENGINE] = engine if engine is not None else make_engine(config, metrics)
    app[STORE] = MetadataStore(config.data_dir / "hearth.sqlite")
    # unpinned content may be collected: stop serving it from memory
    app[PIN_WORKER] = PinWorker(app[STORE], app[ENGINE], workers=config["pinning"]["workers"],
                                pin_timeout=config["pinning"]["pin_timeout"], on_released=app[CACHE].clear)

    async def store_ctx(app: web.Application):
        store = app[STORE]
        version = await store.run(store.migrate)
        log.debug("metadata store at schema version %s", version)
        yield
        store.close()

    async def engine_ctx(app: web.Application):
        await app[ENGINE].start()
        yield
        await app[ENGINE].close()

    async def pin_worker_ctx(app: web.Application):
        await app[PIN_WORKER].start()
        yield
        await app[PIN_WORKER].stop()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(engine_ctx)
    app.cleanup_ctx.append(pin_worker_ctx)

    ops.setup(app)
    content_api.setup(app)
    app.router.add_get("/ipfs/", handle_ipfs_root)
    app.router.add_get("/ipfs/{cid}", handle_ipfs)
    app.router.add_get("/ipfs/{cid}/{path:.*}", handle_ipfs)
    app.router.add_route("OPTIONS", "/ipfs/{tail:.*}", handle_ipfs_options)
    psa.setup(app)
    return app
