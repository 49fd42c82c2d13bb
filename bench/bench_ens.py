"""What ENS names cost (naming/ens.py), on anvil with the real ENS contracts (tests/support/ens.py):

* cached resolution in process: `EnsNameSystem.resolve(name)` p50/p99 (goal p99 < 1 ms);
* cold resolution: JSON-RPC requests per name, by method (goal: one `eth_call` through the
  Universal Resolver per record);
* requests per second serving a cached ENS site vs the same content by CID (goal >= 0.95x), with
  wrk against a real `hearth serve` (embedded engine, its defaults: 2 workers, uvloop) whose
  `[ens] rpc_url` / `registry` / `universal_resolver` point at the anvil chain, three ways:

    `/ipfs/{cid}/index.html`                        (the baseline)
    `/ipns/{name}.eth/index.html`                   (the path gateway, by ENS name)
    `Host: {name}.eth.localhost:{port}`, `/index.html`  (the name's own origin, as eth.limo)

  Each name's contenthash is the uploaded site's CID (ipfs-ns). wrk -t1 -c32 with a Lua script
  rotating over the requests (--site-names names, every one pointing at the same site; `/ipfs/`
  has the one path). Each round runs the three modes back to back in a rotating order, each run
  after an idle-machine wait, done again (up to --retries times) if other processes used more than
  --max-foreign of the machine; one untimed warm-up run per mode first. min/median/max req/s over
  the rounds; ratios to `/ipfs/` are the median (min-max) of per-round ratios; CPU is the node's
  CPU time per request (all its processes).

    .venv/bin/python bench/bench_ens.py                          # 50 names in process; 5 rounds x 8 s of wrk
    .venv/bin/python bench/bench_ens.py --rounds 3 --seconds 5 --json /tmp/ens.json
    .venv/bin/python bench/bench_ens.py --only inprocess | --only serve

Needs anvil and the ENS artifacts (scripts/install-test-deps.sh) and wrk (apt-get install wrk).
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
sys.path.insert(0, str(ROOT / "bench"))

from tests.support.anvil import Anvil  # noqa: E402
from tests.support.ens import EnsChain, contenthash_ipfs, local_artifact  # noqa: E402

SITE = {"index.html": b"<!doctype html><title>ens bench</title><p>home</p>" + b"x" * 4000,
        "about.html": b"<!doctype html><p>about</p>" + b"x" * 4000}
MODES = ("path", "ens_path", "ens_host")
LABELS = {"path": "`/ipfs/{cid}/index.html`", "ens_path": "`/ipns/{name}.eth/index.html`",
          "ens_host": "`Host: {name}.eth.localhost`, `/index.html`"}
GOAL = 0.95


# --- in process: cold and cached resolution -------------------------------------------------------
async def inprocess(args, anvil, chain) -> dict:
    import aiohttp
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import create_app
    from gateway.keys import ENS, STORE
    from tests.conftest import make_config

    out: dict = {}
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
                form.add_field("file", data, filename=name)
            resp = await client.post("/api/v1/content?wrap=true", data=form,
                                     headers={"Authorization": f"Bearer {token}"})
            root = (await resp.json())["cid"]
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
        finally:
            await client.close()
    return out


# --- wrk against hearth serve -----------------------------------------------------------------------
async def serve_setup(args, node, chain) -> tuple[dict, str, list[str]]:
    import aiohttp

    from bench_names import check

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        form = aiohttp.FormData(quote_fields=False)
        for name, data in SITE.items():
            form.add_field("file", data, filename=name)
        async with session.post(f"{node.url}/api/v1/content?wrap=true", data=form, headers=node.auth) as r:
            if r.status != 201:
                raise RuntimeError(f"upload: {r.status} {await r.text()}")
            root = (await r.json())["cid"]
        names = [f"www{i}.eth" for i in range(args.site_names)]
        for name in names:
            chain.register(name)
            chain.set_contenthash(name, contenthash_ipfs(root))
        port = node.port
        reqs = {
            "path": [(f"/ipfs/{root}/index.html", f"127.0.0.1:{port}")],
            "ens_path": [(f"/ipns/{n}/index.html", f"127.0.0.1:{port}") for n in names],
            "ens_host": [("/index.html", f"{n}.localhost:{port}") for n in names],
        }
        for mode in MODES:  # every request answers 200 with the file, before anything is timed
            await check(session, port, reqs[mode], _Same(SITE["index.html"], len(reqs[mode])))
        async with session.get(f"{node.url}/api/v1/ens/{names[0]}", headers=node.auth) as r:
            info = await r.json()
            if info.get("contenthash", {}).get("cid") != root:
                raise RuntimeError(f"ENS answer: {info}")
    return reqs, root, names


class _Same(dict):
    """check() zips the requests with this mapping's keys and compares with body_of[key]: n keys, one body."""

    def __init__(self, body: bytes, n: int):
        super().__init__((i, body) for i in range(n))


