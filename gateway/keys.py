"""Typed application keys for the state the app shares between handlers."""
from __future__ import annotations

from aiohttp import web

from storage.engine import StorageEngine
from storage.metadata import MetadataStore
from storage.pin_worker import PinWorker

from .cache import ResponseCache
from .config import Config
from .metrics import Metrics

CONFIG = web.AppKey("config", Config)
STORE = web.AppKey("store", MetadataStore)
ENGINE = web.AppKey("engine", StorageEngine)
METRICS = web.AppKey("metrics", Metrics)
CACHE = web.AppKey("cache", ResponseCache)
PIN_WORKER = web.AppKey("pin_worker", PinWorker)
