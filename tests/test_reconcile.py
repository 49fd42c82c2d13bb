"""Start-up reconciliation of engine pins with the metadata store, and recovery from
a crash (SIGKILL) in the middle of concurrent uploads."""
from __future__ import annotations

import asyncio
import json
import os
import re

import aiohttp
import pytest

from gateway.keys import COLLECTOR, ENGINE, RECONCILED
from storage.cid import CID
from storage.embedded import EmbeddedEngine
from storage.engine import AddEntry, AddOptions
from tests.gateway_helpers import upload
from tests.psa_helpers import add, get, wait_status
from tests.support.node import NodeProcess, hearth

ENGINES = ["embedded", "kubo"]


async def _one(data: bytes):
    yield data


async def _engine_pins(engine) -> set[str]:
    return {str(p.cid) async for p in engine.pins()}


@pytest.mark.parametrize("engine", ENGINES)
async def test_orphan_pin_is_removed_and_collected(node_factory, engine, request):
    """A pin the metadata store knows nothing about (an upload's add pinned it, then
    the node died before writing the record) is removed; the next gc collects it.
    A pin someone else made in a shared Kubo is left alone."""
    node = await node_factory(engine)
    eng = node.app[ENGINE]
    kept = await upload(node, os.urandom(5000), "kept.bin")
    orphan = (await eng.add(_entries(os.urandom(300_000)), AddOptions())).root
    foreign = None
    if engine == "kubo":
        kubo = request.getfixturevalue("kubo")
        foreign = kubo.ipfs("add", "-Q", "--cid-version=1", input=os.urandom(3000) + b"operator's own").strip()
    assert str(orphan) in await _engine_pins(eng)

    reconciler = node.app[RECONCILED]
    assert await reconciler.run()
    report = reconciler.report
    assert report.removed_pins == [str(orphan)] and report.counts["removed_pins"] == 1
    pins = await _engine_pins(eng)
    assert str(orphan) not in pins and kept["cid"] in pins
    if foreign:
        assert foreign in request.getfixturevalue("kubo").ipfs("pin", "ls", "--type=recursive", foreign)
    result = await node.app[COLLECTOR].collect()
    assert result.removed_blocks >= 2
    assert (await node.get(f"/ipfs/{orphan}")).status == 404
    assert (await node.get(f"/ipfs/{kept['cid']}")).status == 200


def _entries(data: bytes, name: str = "f"):
    async def gen():
        yield AddEntry(name, _one(data))

    return gen()


@pytest.mark.parametrize("engine", ENGINES)
async def test_live_record_without_pin_is_pinned_again(node_factory, engine):
    node = await node_factory(engine)
    eng = node.app[ENGINE]
    rec = await upload(node, os.urandom(400_000), "r.bin")
    await eng.unpin(CID.parse(rec["cid"]))
    assert rec["cid"] not in await _engine_pins(eng)
    reconciler = node.app[RECONCILED]
    assert await reconciler.run()
    assert reconciler.report.repinned == [rec["cid"]]
    assert rec["cid"] in await _engine_pins(eng)
    await node.app[COLLECTOR].collect()
    assert (await node.get(f"/ipfs/{rec['cid']}")).status == 200


