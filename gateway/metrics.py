"""Prometheus metrics in the text exposition format 0.0.4: a small registry of
counters, gauges and histograms, and the node's own metrics on it (requests by
route and status, bytes in and out, storage-engine call latency, cache, pin
requests by status).

Registering a metric (anywhere that can reach `app[METRICS]`):

    conns = metrics.gauge("hearth_open_connections", "Open client connections.")
    conns.set(12)
    runs = metrics.counter("hearth_gc_runs_total", "Garbage collections run.", ["result"])
    runs.inc(result="ok")
    pause = metrics.histogram("hearth_gc_seconds", "Garbage collection duration.")
    pause.observe(0.2)

and for values read when /metrics is scraped (a database count, another object's
counter), a collector, sync or async, run before each render:

    async def collect(m: Metrics) -> None:
        conns.set(server.open_connections)
    metrics.add_collector(collect)

Rules the registry enforces so the output always parses: metric and label
names are Prometheus names; a counter's name ends in `_total`; a name is
registered once (registering it again with the same type and labels returns
the existing metric, anything else is a ValueError); every sample gives every
label. Label values and help texts are escaped on output.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import time
from typing import Any, Awaitable, Callable, Iterable

from aiohttp import web

from .errors import CLIENT_CLOSED

log = logging.getLogger("hearth.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30)
PIN_STATUSES = ("queued", "pinning", "pinned", "failed")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _format_value(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labels: Iterable[str] = ()):
        self.name, self.help, self.labelnames = name, help, tuple(labels)
        self._values: dict[tuple[str, ...], Any] = {}
        # node_wide: the same value in every worker (read from shared state: the database,
        # the store): not summed across workers, unlike per-process counts
        self.node_wide = False

    def dump(self) -> list:
        return [[list(k), v] for k, v in self._values.items()]

    def merged(self, dumps: list[list]) -> dict:
        """These values plus other workers' (dump() of the same metric): summed."""
        out = dict(self._values)
        for dump in dumps:
            for key, value in dump:
                key = tuple(key)
                out[key] = self._add(out.get(key), value)
        return out

    @staticmethod
    def _add(a, b):
        return b if a is None else a + b

    def _key(self, labels: dict[str, Any]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def _labels(self, key: tuple[str, ...], extra: str = "") -> str:
        pairs = [f'{n}="{_escape_label(v)}"' for n, v in zip(self.labelnames, key)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def value(self, **labels) -> Any:
        return self._values.get(self._key(labels), 0)

    def samples(self, values: dict | None = None) -> list[str]:
        values = self._values if values is None else values
        if not values and not self.labelnames:
            return [f"{self.name} 0"]
        return [f"{self.name}{self._labels(k)} {_format_value(v)}" for k, v in sorted(values.items())]

    def render(self, others: list[list] = ()) -> list[str]:
        values = self.merged(list(others)) if others and not self.node_wide else None
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}",
                *self.samples(values)]


class Counter(_Metric):
    """Only goes up. Its name ends in `_total`."""

    kind = "counter"

    def inc(self, amount: float = 1, **labels) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0) + amount

    def inc_key(self, key: tuple[str, ...], amount: float = 1) -> None:
        """inc() with the label values already in labelnames' order, as strings (the
        per-request path: no keyword checking)."""
        self._values[key] = self._values.get(key, 0) + amount

    def set_total(self, value: float, **labels) -> None:
        """Mirror a count kept elsewhere (it must itself only go up)."""
        self._values[self._key(labels)] = value


class Gauge(_Metric):
    """Goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels) -> None:
        self._values[self._key(labels)] = value

    def inc(self, amount: float = 1, **labels) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0) + amount

    def dec(self, amount: float = 1, **labels) -> None:
        self.inc(-amount, **labels)


class Histogram(_Metric):
    """Cumulative buckets (`le`, ending with +Inf), `_sum` and `_count`."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labels: Iterable[str] = (), buckets: Iterable[float] = DEFAULT_BUCKETS):
        super().__init__(name, help, labels)
        if "le" in self.labelnames:
            raise ValueError("a histogram cannot have a label named 'le'")
        self.buckets = tuple(sorted(float(b) for b in buckets if not math.isinf(b)))

    def observe(self, value: float, **labels) -> None:
        key = self._key(labels)
        entry = self._values.get(key)
        if entry is None:
            entry = self._values[key] = [0, 0.0, [0] * len(self.buckets)]
        entry[0] += 1
        entry[1] += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                entry[2][i] += 1  # each bucket counts every value <= its bound: cumulative

    def value(self, **labels) -> Any:
        """(count, sum) for these labels."""
        entry = self._values.get(self._key(labels))
        return (entry[0], entry[1]) if entry else (0, 0.0)

    @staticmethod
    def _add(a, b):
        if a is None:
            return [b[0], b[1], list(b[2])]
        return [a[0] + b[0], a[1] + b[1], [x + y for x, y in zip(a[2], b[2])]]

    def samples(self, values: dict | None = None) -> list[str]:
        out = []
        values = self._values if values is None else values
        items = sorted(values.items()) or ([((), [0, 0.0, [0] * len(self.buckets)])] if not self.labelnames else [])
        for key, (count, total, counts) in items:
            for b, n in zip(self.buckets, counts):
                le = 'le="' + _format_value(b) + '"'
                out.append(f"{self.name}_bucket{self._labels(key, le)} {n}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{self._labels(key, inf)} {count}")
            out.append(f"{self.name}_sum{self._labels(key)} {_format_value(total)}")
            out.append(f"{self.name}_count{self._labels(key)} {count}")
        return out


