"""Memory under concurrent uploads: N uploads of S MiB at once (default 100 x 20 MiB),
streamed, through `POST /api/v1/content`, against the same load on Kubo's
`/api/v0/add` (the peer), side by side in one run.

Reports per side: RSS when idle, peak RSS during the burst (sampled every 10 ms and
the kernel's high-water mark), RSS 3 s after the last upload finished, and the wall
time of the burst. Goals (issue 6): node peak < 250 MB, node back within 30 MB of its
idle RSS afterwards.

    .venv/bin/python bench/bench_memory.py                      # embedded engine, 100 x 20 MiB
    .venv/bin/python bench/bench_memory.py --engine kubo        # the node in front of Kubo
    .venv/bin/python bench/bench_memory.py --uploads 50 --size-mib 8 --json /tmp/mem.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from common import MiB, HearthNode, RssSampler, kubo_add, log, node_upload, process_tree, start_kubo

import aiohttp


async def _stream(seed: int, size: int):
    base = os.urandom(MiB)
    for i in range(size // MiB):  # every MiB distinct: no dedup discount
        yield seed.to_bytes(4, "big") + i.to_bytes(4, "big") + base[8:]


async def _burst(send, n: int, size: int) -> float:
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(send(session, i, _stream(i, size), size) for i in range(n)))
    return time.monotonic() - started


def _tree_rss(pid: int) -> tuple[int, int]:
    """(largest single process, sum) of the RSS of pid and its descendants."""
    sizes = [p.memory_info().rss for p in process_tree(pid)]
    return max(sizes), sum(sizes)


async def measure(pid: int, send, n: int, size: int) -> dict:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:  # one warm-up upload
        await send(session, 10**6, _stream(10**6, MiB), MiB)
    await asyncio.sleep(2)
    idle, idle_total = _tree_rss(pid)
    with RssSampler(pid, interval=0.01, tree=True) as sampler:
        seconds = await _burst(send, n, size)
        await asyncio.sleep(3)
    after, after_total = _tree_rss(pid)
    # with several workers the node is a supervisor and its workers: the largest process
    # (a worker) and the sum of all of them are both reported
    return {"idle_mib": idle / MiB, "peak_mib": sampler.peak / MiB, "after_mib": after / MiB,
            "back_within_mib": (after - idle) / MiB, "seconds": seconds,
            "idle_total_mib": idle_total / MiB, "peak_total_mib": sampler.peak_total / MiB,
            "after_total_mib": after_total / MiB, "back_within_total_mib": (after_total - idle_total) / MiB}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="embedded", choices=["embedded", "kubo"])
    ap.add_argument("--uploads", type=int, default=100)
    ap.add_argument("--size-mib", type=int, default=20)
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment for the node, e.g. HEARTH_SERVER_WORKERS=1")
    args = ap.parse_args()
    size = args.size_mib * MiB
    kubo = start_kubo()
    node = HearthNode(args.engine, kubo_api=kubo.api_url,
                      env=dict(kv.split("=", 1) for kv in args.node_env)).start()
    results = {}
    try:
        async def to_node(session, i, body, n):
            await node_upload(session, node, body, f"m{i}.bin", size=n)

        async def to_kubo(session, i, body, n):
            await kubo_add(session, kubo, body, f"m{i}.bin", size=n)

        log(f"node ({args.engine}): {args.uploads} x {args.size_mib} MiB")
        results["node"] = asyncio.run(measure(node.pid, to_node, args.uploads, size))
        log(f"Kubo: {args.uploads} x {args.size_mib} MiB")
        results["kubo"] = asyncio.run(measure(kubo.proc.pid, to_kubo, args.uploads, size))
    finally:
        node.cleanup()
        kubo.cleanup()
    node_r, kubo_r = results["node"], results["kubo"]
    print(f"\n{args.uploads} concurrent uploads of {args.size_mib} MiB, engine {args.engine}\n")
    print("| | node | Kubo | node/Kubo | goal |")
    print("|---|---:|---:|---:|---|")
    for key, label, goal in (("idle_mib", "idle RSS, largest process, MiB", ""),
                             ("peak_mib", "peak RSS, largest process, MiB", "node < 143 MiB (150 MB) per worker"),
                             ("idle_total_mib", "idle RSS, all processes, MiB", ""),
                             ("peak_total_mib", "peak RSS, all processes, MiB", "node < 238 MiB (250 MB)"),
                             ("after_total_mib", "RSS 3 s after, all processes, MiB", ""),
                             ("back_within_total_mib", "after - idle, all processes, MiB", "node < 28.6 MiB (30 MB)"),
                             ("seconds", "burst wall time, s", "")):
        print(f"| {label} | {node_r[key]:.1f} | {kubo_r[key]:.1f} | {node_r[key] / kubo_r[key]:.2f}x | {goal} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **results}, f, indent=2)


if __name__ == "__main__":
    main()