async def test_missing_content_is_reported(node_factory, tmp_path):
    """Blocks gone from under a live record: /readyz and `hearth repo verify` say so;
    a PSA request whose content went missing is queued again."""
    node = await node_factory("embedded")
    eng = node.app[ENGINE]
    lost = await upload(node, os.urandom(600_000), "lost.bin")
    fine = await upload(node, os.urandom(1000), "fine.bin")
    rid = (await add(node, lost["cid"], name="lost"))["requestid"]
    assert (await wait_status(node, rid))["status"] == "pinned"
    await eng.unpin(CID.parse(lost["cid"]))
    await eng.gc()  # the disk "loses" the blocks
    assert await node.app[RECONCILED].run()
    body = await (await node.get("/readyz")).json()
    details = body["details"]["reconciliation"]
    assert details["missing_content"] == 1 and details["missing_cids"] == [lost["cid"]]
    assert details["requeued"] == 1
    pin = await get(node, rid)
    assert pin["status"] in ("queued", "pinning", "failed")
    out = hearth("repo", "verify", "--data-dir", str(node.config.data_dir), check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"missing: {lost['cid']}" in out.stdout and "1 missing" in out.stdout
    assert (await node.get(f"/ipfs/{fine['cid']}")).status == 200


async def test_pin_without_record_left_by_a_crash_is_removed_at_start(tmp_path):
    """The exact state a crash between the engine's pin and the record leaves (made by
    hand on a stopped node's data dir): `hearth serve` removes the pin at start-up
    and logs it; `hearth gc` then collects its blocks."""
    data = tmp_path / "data"
    node = NodeProcess(data).start()
    node.stop()
    engine = EmbeddedEngine(data)
    await engine.start()
    orphan = (await engine.add(_entries(os.urandom(1_000_000)), AddOptions())).root
    await engine.close()
    node.start()
    try:
        assert re.search(rf"removed pin {orphan}: no content record", node.log())
        state = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(data)).stdout)
        assert state["pins"] == 0 and state["reconciliation"]["removed_pins"] == [str(orphan)]
        assert json.loads(hearth("gc", "--json", "--data-dir", str(data)).stdout)["removed_blocks"] >= 4
    finally:
        node.stop()


async def test_sigkill_during_concurrent_uploads(tmp_path):
    """SIGKILL while 12 uploads stream and others have finished; restart: every record
    has all its content, every pin has a record, and the next gc collects the blocks
    the interrupted uploads left behind."""
    data = tmp_path / "data"
    node = NodeProcess(data).start()
    done: list[str] = []
    body_parts = 64  # x 256 KiB = 16 MiB per slow upload

    async def slow_body(seed: bytes):
        for i in range(body_parts):
            yield seed + i.to_bytes(4, "big") + os.urandom(256 * 1024 - 12)
            await asyncio.sleep(0.05)

    async def finished(session, i):
        async with session.post(f"{node.url}/api/v1/content?filename=done{i}", data=os.urandom(700_000)) as resp:
            assert resp.status == 201
            done.append((await resp.json())["cid"])

    async def interrupted(session, i):
        try:
            async with session.post(f"{node.url}/api/v1/content?filename=slow{i}",
                                    data=slow_body(os.urandom(8))) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass

    async with aiohttp.ClientSession(headers=node.auth) as session:
        await asyncio.gather(*(finished(session, i) for i in range(4)))
        slow = [asyncio.ensure_future(interrupted(session, i)) for i in range(12)]
        more = [asyncio.ensure_future(finished(session, i + 10)) for i in range(4)]
        await asyncio.gather(*more)
        await asyncio.sleep(1.0)  # the slow ones are a few MiB in
        node.kill()
        await asyncio.gather(*slow)

    node.start()
    try:
        state = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(data)).stdout)
        live = state["content_records"]["live"]
        assert live >= len(done) == 8
        assert state["pins"] == live  # no pin without a record
        verify = hearth("repo", "verify", "--data-dir", str(data))
        assert "0 missing, 0 corrupt, 0 unreadable" in verify.stdout  # no record without content
        gc = json.loads(hearth("gc", "--json", "--data-dir", str(data)).stdout)
        assert gc["removed_blocks"] >= 12  # the interrupted uploads' leaves
        blocks = int(re.search(r"(\d+) blocks;", hearth("repo", "verify", "--data-dir", str(data)).stdout).group(1))
        after = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(data)).stdout)
        assert after["blocks"] == blocks  # only the blocks of live content are left
        async with aiohttp.ClientSession() as session:
            for cid in done:
                async with session.get(f"{node.url}/ipfs/{cid}") as resp:
                    assert resp.status == 200 and len(await resp.read()) == 700_000
    finally:
        node.stop()
