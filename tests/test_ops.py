"""Health, readiness, metrics, OpenAPI, and a Kubo that dies mid-run."""
from __future__ import annotations

import asyncio

import pytest

from gateway.openapi import openapi_document
from tests.gateway_helpers import upload
from tests.support.kubo import KuboDaemon


async def test_healthz_readyz(node):
    assert (await node.get("/healthz")).status == 200
    resp = await node.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["checks"] == {"database": "ok", "engine": "ok"}


@pytest.mark.parametrize("engine", ["kubo", "embedded"])
async def test_metrics(node_factory, engine):
    node = await node_factory(engine)
    rec = await upload(node, b"metrics!", "m.txt")
    await node.get(f"/ipfs/{rec['cid']}")
    await node.get("/ipfs/not-a-cid")
    text = await (await node.get("/metrics")).text()
    assert 'hearth_http_requests_total{route="/ipfs/{cid}",method="GET",status="200"} 1' in text
    assert 'hearth_http_requests_total{route="/ipfs/{cid}",method="GET",status="400"} 1' in text
    assert 'hearth_http_requests_total{route="/api/v1/content",method="POST",status="201"} 1' in text
    assert "hearth_http_request_bytes_total 8" in text
    out = [l for l in text.splitlines() if l.startswith("hearth_http_response_bytes_total")][0]
    assert int(out.split()[1]) >= 8
    assert 'hearth_engine_call_seconds_count{op="add"} 1' in text


async def test_openapi_matches_routes(node):
    doc = await (await node.get("/openapi.json")).json()
    assert doc == openapi_document()
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops if method != "parameters"}
    routed = set()
    for route in node.app.router.routes():
        info = route.resource.get_info()
        path = (info.get("path") or info.get("formatter")).replace("{path:.*}", "{path}")
        if route.method == "OPTIONS" or (route.method == "HEAD" and not path.startswith(("/ipfs/{", "/ipns/{"))):
            continue  # CORS preflight and aiohttp's automatic HEAD routes
        routed.add((path, route.method.lower()))
    assert routed == documented, (routed ^ documented)


async def test_kubo_dies_and_comes_back(node_factory):
    daemon = KuboDaemon().start()
    try:
        client = await node_factory("kubo", storage__kubo_api=daemon.api_url, storage__kubo_timeout=5)
        rec = await upload(client, b"survives", "s.txt")
        daemon.kill()
        resp = await client.get("/readyz")
        assert resp.status == 503 and "Retry-After" in resp.headers
        assert (await resp.json())["checks"]["engine"].startswith("unavailable")
        client.app  # the cache may hold the small file: ask for something uncached
        resp = await client.get(f"/ipfs/{rec['cid']}?format=raw", headers={"Range": "bytes=0-1"})
        assert resp.status == 503, await resp.text()
        assert resp.headers["Retry-After"]
        assert (await resp.json())["error"]["code"] == "storage_unavailable"
        resp = await client.post("/api/v1/content?filename=x", data=b"while down", headers=client.auth)
        assert resp.status == 503 and resp.headers["Retry-After"]
        page = await (await client.get("/api/v1/content", headers=client.auth)).json()
        assert [r["name"] for r in page["results"]] == ["s.txt"]  # nothing half-recorded
        daemon.start()
        for _ in range(50):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/readyz")).status == 200
        resp = await client.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=0-2"})
        assert resp.status == 206 and await resp.read() == b"sur"
        resp = await client.post("/api/v1/content?filename=x", data=b"after", headers=client.auth)
        assert resp.status == 201
    finally:
        daemon.cleanup()
