"""The application factory."""
from __future__ import annotations

import asyncio
import functools
import logging
import time

from aiohttp import web

from identity.keyring import keyring_for
from outbound import GuardedClient
from naming import Resolver
from naming.dnslink import DNSLink
from naming.ens import EnsNameSystem
from storage.collector import GarbageCollector
from storage.engine import EngineError, StorageEngine
from storage.metadata import MetadataStore
from storage.pin_worker import PinWorker
from storage.reconcile import Reconciler

from chain.anchoring import Anchorer

from . import anchors_api, content_api, ens_api, names_api, operator_api, ops, origins, psa, routing_api
from .cache import ResponseCache, SharedGeneration
from .shared_slot import SharedSlot
from .config import Config, ConfigError
from .cors import cors_middleware
from .errors import error_middleware, quiet_client_faults
from .ipfs.handler import handle_ipfs, handle_ipfs_options, handle_ipfs_root, handle_ipns
from .data_dir import operator_key
from .keys import (CACHE, COLLECTOR, CONFIG, ENGINE, ENS, IPNS, KEYSTORE, LEADERSHIP, METRICS, METRICS_SHARE, NAMES,
                   OPERATOR_KEY, PIN_WORKER, RECONCILED, REPUBLISHER, SCRUBBER, STORE, UPLOAD_SLOTS)
from .metrics import Metrics, metrics_middleware
from .origins import OriginApplication, origin_answers
from .workers import Leadership, MetricsShare
from .peer_id import node_peer_id, own_delegate, peer_seed

log = logging.getLogger("hearth")


def make_engine(config: Config, metrics: Metrics, workers: int = 1) -> StorageEngine:
    storage = config["storage"]
    local = config["gateway"]["serve"] == "local"
    if storage["engine"] == "kubo":
        from storage.kubo import KuboEngine

        return KuboEngine(storage["kubo_api"], timeout=storage["kubo_timeout"], offline_reads=local,
                          retrieval_timeout=config["gateway"]["retrieval_timeout"], observe=metrics.observe_engine,
                          gateway=storage["kubo_gateway"], pin_name=f"hearth-{node_peer_id(config.data_dir, keyring_for(config))}")
    from storage.embedded import EmbeddedEngine
    from storage.embedded.importer import IMPORT_BUDGET

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
                                public_addresses=[public_multiaddr(config)],
                                verify_on_read=storage["verify_on_read"], shared_store=workers > 1,
                                # the node's upload buffers, shared out between its workers
                                import_budget=IMPORT_BUDGET // workers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return _observed(engine, metrics)


def public_multiaddr(config: Config) -> str:
    """The node's own HTTP address as a PSA delegate multiaddr ([server] public_url, else
    host:port, with the node's peer ID: see peer_id.py)."""
    server = config["server"]
    try:
        return own_delegate(server, config.data_dir, keyring_for(config))
    except ValueError:
        raise ConfigError(f"[server] public_url must be an http(s) URL, got {server['public_url']!r}") from None


def _observed(engine: StorageEngine, metrics: Metrics) -> StorageEngine:
    """Time the embedded engine's calls for /metrics (the Kubo engine times its RPCs itself).
    Not block reads: a few microseconds each from the page cache, many per request, and
    timing them cost more than they do."""
    for name in ("add", "pin", "unpin", "import_car", "gc"):
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


def make_scrubber(config: Config, engine: StorageEngine, on_corrupt=None):
    """The block-store scrubber of an embedded engine ([storage] scrub_rate); None for
    an engine without a local block store (Kubo)."""
    from storage.embedded.blockstore import Blockstore
    from storage.embedded.scrubber import Scrubber

    store = getattr(engine, "store", None)
    if not isinstance(store, Blockstore):
        return None
    return Scrubber(store, config.data_dir / "scrub.json", config["storage"]["scrub_rate"], on_corrupt=on_corrupt)


def register_scrub_metrics(app: web.Application) -> None:
    """/metrics for the scrubber (embedded engine only)."""
    scrubber = app[SCRUBBER]
    if scrubber is None:
        return
    m = app[METRICS]
    corrupt = m.counter("hearth_scrub_corrupt_blocks_total", "Stored blocks the scrubber found not matching their "
                                                             "hash (moved aside as *.corrupt).")
    blocks = m.counter("hearth_scrub_checked_blocks_total", "Stored blocks the scrubber re-hashed.")
    nbytes = m.counter("hearth_scrub_checked_bytes_total", "Bytes of stored blocks the scrubber re-hashed.")
    passes = m.counter("hearth_scrub_passes_total", "Complete scrubber passes over the block store.")

    def collect(_m) -> None:
        corrupt.set_total(scrubber.corrupt_total)
        blocks.set_total(scrubber.checked_blocks)
        nbytes.set_total(scrubber.checked_bytes)
        passes.set_total(scrubber.passes)

    m.add_collector(collect)