Collector = Callable[["Registry"], "Awaitable[None] | None"]


class Registry:
    def __init__(self):
        self._metrics: dict[str, _Metric] = {}
        self._collectors: list[Collector] = []

    def _register(self, cls, name: str, help: str, labels: Iterable[str], **kw) -> Any:
        labels = tuple(labels)
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for {name}")
        if cls is Counter and not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must be named *_total")
        if cls is not Counter and name.endswith("_total"):
            raise ValueError(f"{name!r}: only counters are named *_total")
        taken = {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"} if cls is Histogram else {name}
        existing = self._metrics.get(name)
        if existing is not None:
            if type(existing) is cls and existing.labelnames == labels:
                return existing
            raise ValueError(f"metric {name!r} is already registered as a {existing.kind} with labels "
                             f"{list(existing.labelnames)}")
        for other in self._metrics.values():
            clash = taken & ({other.name, f"{other.name}_bucket", f"{other.name}_sum", f"{other.name}_count"}
                             if isinstance(other, Histogram) else {other.name})
            if clash:
                raise ValueError(f"metric {name!r} clashes with {other.name!r}")
        metric = self._metrics[name] = cls(name, help, labels, **kw)
        return metric

    def counter(self, name: str, help: str, labels: Iterable[str] = (), node_wide: bool = False) -> Counter:
        counter = self._register(Counter, name, help, labels)
        counter.node_wide = node_wide
        return counter

    def gauge(self, name: str, help: str, labels: Iterable[str] = (), node_wide: bool = False) -> Gauge:
        gauge = self._register(Gauge, name, help, labels)
        gauge.node_wide = node_wide
        return gauge

    def histogram(self, name: str, help: str, labels: Iterable[str] = (), buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        return self._register(Histogram, name, help, labels, buckets=buckets)

    def get(self, name: str) -> _Metric | None:
        return self._metrics.get(name)

    def add_collector(self, fn: Collector) -> None:
        """fn(registry), sync or async, runs before each render (at scrape time)."""
        self._collectors.append(fn)

    async def collect(self) -> None:
        for fn in self._collectors:
            try:
                result = fn(self)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail on one source
                log.warning("metrics collector %s failed: %r", getattr(fn, "__qualname__", fn), exc)

    def render(self, others: list[dict] = ()) -> str:
        """The exposition; others: dump()s of other workers' registries, added in."""
        out: list[str] = []
        for metric in self._metrics.values():
            out += metric.render([d[metric.name] for d in others if metric.name in d])
        return "\n".join(out) + "\n"

    def dump(self) -> dict:
        """The per-process values (not node-wide ones), for another worker to add in."""
        return {m.name: m.dump() for m in self._metrics.values() if not m.node_wide}


class Metrics(Registry):
    """The node's registry, with the metrics every part of it uses."""

    def __init__(self):
        super().__init__()
        self.started = time.time()
        self.requests = self.counter("hearth_http_requests_total", "HTTP requests by route, method and status.",
                                     ["route", "method", "status"])
        self.request_bytes = self.counter("hearth_http_request_bytes_total", "Request body bytes received.")
        self.response_bytes = self.counter("hearth_http_response_bytes_total", "Response body bytes sent.")
        self.engine_calls = self.histogram("hearth_engine_call_seconds", "Storage engine call latency, by operation.",
                                           ["op"])
        self.cache_bytes = self.gauge("hearth_cache_bytes", "Bytes held by the in-memory response and block cache.")
        self.cache_hits = self.counter("hearth_cache_hits_total", "Cache lookups that found an entry.")
        self.cache_misses = self.counter("hearth_cache_misses_total", "Cache lookups that found nothing.")
        self.pin_requests = self.gauge("hearth_pin_requests", "Pinning Services API requests by status.", ["status"],
                                       node_wide=True)
        for status in PIN_STATUSES:
            self.pin_requests.set(0, status=status)
        self.start_time = self.gauge("hearth_start_time_seconds", "When the node started, in Unix seconds.",
                                     node_wide=True)
        self.start_time.set(self.started)

    # byte counts, kept as attributes for the code that adds to them (`metrics.bytes_in += n`)
    @property
    def bytes_in(self) -> int:
        return self.request_bytes.value()

    @bytes_in.setter
    def bytes_in(self, value: int) -> None:
        self.request_bytes.set_total(value)

    @property
    def bytes_out(self) -> int:
        return self.response_bytes.value()

    @bytes_out.setter
    def bytes_out(self, value: int) -> None:
        self.response_bytes.set_total(value)

    def observe_engine(self, op: str, seconds: float) -> None:
        self.engine_calls.observe(seconds, op=op)


def metrics_middleware(metrics: Metrics):
    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            if resp.prepared:
                metrics.bytes_out += resp.body_length
            elif isinstance(getattr(resp, "body", None), (bytes, bytearray)):
                metrics.bytes_out += len(resp.body)
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            status = CLIENT_CLOSED  # the client went away (nginx's 499)
            raise
        finally:
            metrics.requests.inc_key((route, request.method, str(status)))
            if request.content_length:
                metrics.bytes_in += request.content_length
    return middleware
