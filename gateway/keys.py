"""Typed application keys for the state the app shares between handlers."""
from __future__ import annotations

from aiohttp import web

from naming import Resolver
from storage.collector import GarbageCollector
from storage.engine import StorageEngine
from storage.metadata import MetadataStore
from storage.pin_worker import PinWorker
from storage.reconcile import Reconciler

from .cache import ResponseCache
from .config import Config
from .metrics import Metrics

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", MetadataStore)
ENGINE = web.AppKey("engine", StorageEngine)
METRICS = web.AppKey("metrics", Metrics)
CACHE = web.AppKey("cache", ResponseCache)
PIN_WORKER = web.AppKey("pin_worker", PinWorker)
COLLECTOR = web.AppKey("collector", GarbageCollector)
RECONCILED = web.AppKey("reconciled", Reconciler)
OPERATOR_KEY = web.AppKey("operator_key", str)
UPLOAD_SLOTS = web.AppKey("upload_slots", object)
SCRUBBER = web.AppKey("scrubber", object)  # storage.embedded.scrubber.Scrubber; None with the Kubo engine
LEADERSHIP = web.AppKey("leadership", object)  # gateway.workers.Leadership: does this process run the services?
METRICS_SHARE = web.AppKey("metrics_share", object)  # gateway.workers.MetricsShare, with several workers
NAMES = web.AppKey("names", Resolver)  # every name system (IPNS, DNSLink...) behind one resolver
IPNS = web.AppKey("ipns", object)  # naming.ipns.system.IpnsNameSystem (also in NAMES)
KEYSTORE = web.AppKey("keystore", object)  # naming.ipns.keystore.Keystore: the node's IPNS keys
REPUBLISHER = web.AppKey("republisher", object)  # naming.ipns.republisher.Republisher (leader only)
ENS = web.AppKey("ens", object)  # naming.ens.EnsNameSystem (also in NAMES)
