"""The application factory."""
from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiohttp import web

from outbound import GuardedClient
from storage.collector import GarbageCollector
from storage.engine import EngineError, StorageEngine
from storage.metadata import MetadataStore
from storage.pin_worker import PinWorker
from storage.reconcile import Reconciler

from . import content_api, operator_api, ops, psa
from .cache import ResponseCache
from .config import Config, ConfigError
from .cors import cors_middleware
from .errors import error_middleware, quiet_client_faults
from .ipfs.handler import handle_ipfs, handle_ipfs_options, handle_ipfs_root
from .data_dir import operator_key
from .keys import (CACHE, COLLECTOR, CONFIG, ENGINE, METRICS, OPERATOR_KEY, PIN_WORKER, RECONCILED, STORE,
                   UPLOAD_SLOTS)
from .metrics import Metrics, metrics_middleware
from .peer_id import node_peer_id, own_delegate

log = logging.getLogger("hearth")


def make_engine(config: Config, metrics: Metrics) -> StorageEngine:
    storage = config["storage"]
    local = config["gateway"]["serve"] == "local"
    if storage["engine"] == "kubo":
        from storage.kubo import KuboEngine

        return KuboEngine(storage["kubo_api"], timeout=storage["kubo_timeout"], offline_reads=local,
                          retrieval_timeout=config["gateway"]["retrieval_timeout"], observe=metrics.observe_engine,
                          gateway=storage["kubo_gateway"], pin_name=f"hearth-{node_peer_id(config.data_dir)}")
    from storage.embedded import EmbeddedEngine

    gateways = storage["fetch_gateways"]
    if not local and not gateways:
        log.warning('[gateway] serve = "network" but [storage] fetch_gateways is empty: the embedded engine '
                    "has nowhere to fetch from, missing content is 404")
    client = GuardedClient.from_settings(config["outbound"])
    for url in gateways:
        if url.lower().startswith("http://") and not client.allow_http:
            log.warning("fetch gateway %s is plain http, which [outbound] allow_http = false refuses", url)
    try:
        engine = EmbeddedEngine(config.data_dir, fetch_gateways=gateways, client=client, network_reads=not local,
                                retrieval_timeout=config["gateway"]["retrieval_timeout"],
                                public_addresses=[public_multiaddr(config)])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return _observed(engine, metrics)


def public_multiaddr(config: Config) -> str:
    """The node's own HTTP address as a PSA delegate multiaddr ([server] public_url, else
    host:port, with the node's peer ID: see peer_id.py)."""
    server = config["server"]
    try:
        return own_delegate(server, config.data_dir)
    except ValueError:
        raise ConfigError(f"[server] public_url must be an http(s) URL, got {server['public_url']!r}") from None


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


def register_service_metrics(app: web.Application) -> None:
    """/metrics for the background services and the upload cap, read at scrape time."""
    m = app[METRICS]
    gc_runs = m.counter("hearth_gc_runs_total", "Garbage collections run.")
    gc_removed = m.counter("hearth_gc_removed_blocks_total", "Blocks removed by garbage collection.")
    gc_last = m.gauge("hearth_gc_last_run_timestamp_seconds", "When the last garbage collection started (0: never).")
    store_bytes = m.gauge("hearth_store_bytes", "Bytes of blocks in the store (NaN if the engine cannot say now).")
    uploads = m.gauge("hearth_uploads_in_progress", "Uploads being received.")
    refused = m.counter("hearth_uploads_refused_total", "Uploads refused with 503 at [storage] max_concurrent_uploads.")
    missing = m.gauge("hearth_content_missing", "Live content records whose blocks the start-up reconciliation "
                                                "found missing.")

    async def collect(_m) -> None:
        collector = app[COLLECTOR]
        gc_runs.set_total(collector.runs)
        gc_removed.set_total(collector.removed_total)
        gc_last.set(collector.last.started_at if collector.last else 0)
        slots = app[UPLOAD_SLOTS]
        uploads.set(slots.active)
        refused.set_total(slots.refused)
        report = app[RECONCILED].report
        missing.set(report.counts["missing"] if report else 0)
        try:
            store_bytes.set(await asyncio.wait_for(app[ENGINE].repo_size(), 5))
        except (EngineError, asyncio.TimeoutError):
            store_bytes.set(float("nan"))

    m.add_collector(collect)


def create_app(config: Config, engine: StorageEngine | None = None, *, background: bool = True) -> web.Application:
    """background=False: no pin worker or scheduled gc (for CLI commands that set the
    app up to work on the data dir without serving)."""
    metrics = Metrics()
    quiet_client_faults()  # aiohttp logs malformed requests and disconnects as errors: debug lines instead
    app = web.Application(
        middlewares=[metrics_middleware(metrics), cors_middleware, error_middleware],
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
    storage = config["storage"]
    # collected content must not be served from memory either
    app[COLLECTOR] = GarbageCollector(app[ENGINE], max_bytes=storage["max_bytes"], watermark=storage["gc_watermark"],
                                      period=storage["gc_period"], on_collected=app[CACHE].clear)
    app[RECONCILED] = Reconciler(app[STORE], app[ENGINE], app[PIN_WORKER])
    app[OPERATOR_KEY] = operator_key(config.data_dir)

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

    async def reconcile_ctx(app: web.Application):
        # before the server accepts requests: no upload can race it
        await app[RECONCILED].start()
        yield
        await app[RECONCILED].stop()

    async def pin_worker_ctx(app: web.Application):
        await app[PIN_WORKER].start()
        yield
        await app[PIN_WORKER].stop()

    async def collector_ctx(app: web.Application):
        await app[COLLECTOR].start()
        yield
        await app[COLLECTOR].stop()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(engine_ctx)
    app.cleanup_ctx.append(reconcile_ctx)
    if background:
        app.cleanup_ctx.append(pin_worker_ctx)
        app.cleanup_ctx.append(collector_ctx)

    ops.setup(app)
    content_api.setup(app)
    operator_api.setup(app)
    app.router.add_get("/ipfs/", handle_ipfs_root)
    app.router.add_get("/ipfs/{cid}", handle_ipfs)
    app.router.add_get("/ipfs/{cid}/{path:.*}", handle_ipfs)
    app.router.add_route("OPTIONS", "/ipfs/{tail:.*}", handle_ipfs_options)
    psa.setup(app)
    register_service_metrics(app)
    return app
