"""What ENS names cost (naming/ens.py), on anvil with the real ENS contracts (tests/support/ens.py):

* cached resolution in process: `EnsNameSystem.resolve(name)` p50/p99 (goal p99 < 1 ms);
* cold resolution: JSON-RPC requests per name, by method (goal: one `eth_call` through the
  Universal Resolver per record);
* requests per second for a cached ENS site (`/ipns/{name}.eth/about.html`) vs the same file by
  CID (`/ipfs/{cid}/about.html`), one node in process, an aiohttp client with 32 concurrent
  requests (a rough ratio: client and server share the process and the core).

    .venv/bin/python bench/bench_ens.py [--names 50] [--seconds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.anvil import Anvil  # noqa: E402
from tests.support.ens import EnsChain, contenthash_ipfs  # noqa: E402

SITE = {"index.html": b"<!doctype html><p>home</p>", "about.html": b"<!doctype html><p>about</p>" + b"x" * 4000}


async def rps(client, path: str, seconds: float, concurrency: int = 32) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker():
        nonlocal done
        while time.perf_counter() < deadline:
            async with client.get(path) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def main(args) -> dict:
    import aiohttp
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import create_app
    from gateway.keys import ENS, STORE
    from tests.conftest import make_config

    anvil = Anvil().start()
    out: dict = {}
    try:
        chain = EnsChain.deploy(anvil)
        with tempfile.TemporaryDirectory() as tmp:
            config = make_config(Path(tmp), storage__engine="embedded", ens__rpc_url=anvil.rpc_url,
                                 ens__registry=chain.registry.address)
            app = create_app(config)
            client = TestClient(TestServer(app))
            await client.start_server()
            try:
                store = app[STORE]
                token = await store.run(store.create_token, "bench")
                form = aiohttp.FormData(quote_fields=False)
                for name, data in SITE.items():
                    form.add_field("file", data, filename=f"site/{name}")
                resp = await client.post("/api/v1/content?wrap=true", data=form,
                                         headers={"Authorization": f"Bearer {token}"})
                wrapped = (await resp.json())["cid"]
                resp = await client.get(f"/ipfs/{wrapped}/site/?format=raw")
                root = resp.headers["X-Ipfs-Roots"].split(",")[-1]
                names = [f"site{i}.eth" for i in range(args.names)]
                for name in names:
                    chain.register(name)
                    chain.set_contenthash(name, contenthash_ipfs(root))

                system = app[ENS]
                methods: Counter = Counter()
                for ns in system._ens_clients():  # what goes on the wire (after web3's request cache)
                    provider = ns.w3.provider
                    original = provider._make_request

                    async def counted(method, request_data, _orig=original):
                        methods[str(method)] += 1
                        return await _orig(method, request_data)

                    provider._make_request = counted
                cold = []
                for name in names:
                    t = time.perf_counter()
                    await system.resolve(name)
                    cold.append(time.perf_counter() - t)
                out["cold"] = {"names": len(names), "rpc_requests_per_name": {m: n / len(names)
                                                                             for m, n in methods.items()},
                               "ms_p50": statistics.median(cold) * 1e3}
                lat = []
                for _ in range(20):
                    for name in names:
                        t = time.perf_counter()
                        await system.resolve(name)
                        lat.append(time.perf_counter() - t)
                lat.sort()
                out["cached"] = {"calls": len(lat), "us_p50": lat[len(lat) // 2] * 1e6,
                                 "us_p99": lat[int(len(lat) * 0.99)] * 1e6}
                by_cid = f"/ipfs/{root}/about.html"
                by_name = f"/ipns/{names[0]}/about.html"
                await rps(client, by_cid, 0.5)
                await rps(client, by_name, 0.5)
                rounds = []
                for _ in range(3):
                    a = await rps(client, by_cid, args.seconds)
                    b = await rps(client, by_name, args.seconds)
                    rounds.append((a, b))
                out["rps"] = {"by_cid": [round(a) for a, _ in rounds], "by_ens_name": [round(b) for _, b in rounds],
                              "ratio_median": statistics.median(b / a for a, b in rounds)}
            finally:
                await client.close()
    finally:
        anvil.cleanup()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