def register_service_metrics(app: web.Application) -> None:
    """/metrics for the background services and the upload cap, read at scrape time."""
    m = app[METRICS]
    # node-wide: the same in every worker (shared state), never summed across workers
    gc_runs = m.counter("hearth_gc_runs_total", "Garbage collections run.", node_wide=True)
    gc_removed = m.counter("hearth_gc_removed_blocks_total", "Blocks removed by garbage collection.", node_wide=True)
    gc_last = m.gauge("hearth_gc_last_run_timestamp_seconds", "When the last garbage collection started (0: never).",
                      node_wide=True)
    store_bytes = m.gauge("hearth_store_bytes", "Bytes of blocks in the store (NaN if the engine cannot say now).",
                          node_wide=True)
    missing = m.gauge("hearth_content_missing", "Live content records whose blocks the start-up reconciliation "
                                                "found missing.", node_wide=True)
    # per process: summed across workers
    uploads = m.gauge("hearth_uploads_in_progress", "Uploads being received.")
    refused = m.counter("hearth_uploads_refused_total", "Uploads refused with 503 at [storage] max_concurrent_uploads.")

    async def collect(_m) -> None:
        gc = await app[COLLECTOR].state()
        gc_runs.set_total(gc["runs"])
        gc_removed.set_total(gc["removed_total"])
        gc_last.set(gc["last"]["started_at"] if gc["last"] else 0)
        slots = app[UPLOAD_SLOTS]
        uploads.set(slots.active)
        refused.set_total(slots.refused)
        _state, report = await app[RECONCILED].shared_report()
        missing.set(report["counts"]["missing"] if report else 0)
        try:
            store_bytes.set(await asyncio.wait_for(app[ENGINE].repo_size(), 5))
        except (EngineError, asyncio.TimeoutError):
            store_bytes.set(float("nan"))

    m.add_collector(collect)


def setup_ipns(app: web.Application, config: Config) -> None:
    """IPNS: the name system (resolver and routing API), the node's keys, the republisher."""
    from naming.ipns.keystore import Keystore
    from naming.ipns.republisher import Republisher
    from naming.ipns.system import IpnsNameSystem

    ipns = config["ipns"]
    keyring = keyring_for(config)
    app[IPNS] = IpnsNameSystem(app[STORE], app[ENGINE])
    app[NAMES].add(app[IPNS])
    app[KEYSTORE] = Keystore(app[STORE], keyring, functools.partial(peer_seed, config.data_dir, keyring),
                             lifetime=ipns["lifetime"], ttl=ipns["ttl"])
    app[REPUBLISHER] = Republisher(app[STORE], app[KEYSTORE], poll=ipns["republish_poll"])
    app[KEYSTORE].on_published = app[REPUBLISHER].wake