def serve(args, anvil, chain) -> dict:
    from bench_names import wrk_run
    from common import ForeignCpu, HearthNode, log, tree_cpu_secs, wait_for_idle

    # the project's Universal Resolver at an address of its own, named by [ens] universal_resolver
    ur = chain._deploy(local_artifact("chain/artifacts/UniversalResolver.json"), chain.registry.address)
    env = {"HEARTH_ENS_RPC_URL": anvil.rpc_url, "HEARTH_ENS_REGISTRY": chain.registry.address,
           "HEARTH_ENS_UNIVERSAL_RESOLVER": ur.address}
    env.update(dict(x.split("=", 1) for x in args.node_env))
    node = HearthNode(engine="embedded", env=env)
    results: dict = {"runs": {m: [] for m in MODES}}
    try:
        node.start()
        log(f"node {node.url} (pid {node.pid}), anvil {anvil.rpc_url}")
        reqs, root, names = asyncio.run(serve_setup(args, node, chain))
        results.update(root=root, names=names, env=env)
        log(f"site {root}, {len(names)} ENS names pointing at it")
        with tempfile.TemporaryDirectory(prefix="hearth-bench-ens-") as tmp:
            for mode in MODES:  # untimed warm-up: every cache filled
                wrk_run(node.port, reqs[mode], 2, args.concurrency, tmp)
            for r in range(args.rounds):
                for mode in MODES[r % 3:] + MODES[:r % 3]:
                    for attempt in range(args.retries + 1):
                        if not args.no_idle_wait:
                            wait_for_idle()
                        cpu0 = tree_cpu_secs(node.pid)
                        with ForeignCpu() as foreign:
                            res = wrk_run(node.port, reqs[mode], args.seconds, args.concurrency, tmp)
                        res["cpu_us"] = (tree_cpu_secs(node.pid) - cpu0) / max(1, res["requests"]) * 1e6
                        res["foreign"] = round(foreign.share, 3)
                        res["attempt"] = attempt
                        if foreign.share <= args.max_foreign:
                            break
                        log(f"round {r} {mode}: other work used {foreign.share:.0%} of the machine, again")
                    results["runs"][mode].append(res)
                    log(f"round {r} {mode:8}: {res['rps']:.0f} req/s, {res['cpu_us']:.0f} µs CPU/req "
                        f"({res['errors']} errors, foreign {res['foreign']:.0%})")
    finally:
        node.cleanup()
    return results


def serve_table(results: dict, args) -> str:
    from common import median

    runs = results["runs"]

    def ok(x):
        return x.get("foreign", 0) <= args.max_foreign

    def vals(mode, field="rps"):
        return [x[field] for x in runs[mode] if ok(x)]

    ratios = {m: [a["rps"] / b["rps"] for a, b in zip(runs[m], runs["path"]) if ok(a) and ok(b)] for m in MODES}
    lines = [f"wrk -t1 -c{args.concurrency}, {args.rounds} rounds of {args.seconds} s per mode, "
             f"{args.site_names} ENS name(s) rotating; req/s min/median/max; ratio: median (min–max) of "
             "per-round ratios; CPU: the node's CPU time per request (all its processes), median", "",
             "| request | req/s (min/median/max) | vs `/ipfs/` | node CPU/req | p99 latency | goal >= 0.95x |",
             "|---|---:|---:|---:|---:|---|"]
    for mode in MODES:
        xs, rs = vals(mode), ratios[mode]
        mmm = f"{min(xs):.0f}/{median(xs):.0f}/{max(xs):.0f}" if xs else "-"
        span = f"{median(rs):.2f}x ({min(rs):.2f}–{max(rs):.2f})" if rs else "-"
        goal = "(baseline)" if mode == "path" else ("met" if rs and median(rs) >= GOAL else "missed")
        if mode == "path":
            span = "1"
        lines.append(f"| {LABELS[mode]} | {mmm} | {span} | {median(vals(mode, 'cpu_us')):.0f} µs | "
                     f"{median(vals(mode, 'p99_us')) / 1000:.1f} ms | {goal} |")
    errors = sum(x["errors"] for m in runs.values() for x in m)
    redone = sum(x.get("attempt", 0) for m in runs.values() for x in m)
    disturbed = sum(1 for m in runs.values() for x in m if not ok(x))
    lines += ["", f"errors (non-200 or socket) across all timed runs: {errors}; runs done again because other "
                  f"work used > {args.max_foreign:.0%} of the machine: {redone}; still disturbed (left out): "
                  f"{disturbed}"]
    return "\n".join(lines)


def inprocess_text(out: dict) -> str:
    cold, cached = out["cold"], out["cached"]
    per = ", ".join(f"{m} {n:.2f}" for m, n in sorted(cold["rpc_requests_per_name"].items()))
    return (f"cold resolution ({cold['names']} names): RPC requests per name: {per}; {cold['ms_p50']:.1f} ms p50\n"
            f"cached resolution in process ({cached['calls']} calls): {cached['us_p50']:.1f} µs p50, "
            f"{cached['us_p99']:.1f} µs p99")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("inprocess", "serve"), help="one part only")
    p.add_argument("--names", type=int, default=50, help="names resolved in process (cold, then cached)")
    p.add_argument("--site-names", type=int, default=10, help="ENS names wrk rotates over (one site)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=8, help="length of one wrk run")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--node-env", action="append", default=[], help="KEY=VALUE for the node (repeatable)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--no-idle-wait", action="store_true")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="a run during which other processes used more of the machine is done again")
    p.add_argument("--retries", type=int, default=3, help="at most this many repeats of a disturbed run")
    args = p.parse_args()

    anvil = Anvil().start()
    result: dict = {"args": vars(args)}
    try:
        chain = EnsChain.deploy(anvil)
        if args.only != "serve":
            result["inprocess"] = asyncio.run(inprocess(args, anvil, chain))
        if args.only != "inprocess":
            result["serve"] = serve(args, anvil, chain)
    finally:
        anvil.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if "inprocess" in result:
        print(inprocess_text(result["inprocess"]))
        print()
    if "serve" in result:
        print(serve_table(result["serve"], args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
