"""Garbage collection an operator controls: `hearth gc` (against a live node and on
a stopped one), the operator endpoint and its auth, the schedule and the size
watermark; collected content is no longer served; `hearth repo stat`."""
from __future__ import annotations

import asyncio
import json
import os

import aiohttp
import pytest

from gateway.keys import COLLECTOR, STORE
from tests.gateway_helpers import upload
from tests.support.node import NodeProcess, hearth

ENGINES = ["embedded", "kubo"]


async def _get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}) as resp:
            return resp.status, await resp.read()


async def test_gc_cli_against_a_running_node(tmp_path):
    data = tmp_path / "data"
    node = NodeProcess(data).start()
    try:
        keep, drop = os.urandom(700_000), os.urandom(900_000)
        async with aiohttp.ClientSession(headers=node.auth) as session:
            async def put(body, name):
                async with session.post(f"{node.url}/api/v1/content?filename={name}", data=body) as resp:
                    assert resp.status == 201
                    return (await resp.json())["cid"]

            kept, dropped = await put(keep, "keep"), await put(drop, "drop")
            async with session.delete(f"{node.url}/api/v1/content/{dropped}") as resp:
                assert resp.status == 200
        assert (await _get(f"{node.url}/ipfs/{dropped}"))[0] == 200  # unpinned, not yet collected

        before = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(data)).stdout)
        assert before["content_records"] == {"live": 1, "removed": 1} and before["pins"] == 1
        out = hearth("gc", "--json", "--data-dir", str(data))
        result = json.loads(out.stdout)
        assert result["reason"] == "operator" and result["removed_blocks"] >= 4
        assert result["freed_bytes"] >= 900_000
        assert (await _get(f"{node.url}/ipfs/{dropped}"))[0] == 404  # collected: never served again
        status, body = await _get(f"{node.url}/ipfs/{kept}")
        assert status == 200 and body == keep
        after = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(data)).stdout)
        assert after["size_bytes"] == before["size_bytes"] - result["freed_bytes"]
        assert after["gc"]["runs"] == 1 and after["gc"]["last"]["removed_blocks"] == result["removed_blocks"]
        text = hearth("repo", "stat", "--data-dir", str(data)).stdout
        assert "content records 1 live, 1 removed" in text and "last: operator" in text
        assert "removed" in hearth("gc", "--data-dir", str(data)).stdout
        assert "gc (operator)" in node.log()
    finally:
        assert node.stop() == 0
    # with the node stopped, the CLI works on the data dir itself
    out = json.loads(hearth("gc", "--json", "--data-dir", str(data)).stdout)
    assert out["removed_blocks"] == 0
    assert "0 missing, 0 corrupt" in hearth("repo", "verify", "--data-dir", str(data)).stdout


async def test_operator_endpoint_auth(node_factory, tmp_path):
    node = await node_factory("embedded")
    assert (await node.post("/api/v1/operator/gc")).status == 401
    resp = await node.post("/api/v1/operator/gc", headers=node.auth)  # a user token
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    resp = await node.post("/api/v1/operator/gc", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    store = node.app[STORE]
    op = await store.run(store.create_token, "ops", "operator")
    resp = await node.post("/api/v1/operator/gc", headers={"Authorization": f"Bearer {op}"})
    assert resp.status == 200 and (await resp.json())["reason"] == "operator"
    key = (node.config.data_dir / "operator.key").read_text().strip()
    assert oct((node.config.data_dir / "operator.key").stat().st_mode & 0o777) == "0o600"
    resp = await node.get("/api/v1/operator/repo", headers={"Authorization": f"Bearer {key}"})
    body = await resp.json()
    assert resp.status == 200 and body["engine"] == "embedded"
    assert body["gc"]["runs"] == 1 and body["reconciliation"]["counts"]["missing"] == 0


@pytest.mark.parametrize("engine", ENGINES)
async def test_scheduled_gc_collects_deleted_content(node_factory, engine):
    node = await node_factory(engine, storage__gc_period=1)
    rec = await upload(node, os.urandom(600_000), "gone.bin")
    resp = await node.delete(f"/api/v1/content/{rec['cid']}", headers=node.auth)
    assert resp.status == 200
    collector = node.app[COLLECTOR]
    for _ in range(60):
        if collector.runs and collector.last.removed_blocks:
            break
        await asyncio.sleep(0.1)
    assert collector.last is not None and collector.last.reason == "schedule"
    assert (await node.get(f"/ipfs/{rec['cid']}")).status == 404


async def test_watermark_gc(node_factory):
    """max_bytes 1 MB at 50%: a store over 500 kB is collected right after the upload
    that took it there; pinned content alone over the mark does not make gc loop."""
    node = await node_factory("embedded", storage__max_bytes=1_000_000, storage__gc_watermark=50,
                              storage__gc_period=0)
    collector = node.app[COLLECTOR]
    first = await upload(node, os.urandom(300_000), "a")
    await asyncio.sleep(0.3)
    assert collector.runs == 0  # under the mark
    await node.delete(f"/api/v1/content/{first['cid']}", headers=node.auth)
    await upload(node, os.urandom(300_000), "b")  # 600 kB stored: over the mark
    for _ in range(50):
        if collector.runs:
            break
        await asyncio.sleep(0.05)
    assert collector.runs == 1 and collector.last.reason == "watermark"
    assert collector.last.size_after < 500_000 < collector.last.size_before
    assert (await node.get(f"/ipfs/{first['cid']}")).status == 404
    # pinned content over the mark: one gc, then none until the store grows again
    await upload(node, os.urandom(400_000), "c")
    await asyncio.sleep(0.3)
    runs = collector.runs
    assert runs == 2 and collector.last.removed_blocks == 0
    await upload(node, os.urandom(1000), "tiny")
    await asyncio.sleep(0.3)
    assert collector.runs == runs


@pytest.mark.parametrize("executor_threads", [None, 3])
async def test_gc_is_safe_during_uploads(node_factory, executor_threads):
    """Collections running back to back while uploads stream: every upload's content
    is whole afterwards. With a small default executor too: writes waiting for a gc
    must not hold its threads (that deadlocked: the write the gc waited for could not
    run its own threaded steps)."""
    if executor_threads:
        from concurrent.futures import ThreadPoolExecutor

        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(executor_threads))
    node = await node_factory("embedded")
    collector = node.app[COLLECTOR]
    stop = asyncio.Event()

    async def collect_forever():
        while not stop.is_set():
            await collector.collect()
            await asyncio.sleep(0)

    async def body(seed: bytes):
        for i in range(12):
            yield seed + i.to_bytes(4, "big") * 65536
            await asyncio.sleep(0.005)

    gc_task = asyncio.ensure_future(collect_forever())
    seeds = [os.urandom(8) for _ in range(6)]
    resps = await asyncio.gather(*(node.post(f"/api/v1/content?filename=f{i}", data=body(s), headers=node.auth)
                                   for i, s in enumerate(seeds)))
    stop.set()
    await gc_task
    assert collector.runs >= 2
    for seed, resp in zip(seeds, resps):
        assert resp.status == 201
        cid = (await resp.json())["cid"]
        got = await (await node.get(f"/ipfs/{cid}")).read()
        assert got == b"".join(seed + i.to_bytes(4, "big") * 65536 for i in range(12))
