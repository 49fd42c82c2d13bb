"""/metrics is valid Prometheus text exposition 0.0.4, checked whole by the
prometheus_client parser, after uploads, gateway hits, pin requests in every
state and errors; and the registry that other parts of the node register on."""
from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.keys import METRICS, PIN_WORKER, STORE
from gateway.metrics import Metrics, Registry
from storage.cid import CID
from tests.gateway_helpers import upload


def parse(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def check_exposition(text: str) -> None:
    """What the parser tolerates but the format forbids."""
    helps, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps, f"two HELP lines for {name}"
            helps[name] = line
        elif line.startswith("# TYPE "):
            parts = line.split()
            assert len(parts) == 4 and re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", parts[2]), f"bad TYPE line {line!r}"
            assert parts[2] not in types, f"two TYPE lines for {parts[2]}"
            types[parts[2]] = parts[3]
        else:
            assert line and not line.startswith("#"), repr(line)
    for name, kind in types.items():
        assert (kind == "counter") == name.endswith("_total"), f"{name} is a {kind}"
    assert text.endswith("\n")


@pytest.mark.parametrize("engine", ["kubo", "embedded"])
async def test_metrics_parse_whole(node_factory, engine):
    node = await node_factory(engine)
    await node.app[PIN_WORKER].stop()  # pin requests stay in the states set below
    rec = await upload(node, b"metrics!", "m.txt")
    assert (await node.get(f"/ipfs/{rec['cid']}")).status == 200
    assert (await node.get(f"/ipfs/{rec['cid']}")).status == 200  # from the cache
    assert (await node.get("/ipfs/not-a-cid")).status == 400
    assert (await node.get("/api/v1/content?cursor=@@", headers=node.auth)).status == 400
    assert (await node.get("/nope")).status == 404
    assert (await node.post("/psa/pins", data=b"[[[", headers=node.auth)).status == 400
    store = node.app[STORE]
    for i, status in enumerate(["queued", "pinning", "pinned", "failed", "failed"]):
        row = await store.run(store.create_pin, "tester", CID.from_digest(b"m%d" % i).encode(), f"p{i}", [], {})
        await store.run(store.set_pin_status, row["requestid"], status, {})
    # a label value that needs escaping
    node.app[METRICS].counter("hearth_test_events_total", "Test \\ events\nwith a newline.", ["kind"]).inc(
        kind='quote " backslash \\ newline \n end')

    resp = await node.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await resp.text()
    check_exposition(text)
    families = parse(text)

    requests = families["hearth_http_requests"]
    assert requests.type == "counter"
    samples = {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value for s in requests.samples}
    assert samples[("/ipfs/{cid}", "GET", "200")] == 2
    assert samples[("/ipfs/{cid}", "GET", "400")] == 1
    assert samples[("/api/v1/content", "POST", "201")] == 1
    assert samples[("/api/v1/content", "GET", "400")] == 1
    assert samples[("/psa/pins", "POST", "400")] == 1
    assert samples[("unmatched", "GET", "404")] == 1

    pins = families["hearth_pin_requests"]
    assert pins.type == "gauge"
    assert {s.labels["status"]: s.value for s in pins.samples} == {"queued": 1, "pinning": 1, "pinned": 1, "failed": 2}

    engine_calls = families["hearth_engine_call_seconds"]
    assert engine_calls.type == "histogram"
    add = [s for s in engine_calls.samples if s.labels.get("op") == "add"]
    buckets = [s for s in add if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf"
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    assert {s.name for s in add} == {"hearth_engine_call_seconds_bucket", "hearth_engine_call_seconds_sum",
                                     "hearth_engine_call_seconds_count"}
    assert next(s.value for s in add if s.name.endswith("_count")) == counts[-1] >= 1

    assert families["hearth_http_request_bytes"].type == "counter"
    assert families["hearth_http_request_bytes"].samples[0].value >= 8
    assert families["hearth_cache_hits"].type == "counter" and families["hearth_cache_hits"].samples[0].value >= 1
    assert families["hearth_cache_misses"].type == "counter"
    assert families["hearth_cache_bytes"].type == "gauge"
    events = families["hearth_test_events"]
    assert events.documentation == "Test \\ events\nwith a newline."
    assert events.samples[0].labels["kind"] == 'quote " backslash \\ newline \n end'


async def test_pin_gauge_has_every_status_at_zero(node):
    families = parse(await (await node.get("/metrics")).text())
    assert {s.labels["status"]: s.value for s in families["hearth_pin_requests"].samples} == \
        {"queued": 0, "pinning": 0, "pinned": 0, "failed": 0}


async def test_collectors_run_at_scrape(node):
    metrics = node.app[METRICS]
    conns = metrics.gauge("hearth_open_connections", "Open client connections.")
    calls = []

    async def collect(m):
        calls.append(1)
        conns.set(7)

    def broken(m):
        raise RuntimeError("a collector that fails must not fail the scrape")

    metrics.add_collector(collect)
    metrics.add_collector(broken)
    text = await (await node.get("/metrics")).text()
    assert parse(text)["hearth_open_connections"].samples[0].value == 7 and calls == [1]


def test_registry_rules():
    r = Registry()
    c = r.counter("x_total", "X.", ["a"])
    assert r.counter("x_total", "X.", ["a"]) is c  # idempotent
    for bad in [lambda: r.counter("x", "no _total"), lambda: r.gauge("y_total", "only counters"),
                lambda: r.gauge("x_total", "taken"), lambda: r.counter("x_total", "other labels", ["b"]),
                lambda: r.gauge("bad-name", "h"), lambda: r.gauge("z", "h", ["__reserved"]),
                lambda: r.histogram("h", "h", ["le"])]:
        with pytest.raises(ValueError):
            bad()
    r.histogram("lat_seconds", "h")
    with pytest.raises(ValueError):
        r.gauge("lat_seconds_count", "clashes with the histogram's series")
    with pytest.raises(ValueError):
        c.inc(-1, a="x")
    with pytest.raises(ValueError):
        c.inc(b="missing label a")
    g = r.gauge("g", "G.")
    g.set(2.5)
    g.dec(0.5)
    assert g.value() == 2
    text = r.render()
    check_exposition(text)
    assert {f.name for f in text_string_to_metric_families(text)} == {"x", "lat_seconds", "g"}


def test_metrics_defaults_parse():
    text = Metrics().render()
    check_exposition(text)
    assert "hearth_pin_requests" in parse(text)
