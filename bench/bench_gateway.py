"""Gateway and upload throughput: the Hearth node vs Kubo itself, side by side, in one run.

    .venv/bin/python bench/bench_gateway.py                      # full sizes, Kubo engine
    .venv/bin/python bench/bench_gateway.py --quick              # small sizes, a minute or so
    .venv/bin/python bench/bench_gateway.py --engine embedded --json out.json

One Kubo daemon (tests/support/kubo.py, offline) and one `hearth serve` child
process are started; both sides are measured with the same client, on the same
machine, against the same Kubo:

1. big download: GET a 1 GiB file from the node's /ipfs/{cid} and from Kubo's
   own gateway /ipfs/{cid} (median of --runs, alternating sides); a CIDv1 file
   with raw leaves, or with --cid-version 0 a CIDv0 file with dag-pb leaves.
2. small files: 2,000 files of 4 KiB, 32 concurrent keep-alive clients: one
   cold pass (the node has never served them), then warm passes; req/s.
3. big upload: 1 GiB through POST /api/v1/content vs Kubo's /api/v0/add
   (multipart, cid-version=1, pin), each the whole request as the client sees
   it, on a new connection, order alternated between runs, disturbed runs done
   again; MiB/s min / median / max per side, the median (min-max) of per-run
   ratios, and the node's peak RSS.
   `--only upload --upload-runs 6` is the upload comparison on its own.

Data is generated as a stream (never held whole), stamped so that no block
repeats (no dedup on either side). With --engine embedded the node stores its
own copy (uploaded through its API) and the same bytes are added to Kubo.
Not a test: prints a markdown table (and --json OUT writes the raw numbers).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402

from common import (  # noqa: E402
    MiB, ForeignCpu, HearthNode, RssSampler, adata_chunks, aiohttp_download, aiohttp_load, curl_download, have_curl,
    have_wrk, hearth_cmd, kubo_add, log, median, node_upload, process_tree, small_file, start_kubo, tree_cpu_secs,
    h2load_once, have_h2load,
    wait_for_idle, wrk_load,
)

GOALS = {"download": 0.9, "small_warm": 1.0, "upload": 0.9}
# the embedded engine serves file bytes from its own block files (sendfile): a higher bar
EMBEDDED_GOALS = {"download": 1.2}
RSS_LIMIT = 150 * 10**6  # bytes, during the big upload


def embedded_available() -> bool:
    try:
        import storage.embedded  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=["kubo", "embedded"], default="kubo")
    p.add_argument("--quick", action="store_true", help="small sizes: 64 MiB big file, 300 small files, short warm runs")
    p.add_argument("--json", metavar="OUT", help="write the raw results as JSON")
    p.add_argument("--big-mb", type=int, help="big file size in MiB (default 1024, quick 64)")
    p.add_argument("--small-count", type=int, help="number of small files (default 2000, quick 300)")
    p.add_argument("--small-size", type=int, default=4096)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--runs", type=int, help="big download runs per side (default 3, quick 2)")
    p.add_argument("--cid-version", type=int, choices=[0, 1], default=1,
                   help="the big download's file: 1 = CIDv1 with raw leaves (default, as the node's uploads), "
                        "0 = CIDv0 with dag-pb leaves (plain `ipfs add`); both sides get the same kind of DAG")
    p.add_argument("--upload-runs", type=int, help="big upload runs per side (default 4, quick 1)")
    p.add_argument("--upload-warmup", type=int, help="untimed big uploads per side first (default 1, quick 0)")
    p.add_argument("--warm-seconds", type=float, help="length of one warm small-file run (default 8, quick 2)")
    p.add_argument("--warm-rounds", type=int, default=3, help="warm small-file runs per side and generator")
    p.add_argument("--generator", choices=["auto", "aiohttp", "wrk", "both"], default="both",
                   help="load generator for warm small-file runs (cold passes always use aiohttp)")
    p.add_argument("--downloader", choices=["auto", "curl", "aiohttp"], default="auto")
    p.add_argument("--kubo-unix", action="store_true",
                   help="Kubo engine: the node reaches Kubo's RPC over a Unix socket (Kubo's side of the "
                        "comparison, and its gateway, stay on TCP)")
    p.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the node process (repeatable), e.g. for A/B runs")
    p.add_argument("--no-idle-wait", action="store_true",
                   help="do not wait for the machine to be idle before each timed run (nor re-run disturbed uploads)")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="an upload run during which other processes used more than this share of the machine "
                        "(all CPUs) is done again (default 0.10)")
    p.add_argument("--retries", type=int, default=3, help="re-runs of a disturbed upload run at most (default 3)")
    p.add_argument("--only", choices=["download", "small", "upload"], action="append",
                   help="run only these parts (repeatable; upload always runs once for the big file)")
    a = p.parse_args(argv)
    a.big_mb = a.big_mb or (64 if a.quick else 1024)
    a.small_count = a.small_count or (300 if a.quick else 2000)
    a.runs = a.runs or (2 if a.quick else 3)
    a.upload_runs = a.upload_runs or (1 if a.quick else 4)
    if a.upload_warmup is None:
        a.upload_warmup = 0 if a.quick else 1
    a.warm_seconds = a.warm_seconds or (2.0 if a.quick else 8.0)
    if a.generator == "auto":
        a.generator = "wrk" if have_wrk() else "aiohttp"
    if a.generator in ("wrk", "both") and not have_wrk():
        log("wrk not found (apt-get install wrk): warm runs use aiohttp only")
        a.generator = "aiohttp"
    if a.downloader == "auto":
        a.downloader = "curl" if have_curl() else "aiohttp"
    return a


def mibps(nbytes: int, secs: float) -> float:
    return nbytes / MiB / secs if secs else 0.0


class CpuSplit:
    """CPU seconds used by the node and by Kubo over a block (loopback: the
    sum of both, plus the client's, is what the 2 cores have to give)."""

    def __init__(self, node: HearthNode, kubo):
        self.pids = {"node": node.pid, "kubo": kubo.proc.pid}
        self.used: dict[str, float] = {}

    def __enter__(self):
        # the node: all its processes (with several workers, `hearth serve` is a supervisor)
        self._t0 = {k: tree_cpu_secs(p) for k, p in self.pids.items()}
        return self

    def __exit__(self, *exc):
        self.used = {k: round(tree_cpu_secs(p) - self._t0[k], 3) for k, p in self.pids.items()}


def settle(args) -> None:
    # the previous run's dirty pages (an upload writes 1 GiB) are written back now,
    # not during the next timed run
    os.sync()
    if not args.no_idle_wait:
        wait_for_idle()


async def check_same_cids(session, node, kubo, cid_version: int = 1) -> None:
    """The bench's Kubo add must build the DAG the node builds (same CID), or the
    upload comparison compares different work."""
    size = 3 * MiB + 12345
    rec = await node_upload(session, node, adata_chunks(size, seed=99), "check.bin", cid_version=cid_version)
    cid = await kubo_add(session, kubo, adata_chunks(size, seed=99), "check.bin", cid_version=cid_version)
    if rec["cid"] != cid:
        raise SystemExit(f"CID mismatch: node {rec['cid']} vs kubo add {cid}: the add options differ")
    log(f"same DAG on both sides: {cid}")


async def bench_upload(shared_session, node, kubo, args, results) -> dict:
    """Both sides timed the same way: one whole upload as the client sees it, from the
    request's first byte to the response, each on a new connection (the node closes
    one whose body it spliced; and a connection kept through the idle wait between
    runs may be closed by either server); the order alternates between runs (even
    runs: node first); every run uploads fresh bytes (no dedup). A run during which
    other work took more than --max-foreign of the machine is done again (fresh
    bytes again), up to --retries times."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=shared_session.timeout,
                                     auto_decompress=False) as session:
        return await _bench_upload(session, node, kubo, args, results)


async def drop_upload(session, node, kubo, args, side: str, cid: str) -> None:
    """Remove an upload that is not needed any more (untimed): unpin it (the node's
    DELETE, or Kubo's pin/rm) and collect garbage, so every run writes into a store of
    the same size and the page cache of its files is freed. Otherwise the machine's
    free memory shrinks by 1 GiB a run, and once it is gone the kernel's reclaim
    makes later runs of both sides slower (Kubo's CPU per GiB went from ~3 to ~5.5
    over 12 runs here)."""
    if side == "node":
        async with session.delete(f"{node.url}/api/v1/content/{cid}", headers=node.auth) as r:
            await r.read()
        if args.engine != "kubo":
            await asyncio.to_thread(subprocess.run, [*hearth_cmd(), "gc", "--data-dir", node.data_dir], env=node.env,
                                    capture_output=True, check=False)
    else:
        async with session.post(f"{kubo.api_url}/api/v0/pin/rm", params={"arg": cid}) as r:
            await r.read()
    async with session.post(f"{kubo.api_url}/api/v0/repo/gc") as r:
        await r.read()


async def _bench_upload(session, node, kubo, args, results) -> dict:
    size = args.big_mb * MiB
    out = {"size": size, "client": f"aiohttp {aiohttp.__version__}, body streamed in 1 MiB pieces, Content-Length set, "
                                   "a new connection per upload",
           "node": [], "kubo": [], "node_peak_rss": [], "node_peak_rss_total": [], "node_cids": [], "kubo_cids": [],
           "cpu_node_side": [], "cpu_kubo_side": [], "order": [], "foreign_node": [], "foreign_kubo": [],
           "retries": 0}

    async def node_run(r: int, seed: int) -> None:
        with RssSampler(node.pid, tree=True) as rss, CpuSplit(node, kubo) as cpu:
            t0 = time.perf_counter()
            rec = await node_upload(session, node, adata_chunks(size, seed=seed), f"big{r}.bin", size=size)
            secs = time.perf_counter() - t0
        out["node"].append(mibps(size, secs))
        out["node_peak_rss"].append(rss.peak)
        out["node_peak_rss_total"].append(rss.peak_total)
        out["node_cids"].append(rec["cid"])
        out["cpu_node_side"].append(cpu.used)
        log(f"upload node run {r}: {mibps(size, secs):.0f} MiB/s, peak RSS {rss.peak / MiB:.0f} MiB "
            f"(all node processes {rss.peak_total / MiB:.0f} MiB, {rss.samples} samples), cpu {cpu.used}, "
            f"{rec['cid']}")

    async def kubo_run(r: int, seed: int) -> None:
        with CpuSplit(node, kubo) as cpu:
            t0 = time.perf_counter()
            cid = await kubo_add(session, kubo, adata_chunks(size, seed=seed), f"big{r}.bin", size=size)
            secs = time.perf_counter() - t0
        out["kubo"].append(mibps(size, secs))
        out["kubo_cids"].append(cid)
        out["cpu_kubo_side"].append(cpu.used)
        log(f"upload kubo run {r}: {mibps(size, secs):.0f} MiB/s, cpu {cpu.used}, {cid}")

    # untimed: the first uploads after start-up run faster on both sides (the host's
    # CPUs boost for a while, then settle); let that pass before the timed runs
    for w in range(args.upload_warmup):
        for side, upload in (("node", node_upload), ("kubo", kubo_add)):
            got = await upload(session, node if side == "node" else kubo, adata_chunks(size, seed=900 + w),
                               f"warm{w}.bin", size=size)
            await drop_upload(session, node, kubo, args, side, got["cid"] if side == "node" else got)
    for r in range(args.upload_runs):
        order = ("node", "kubo") if r % 2 == 0 else ("kubo", "node")
        out["order"].append("-".join(order))
        for side in order:
            run_side = node_run if side == "node" else kubo_run
            for attempt in range(args.retries + 1):
                settle(args)
                with ForeignCpu() as foreign:
                    await run_side(r, (1000 if side == "node" else 2000) + r + 100 * attempt)
                done = foreign.share <= args.max_foreign or attempt == args.retries or args.no_idle_wait
                if r > 0 or not done:  # run 0's uploads are what the download part serves
                    await drop_upload(session, node, kubo, args, side, out[f"{side}_cids"][-1])
                if done:
                    break
                log(f"upload {side} run {r}: other work used {foreign.share:.0%} of the machine meanwhile: again")
                out["retries"] += 1
                for key in ([side, f"cpu_{side}_side", f"{side}_cids"]
                            + (["node_peak_rss", "node_peak_rss_total"] if side == "node" else [])):
                    out[key].pop()
            out[f"foreign_{side}"].append(round(foreign.share, 3))
    results["upload"] = out
    return out


async def bench_download(session, node, kubo, args, cid_node: str, cid_kubo: str, size: int, results) -> dict:
    out = {"size": size, "downloader": "", "node": [], "kubo": [], "node_peak_rss": [], "cid_node": cid_node,
           "cid_kubo": cid_kubo, "cid_version": args.cid_version, "cpu_node_side": [], "cpu_kubo_side": []}

    async def fetch(url: str) -> tuple[int, float]:
        if args.downloader == "curl":
            return await asyncio.to_thread(curl_download, url)
        return await aiohttp_download(session, url)

    out["downloader"] = "curl (-o /dev/null)" if args.downloader == "curl" else f"aiohttp {aiohttp.__version__} readany()"
    # one untimed pass each: both sides then read from a warm page cache
    for url in (f"{node.url}/ipfs/{cid_node}", f"{kubo.gateway_url}/ipfs/{cid_kubo}"):
        n, _ = await fetch(url)
        if n != size:
            raise SystemExit(f"{url} returned {n} bytes, expected {size}")
    for r in range(args.runs):
        settle(args)
        with RssSampler(node.pid, tree=True) as rss, CpuSplit(node, kubo) as cpu:
            n, secs = await fetch(f"{node.url}/ipfs/{cid_node}")
        assert n == size, (n, size)
        out["node"].append(mibps(n, secs))
        out["node_peak_rss"].append(rss.peak)
        out["cpu_node_side"].append(cpu.used)
        settle(args)
        with CpuSplit(node, kubo) as kcpu:
            n, secs = await fetch(f"{kubo.gateway_url}/ipfs/{cid_kubo}")
        assert n == size, (n, size)
        out["kubo"].append(mibps(n, secs))
        out["cpu_kubo_side"].append(kcpu.used)
        log(f"download run {r}: node {out['node'][-1]:.0f} MiB/s (peak RSS {rss.peak / MiB:.0f} MiB, cpu {cpu.used}), "
            f"kubo {out['kubo'][-1]:.0f} MiB/s (cpu {kcpu.used})")
    results["download"] = out
    return out


async def bench_small(session, node, kubo, args, results) -> dict:
    count, fsize = args.small_count, args.small_size
    sem = asyncio.Semaphore(8)
    cids: list[str | None] = [None] * count

    async def up(i: int):
        async with sem:
            data = small_file(i, fsize)
            rec = await node_upload(session, node, data, f"s{i}.bin")
            cids[i] = rec["cid"]
            if args.engine != "kubo":
                kcid = await kubo_add(session, kubo, data, f"s{i}.bin")
                if kcid != rec["cid"]:
                    raise SystemExit(f"small file {i}: node {rec['cid']} vs kubo {kcid}")

    t0 = time.perf_counter()
    await asyncio.gather(*(up(i) for i in range(count)))
    log(f"uploaded {count} x {fsize} B through the node in {time.perf_counter() - t0:.1f}s")
    paths = [f"/ipfs/{c}" for c in cids]
    out: dict = {"count": count, "size": fsize, "concurrency": args.concurrency}

    # cold: the node's first pass (nothing of these in its cache); then Kubo's first pass
    # (Kubo has just written them, and has served them to the node once: its "cold" is lukewarm).
    # h2load when it is there (apt-get install nghttp2-client): the aiohttp client spends
    # more CPU than either server on 2 cores, and wrk cannot stop after one pass
    cold_gen = "h2load" if have_h2load() else "aiohttp"

    async def cold_pass(base: str):
        if cold_gen == "h2load":
            return await asyncio.to_thread(h2load_once, base, paths, args.concurrency)
        return await aiohttp_load(base, paths, args.concurrency, passes=1, expect_size=fsize)

    settle(args)
    with RssSampler(node.pid, tree=True) as rss:
        cold_node = await cold_pass(node.url)
    settle(args)
    cold_kubo = await cold_pass(kubo.gateway_url)
    out["cold"] = {"node": cold_node.summary(), "kubo": cold_kubo.summary(), "node_peak_rss": rss.peak,
                   "generator": cold_gen}
    log(f"cold: node {cold_node.rps:.0f} req/s ({cold_node.errors} errors), kubo {cold_kubo.rps:.0f} req/s "
        f"({cold_kubo.errors} errors)")

    gens = ["aiohttp", "wrk"] if args.generator == "both" else [args.generator]
    for gen in gens:
        runs = {"node": [], "kubo": [], "node_peak_rss": []}
        for r in range(args.warm_rounds):
            for side, base in (("node", node.url), ("kubo", kubo.gateway_url)):
                settle(args)
                sampler = RssSampler(node.pid, tree=True) if side == "node" else None
                if sampler:
                    sampler.__enter__()
                if gen == "aiohttp":
                    res = await aiohttp_load(base, paths, args.concurrency, passes=1, min_seconds=args.warm_seconds,
                                             expect_size=fsize)
                else:
                    res = await asyncio.to_thread(wrk_load, base, paths, args.concurrency,
                                                  max(1, round(args.warm_seconds)))
                if sampler:
                    sampler.__exit__(None, None, None)
                    runs["node_peak_rss"].append(sampler.peak)
                runs[side].append(res.summary())
                log(f"warm [{gen}] round {r} {side}: {res.rps:.0f} req/s ({res.errors} errors)")
        out[f"warm_{gen}"] = runs
    results["small"] = out
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def verdict(r: float, goal: float) -> str:
    return "ok" if r >= goal else "MISS"


def render(results: dict, args) -> str:
    rows = ["| benchmark | node | kubo | node/kubo | goal | node peak RSS |", "|---|---:|---:|---:|---|---:|"]
    d = results.get("download")
    if d:
        n, k = median(d["node"]), median(d["kubo"])
        kind = "CIDv0, dag-pb leaves" if d.get("cid_version") == 0 else "CIDv1, raw leaves"
        goal = (EMBEDDED_GOALS if results["env"]["engine"] == "embedded" else GOALS)["download"]
        rows.append(f"| download {d['size'] // MiB} MiB ({kind}), MiB/s (median of {len(d['node'])}, "
                    f"range {min(d['node']):.0f}-{max(d['node']):.0f} vs {min(d['kubo']):.0f}-{max(d['kubo']):.0f}) | "
                    f"{n:.0f} | {k:.0f} | "
                    f"{ratio(n, k):.2f}x | >= {goal}x {verdict(ratio(n, k), goal)} | "
                    f"{max(d['node_peak_rss']) / MiB:.0f} MiB |")
    s = results.get("small")
    if s:
        label = f"{s['count']} x {s['size'] // 1024} KiB, c={s['concurrency']}"
        c = s["cold"]
        rows.append(f"| {label}, cold pass, req/s [{c.get('generator', 'aiohttp')}] | {c['node']['rps']:.0f} | {c['kubo']['rps']:.0f} | "
                    f"{ratio(c['node']['rps'], c['kubo']['rps']):.2f}x | (report) | {c['node_peak_rss'] / MiB:.0f} MiB |")
        for gen in ("aiohttp", "wrk"):
            w = s.get(f"warm_{gen}")
            if not w:
                continue
            n, k = median(x["rps"] for x in w["node"]), median(x["rps"] for x in w["kubo"])
            rows.append(f"| {label}, warm, req/s [{gen}, median of {len(w['node'])}] | {n:.0f} | {k:.0f} | "
                        f"{ratio(n, k):.2f}x | >= {GOALS['small_warm']}x {verdict(ratio(n, k), GOALS['small_warm'])} | "
                        f"{max(w['node_peak_rss']) / MiB:.0f} MiB |")
    u = results.get("upload")
    if u:
        n, k = median(u["node"]), median(u["kubo"])
        # run r's node and Kubo uploads ran back to back: their ratio, per run
        pairs = [ratio(a, b) for a, b in zip(u["node"], u["kubo"])]
        r_med = median(pairs)
        peak = max(u["node_peak_rss"])
        rows.append(f"| upload {u['size'] // MiB} MiB, MiB/s, min / median / max of {len(u['node'])} runs, order "
                    f"alternated | {min(u['node']):.0f} / {n:.0f} / {max(u['node']):.0f} | "
                    f"{min(u['kubo']):.0f} / {k:.0f} / {max(u['kubo']):.0f} | "
                    f"{r_med:.3f}x ({min(pairs):.2f}–{max(pairs):.2f}) | "
                    f">= {GOALS['upload']}x {verdict(r_med, GOALS['upload'])} | "
                    f"{peak / MiB:.0f} MiB ({'ok' if peak < RSS_LIMIT else 'MISS'}: < 150 MB) |")
    env = results["env"]
    notes = ["", f"engine={env['engine']}{' (node to Kubo RPC over a Unix socket)' if args.kubo_unix else ''}, "
                 f"Kubo {env['kubo_version']}, Python {env['python']}, aiohttp {env['aiohttp']}, "
                 f"{env['cpus']} CPUs, node idle RSS (all processes) {env['node_idle_rss'] / MiB:.0f} MiB"]
    clients = []
    if d:
        clients.append(f"download: {d['downloader']}")
    if s:
        clients.append(f"small cold: {s['cold']['node']['generator']}, one pass")
        for gen in ("aiohttp", "wrk"):
            if s.get(f"warm_{gen}"):
                clients.append(f"small warm [{gen}]: {s[f'warm_{gen}']['node'][0]['generator']}")
    if u:
        clients.append(f"upload: {u['client']}")
        if "retries" in u:
            clients.append(f"upload runs done again because other work used > {args.max_foreign:.0%} of the machine: "
                           f"{u['retries']} (share of the machine other work used, median: node runs "
                           f"{median(u['foreign_node']):.0%}, Kubo runs {median(u['foreign_kubo']):.0%})")
    notes.append("clients: " + "; ".join(clients))
    cpu_rows = []
    for name, part in (("download", d), ("upload", u)):
        if part and part.get("cpu_node_side"):
            gib = part["size"] / (1 << 30)
            via = median(x["node"] for x in part["cpu_node_side"]) / gib, median(x["kubo"] for x in part["cpu_node_side"]) / gib
            direct = median(x["kubo"] for x in part["cpu_kubo_side"]) / gib
            cpu_rows.append(f"| {name} | {via[0]:.2f} | {via[1]:.2f} | {direct:.2f} |")
    if cpu_rows:
        notes += ["", "| CPU s per GiB (median) | node (all processes) | Kubo (via node) | Kubo (direct) |",
                  "|---|---:|---:|---:|"] + cpu_rows
    return "\n".join(rows + notes)


async def run(args, node: HearthNode, kubo) -> dict:
    results: dict = {}
    only = set(args.only or ["download", "small", "upload"])
    timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                     read_bufsize=1 << 20) as session:
        async with session.post(f"{kubo.api_url}/api/v0/version") as r:
            kubo_version = (await r.json())["Version"]
        results["env"] = {"engine": args.engine, "kubo_version": kubo_version, "python": platform.python_version(),
                          "aiohttp": aiohttp.__version__, "cpus": os.cpu_count(),
                          "node_idle_rss": sum(p.memory_info().rss for p in process_tree(node.pid)),
                          "quick": args.quick}
        await check_same_cids(session, node, kubo)
        if args.cid_version != 1:
            await check_same_cids(session, node, kubo, args.cid_version)
        big_size = args.big_mb * MiB
        if "upload" in only:
            up = await bench_upload(session, node, kubo, args, results)
            cid_node, cid_kubo_own = up["node_cids"][0], up["kubo_cids"][0]
        if "upload" not in only or args.cid_version != 1:
            rec = await node_upload(session, node, adata_chunks(big_size, seed=1000), "big0.bin", size=big_size,
                                    cid_version=args.cid_version)
            cid_node = rec["cid"]
            cid_kubo_own = await kubo_add(session, kubo, adata_chunks(big_size, seed=2000), "big0.bin", size=big_size,
                                          cid_version=args.cid_version)
        if "download" in only:
            # the Kubo engine stores into this same Kubo: both serve the very same DAG
            cid_kubo = cid_node if args.engine == "kubo" else cid_kubo_own
            await bench_download(session, node, kubo, args, cid_node, cid_kubo, big_size, results)
        if "small" in only:
            await bench_small(session, node, kubo, args, results)
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.engine == "embedded" and not embedded_available():
        print("error: --engine embedded needs storage.embedded, which does not import here", file=sys.stderr)
        return 2
    log(f"starting Kubo and the node (engine={args.engine}, big={args.big_mb} MiB, small={args.small_count})")
    kubo = start_kubo(unix_api=args.kubo_unix)
    node = None
    try:
        node_env = dict(kv.split("=", 1) for kv in args.node_env)
        node = HearthNode(args.engine, kubo_api=kubo.api_unix if args.kubo_unix else kubo.api_url,
                          env=node_env).start()
        results = asyncio.run(run(args, node, kubo))
        if node.proc is None or node.proc.poll() is not None:
            raise SystemExit(f"the node died: {node.log_tail()}")
    finally:
        if node is not None:
            node.cleanup()
        kubo.cleanup()
    table = render(results, args)
    print(table)
    if args.json:
        results["table"] = table
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
