"""Several server processes for one node (`[server] workers`): they share the port
and the data, exactly one runs the background services (another takes over when
it dies), /metrics adds every worker's counts, a gc in one is safe for uploads in
another and empties every worker's cache, SIGTERM drains them all."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time

import aiohttp
import psutil

from tests.psa_helpers import random_cid
from tests.support.node import NodeProcess, hearth

TWO = {"HEARTH_SERVER_WORKERS": "2"}


def leader(data_dir) -> int | None:
    """The pid of the worker that runs the background services (it writes it in the lock)."""
    try:
        return int((data_dir / "run" / "leader.lock").read_text())
    except (FileNotFoundError, ValueError):
        return None


async def fresh_get(url: str) -> tuple[int, bytes]:
    """A request on a new connection (so the kernel may hand it to either worker)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.get(url) as resp:
            return resp.status, await resp.read()


async def wait_for(predicate, timeout: float = 10.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def test_workers_share_the_port_and_add_up_their_metrics(tmp_path):
    node = NodeProcess(tmp_path / "data", env=TWO).start()
    try:
        assert "2 workers" in node.log()
        for _ in range(60):
            assert (await fresh_get(node.url + "/healthz"))[0] == 200
        await asyncio.sleep(1.5)  # every worker publishes its counts each second
        shares = list((tmp_path / "data" / "run" / "metrics").glob("*.json"))
        assert len(shares) == 2
        served = []
        for share in shares:
            values = json.loads(share.read_text())["hearth_http_requests_total"]
            served.append(sum(v for (route, method, status), v in values if route == "/healthz"))
        assert sum(served) >= 60 and all(served), served  # both workers took connections (+ start-up probes)
        status, body = await fresh_get(node.url + "/metrics")
        total = re.search(rb'hearth_http_requests_total\{route="/healthz",method="GET",status="200"\} (\d+)', body)
        assert status == 200 and int(total.group(1)) == sum(served)
        assert leader(tmp_path / "data") in [p.pid for p in psutil.Process(node.proc.pid).children()]
    finally:
        assert node.stop() == 0


async def test_one_leader_and_another_takes_over(tmp_path):
    """The leader worker is killed: the supervisor starts it again, another worker
    runs the services within seconds, and pin requests keep being worked."""
    node = NodeProcess(tmp_path / "data", env=dict(TWO, HEARTH_PINNING_PIN_TIMEOUT="2")).start()
    try:
        data = tmp_path / "data"
        first = leader(data)
        workers = [p.pid for p in psutil.Process(node.proc.pid).children()]
        assert first in workers and len(workers) == 2
        os.kill(first, signal.SIGKILL)
        second = await wait_for(lambda: leader(data) not in (None, first) and leader(data))
        # the other worker (within its 2 s retry) or the one started in place of the dead one
        assert second in [p.pid for p in psutil.Process(node.proc.pid).children()]
        assert re.search(r"worker \d \(pid %d\) exited" % first, node.log())
        async with aiohttp.ClientSession(headers=node.auth) as session:
            async with session.post(node.url + "/psa/pins", json={"cid": random_cid()}) as resp:
                rid = (await resp.json())["requestid"]
            for _ in range(100):  # nobody has it: the new leader takes it up, then gives up after pin_timeout
                async with session.get(f"{node.url}/psa/pins/{rid}") as resp:
                    status = (await resp.json())["status"]
                if status == "failed":
                    break
                await asyncio.sleep(0.1)
            assert status == "failed"
    finally:
        assert node.stop() == 0


async def test_gc_in_one_worker_uploads_in_another_and_every_cache(tmp_path):
    data = tmp_path / "data"
    node = NodeProcess(data, env=TWO).start()
    try:
        small = os.urandom(3000)
        async with aiohttp.ClientSession(headers=node.auth) as session:
            async with session.post(node.url + "/api/v1/content?filename=s", data=small) as resp:
                doomed = (await resp.json())["cid"]
            for _ in range(20):  # both workers cache it
                assert (await fresh_get(f"{node.url}/ipfs/{doomed}")) == (200, small)
            async with session.delete(f"{node.url}/api/v1/content/{doomed}") as resp:
                assert resp.status == 200

            seed = os.urandom(8)

            async def slow_body():
                for i in range(40):
                    yield seed + i.to_bytes(4, "big") * 65536
                    await asyncio.sleep(0.03)

            upload = asyncio.ensure_future(session.post(node.url + "/api/v1/content?filename=big", data=slow_body()))
            await asyncio.sleep(0.3)
            gcs = []
            for _ in range(3):  # (in a thread: the upload's body comes from this event loop)
                out = await asyncio.to_thread(hearth, "gc", "--json", "--data-dir", str(data))
                gcs.append(json.loads(out.stdout))
            resp = await upload
            assert resp.status == 201
            cid = (await resp.json())["cid"]
        assert sum(g["removed_blocks"] for g in gcs) >= 1
        expected = b"".join(seed + i.to_bytes(4, "big") * 65536 for i in range(40))
        for _ in range(10):
            assert (await fresh_get(f"{node.url}/ipfs/{cid}")) == (200, expected)
            assert (await fresh_get(f"{node.url}/ipfs/{doomed}"))[0] == 404  # no worker serves it from memory
        assert "0 missing, 0 corrupt" in hearth("repo", "verify", "--data-dir", str(data)).stdout
    finally:
        assert node.stop() == 0


async def test_sigterm_drains_every_worker(tmp_path):
    node = NodeProcess(tmp_path / "data", env=TWO).start()
    pids = [p.pid for p in psutil.Process(node.proc.pid).children()]
    assert len(pids) == 2

    async def slow_body():
        for i in range(20):
            yield os.urandom(65536)
            await asyncio.sleep(0.05)

    async with aiohttp.ClientSession(headers=node.auth) as session:
        uploads = [asyncio.ensure_future(session.post(f"{node.url}/api/v1/content?filename=u{i}", data=slow_body()))
                   for i in range(4)]
        await asyncio.sleep(0.3)
        node.proc.send_signal(signal.SIGTERM)
        statuses = [(await u).status for u in uploads]
    assert statuses == [201] * 4  # in flight when SIGTERM came: finished, not cut
    assert node.proc.wait(40) == 0
    for pid in pids:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"worker {pid} still runs")
        except ProcessLookupError:
            pass
    node.proc = None
    state = json.loads(hearth("repo", "stat", "--json", "--data-dir", str(tmp_path / "data")).stdout)
    assert state["content_records"]["live"] == 4