def create_app(config: Config, engine: StorageEngine | None = None, *, background: bool = True,
               workers: int = 1) -> web.Application:
    """background=False: no background services but the start-up reconciliation (for
    CLI commands that set the app up to work on the data dir without serving).
    workers: how many server processes serve this node (gateway/workers.py)."""
    metrics = Metrics()
    quiet_client_faults()  # aiohttp logs malformed requests and disconnects as errors: debug lines instead
    app = OriginApplication(  # Host routing before URL dispatch: subdomain and DNSLink gateways (origins.py)
        middlewares=[metrics_middleware(metrics), cors_middleware, error_middleware, origin_answers],
        client_max_size=1024**2,  # only for bodies read whole (JSON); uploads stream
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    origins.setup(app, config)
    run_dir = config.data_dir / "run"  # what the node's processes share besides the data
    app[CACHE] = ResponseCache(config["gateway"]["cache_bytes"], config["gateway"]["cache_max_item"],
                               SharedGeneration(run_dir / "cache.generation"))
    app[ENGINE] = engine if engine is not None else make_engine(config, metrics, workers)
    app[STORE] = MetadataStore(config.data_dir / "hearth.sqlite")
    # unpinned content may be collected: stop serving it from memory
    # (with several workers, requests made in another one are seen by polling: every second)
    app[PIN_WORKER] = PinWorker(app[STORE], app[ENGINE], workers=config["pinning"]["workers"],
                                pin_timeout=config["pinning"]["pin_timeout"], on_released=app[CACHE].clear,
                                lock_dir=run_dir / "locks", **({"poll_interval": 1.0} if workers > 1 else {}))
    storage = config["storage"]
    # collected content must not be served from memory either, by any worker
    app[COLLECTOR] = GarbageCollector(app[ENGINE], max_bytes=storage["max_bytes"], watermark=storage["gc_watermark"],
                                      period=storage["gc_period"], on_collected=app[CACHE].invalidate_everywhere,
                                      state_path=run_dir / "gc.json")
    app[RECONCILED] = Reconciler(app[STORE], app[ENGINE], app[PIN_WORKER], report_path=run_dir / "reconcile.json")
    app[OPERATOR_KEY] = operator_key(config.data_dir)
    app[NAMES] = Resolver()  # name systems register here (IPNS, DNSLink...)
    # before DNSLink: `.eth` names are ENS names (unless ENS is off and [dns] resolvers serves "eth.")
    app[ENS] = EnsNameSystem(config["ens"], app[STORE], config["outbound"], SharedSlot(run_dir / "ens.generation"),
                             defer_when_off=any(k.strip(".").lower() == "eth" for k in config["dns"]["resolvers"]))
    app[NAMES].add(app[ENS])
    app[NAMES].add(DNSLink.from_config(config["dns"], config["outbound"]))
    setup_ipns(app, config)
    # a damaged block must not be served from memory either
    app[SCRUBBER] = make_scrubber(config, app[ENGINE], on_corrupt=lambda _report: app[CACHE].invalidate_everywhere())
    # on-chain anchoring of every stored CID (chain/anchoring.py): a leader service
    anchorer = Anchorer(app[STORE], config["chain"], config.data_dir, metrics=metrics) if background else None

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
        await app[RECONCILED].start()
        yield
        await app[RECONCILED].stop()

    async def services_ctx(app: web.Application):
        """The background services run in exactly one process of the node: this one,
        if it gets the lead (gateway/workers.py). The reconciliation comes first, and a
        process that leads from the start runs it before it accepts requests."""
        services = [app[RECONCILED], app[PIN_WORKER], app[COLLECTOR]] + ([app[SCRUBBER]] if app[SCRUBBER] else [])
        services.append(app[REPUBLISHER])  # keeps the node's own IPNS records from expiring
        services.append(anchorer)  # batches queued CIDs onto the chain

        async def start():
            for service in services:
                await service.start()

        async def stop():
            for service in reversed(services):
                await service.stop()

        app[LEADERSHIP] = Leadership(run_dir, start, stop)
        await app[LEADERSHIP].begin()
        yield
        await app[LEADERSHIP].end()

    async def metrics_share_ctx(app: web.Application):
        app[METRICS_SHARE] = MetricsShare(run_dir, app[METRICS])
        await app[METRICS_SHARE].start()
        yield
        await app[METRICS_SHARE].stop()

    async def names_ctx(app: web.Application):
        yield
        await app[NAMES].close()

    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(names_ctx)
    app.cleanup_ctx.append(engine_ctx)
    app.cleanup_ctx.append(services_ctx if background else reconcile_ctx)
    if workers > 1:
        app.cleanup_ctx.append(metrics_share_ctx)

    ops.setup(app)
    content_api.setup(app)
    operator_api.setup(app)
    app.router.add_get("/ipfs/", handle_ipfs_root)
    app.router.add_get("/ipns/", handle_ipfs_root)  # /ipns/?uri=ipns://... (the protocol-handler form)
    app.router.add_get("/ipfs/{cid}", handle_ipfs)
    app.router.add_get("/ipfs/{cid}/{path:.*}", handle_ipfs)
    app.router.add_route("OPTIONS", "/ipfs/{tail:.*}", handle_ipfs_options)
    app.router.add_get("/ipns/{name}", handle_ipns)
    app.router.add_get("/ipns/{name}/{path:.*}", handle_ipns)
    app.router.add_route("OPTIONS", "/ipns/{tail:.*}", handle_ipfs_options)
    psa.setup(app)
    routing_api.setup(app, node_peer_id(config.data_dir, keyring_for(config)))
    names_api.setup(app)
    ens_api.setup(app)
    anchors_api.setup(app, anchorer)
    register_service_metrics(app)
    register_scrub_metrics(app)
    anchors_api.register_metrics(app)
    return app
