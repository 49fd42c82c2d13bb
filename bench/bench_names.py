"""What Host routing and IPNS names cost: requests per second for the same cached
4 KiB files fetched three ways, side by side in one run, on the node and on Kubo's
gateway:

* `/ipfs/{cid}`                          (the path gateway: the baseline)
* `Host: {cid}.ipfs.localhost:{port}`, `/`  (the subdomain gateway)
* `/ipns/{k51...}`                         (one IPNS name per file, published by each side)

Each mode is reported as a ratio to `/ipfs/{cid}` on the same server (goal: Host
routing and IPNS resolution cost under 5%, i.e. >= 0.95x), and as node/Kubo.

Load: wrk (-t1 -c32) with a Lua script that rotates over the files (path and
Host header per request). Every round runs the 6 combinations (3 modes x 2
servers) in a rotating order, each after an idle-machine wait; the table gives
min / median / max req/s over the rounds, and the median (min-max) of the per-
round ratios. One untimed warm-up run per combination first, so both sides serve
from their caches (the node's response and block caches, Kubo's IPNS cache).

Plus IPNS record verifications per second, in process (naming/ipns/record.py
`verify` on a valid V1+V2 Ed25519 record, as published by `hearth name
publish`). Kubo has no in-process equivalent reachable from here: `ipfs name
inspect --verify` is a whole process per record, dominated by start-up, so it is
not compared.

    .venv/bin/python bench/bench_names.py                 # 100 files, 5 rounds of 8 s
    .venv/bin/python bench/bench_names.py --files 50 --rounds 3 --seconds 4 --json /tmp/names.json

Needs the Kubo binary the tests use and wrk (apt-get install wrk).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (ForeignCpu, HearthNode, KuboDaemon, kubo_add, log, median, node_upload,  # noqa: E402
                    small_file, tree_cpu_secs, wait_for_idle)

import aiohttp  # noqa: E402

MODES = ("path", "subdomain", "ipns")
LABELS = {"path": "`/ipfs/{cid}`", "subdomain": "`Host: {cid}.ipfs.localhost`", "ipns": "`/ipns/{k51…}`"}
GOAL = 0.95

_LUA = r"""
local reqs = {}
for line in io.lines("%s") do
  local path, host = line:match("^(%%S+)%%s+(%%S+)$")
  reqs[#reqs + 1] = wrk.format("GET", path, {["Host"] = host})
end
local i = 0
local bad = 0
request = function()
  i = i %% #reqs + 1
  return reqs[i]
end
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("WRKJSON {\"requests\": %%d, \"duration_us\": %%d, \"non2xx\": %%d, \"socket_errors\": %%d, \"p50_us\": %%d, \"p99_us\": %%d}\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_run(port: int, lines: list[tuple[str, str]], seconds: int, concurrency: int, tmp: str) -> dict:
    plist = Path(tmp) / f"reqs-{port}-{abs(hash(lines[0]))}.txt"
    plist.write_text("".join(f"{p} {h}\n" for p, h in lines))
    script = Path(tmp) / f"reqs-{port}-{abs(hash(lines[0]))}.lua"
    script.write_text(_LUA % str(plist))
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
                          f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk output not understood: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    d = json.loads(line[len("WRKJSON "):])
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    d["errors"] = d["non2xx"] + d["socket_errors"]
    return d


async def check(session: aiohttp.ClientSession, port: int, lines: list[tuple[str, str]], body_of: dict) -> None:
    """Every request of a mode answers 200 with the file's bytes (before anything is timed)."""
    for (path, host), cid in zip(lines, body_of):
        async with session.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host},
                               allow_redirects=False) as r:
            body = await r.read()
            if r.status != 200 or body != body_of[cid]:
                raise RuntimeError(f"{host}{path}: {r.status} {body[:200]!r}")


async def setup(args, node: HearthNode, kubo: KuboDaemon) -> tuple[dict, dict]:
    """Upload the files to both, publish one IPNS name per file on each side; the
    request lists per (side, mode)."""
    files = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for i in range(args.files):
            data = small_file(i, args.size, seed=11)
            up = await node_upload(session, node, data, f"f{i}.bin")
            kcid = await kubo_add(session, kubo, data, f"f{i}.bin")
            if up["cid"] != kcid:
                raise RuntimeError(f"different CIDs for file {i}: {up['cid']} vs {kcid}")
            files[up["cid"]] = data
        cids = list(files)
        node_names, kubo_names = [], []
        for i, cid in enumerate(cids):
            async with session.post(f"{node.url}/api/v1/keys", json={"name": f"bench{i}"}, headers=node.auth) as r:
                if r.status != 201:
                    raise RuntimeError(f"node key gen: {r.status} {await r.text()}")
            async with session.post(f"{node.url}/api/v1/names", headers=node.auth,
                                    json={"key": f"bench{i}", "value": f"/ipfs/{cid}", "ttl": args.ipns_ttl}) as r:
                if r.status != 200:
                    raise RuntimeError(f"node publish: {r.status} {await r.text()}")
                node_names.append((await r.json())["name"])
            async with session.post(f"{kubo.api_url}/api/v0/key/gen", params={"arg": f"bench{i}", "type": "ed25519",
                                                                              "ipns-base": "base36"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"kubo key gen: {r.status} {await r.text()}")
            async with session.post(f"{kubo.api_url}/api/v0/name/publish",
                                    params={"arg": f"/ipfs/{cid}", "key": f"bench{i}", "allow-offline": "true",
                                            "ttl": f"{args.ipns_ttl}s", "ipns-base": "base36"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"kubo publish: {r.status} {await r.text()}")
                kubo_names.append((await r.json())["Name"])
        reqs = {}
        for side, port, names in (("node", node.port, node_names), ("kubo", kubo.gateway_port, kubo_names)):
            reqs[side] = {
                "path": [(f"/ipfs/{c}", f"127.0.0.1:{port}") for c in cids],
                "subdomain": [("/", f"{c}.ipfs.localhost:{port}") for c in cids],
                "ipns": [(f"/ipns/{n}", f"127.0.0.1:{port}") for n in names],
            }
            for mode in MODES:
                await check(session, port, reqs[side][mode], files)
    return reqs, {"node": node_names, "kubo": kubo_names}


class OfflineKubo(KuboDaemon):
    """Kubo run with `--offline`: its offline router answers IPNS lookups from the
    records `name publish --allow-offline` put in its datastore (with `Routing.Type
    = "none"` and the network on, the gateway finds none)."""

    def start(self, timeout: float = 60) -> "OfflineKubo":
        self.init()
        logf = open(Path(self.repo) / "daemon.log", "ab")
        self.proc = subprocess.Popen([self.bin, "daemon", "--offline"], env=self.env, stdout=logf, stderr=logf,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kubo exited: {(Path(self.repo) / 'daemon.log').read_text()[-2000:]}")
            try:
                import urllib.request

                req = urllib.request.Request(self.api_url + "/api/v0/version", method="POST")
                urllib.request.urlopen(req, timeout=1).read()
                urllib.request.urlopen(self.gateway_url + "/ipfs/bafkqaaa", timeout=1).read()
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Kubo did not become ready")


def verify_rate(seconds: float = 3.0) -> dict:
    """IPNS record verifications per second, in process (one valid Ed25519 record)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from naming.ipns import record
    from naming.ipns.keys import PrivateKey

    key = PrivateKey.generate("ed25519")
    name = key.public_key().name()
    raw = record.create(key, "/ipfs/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", 1,
                        time.time_ns() + 48 * 3600 * 10**9, 300 * 10**9)
    record.verify(raw, name)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(200):
            record.verify(raw, name)
        n += 200
    secs = time.perf_counter() - t0
    return {"verifications": n, "seconds": round(secs, 3), "per_second": n / secs, "record_bytes": len(raw)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=100, help="4 KiB files, one IPNS name each (Kubo caches 128 names)")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=8, help="length of one wrk run")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--ipns-ttl", type=int, default=300, help="TTL of the published records, seconds (both sides)")
    p.add_argument("--node-env", action="append", default=[], help="KEY=VALUE for the node (repeatable)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--no-idle-wait", action="store_true")
    p.add_argument("--max-foreign", type=float, default=0.10,
                   help="a run during which other processes used more of the machine is done again")
    p.add_argument("--retries", type=int, default=3, help="at most this many repeats of a disturbed run")
    args = p.parse_args()

    env = dict(x.split("=", 1) for x in args.node_env)
    kubo = OfflineKubo()
    kubo.start()
    node = HearthNode(engine="embedded", env=env)
    results: dict = {"args": vars(args), "runs": {s: {m: [] for m in MODES} for s in ("node", "kubo")}}
    try:
        node.start()
        log(f"node {node.url} (pid {node.pid}), Kubo gateway {kubo.gateway_url}")
        reqs, names = asyncio.run(setup(args, node, kubo))
        log(f"{args.files} files of {args.size} B, {len(names['node'])} names on each side")
        ports = {"node": node.port, "kubo": kubo.gateway_port}
        pids = {"node": node.pid, "kubo": kubo.proc.pid}
        with tempfile.TemporaryDirectory(prefix="hearth-bench-names-") as tmp:
            for side in ("node", "kubo"):  # untimed warm-up: every cache filled
                for mode in MODES:
                    wrk_run(ports[side], reqs[side][mode], 2, args.concurrency, tmp)
            for r in range(args.rounds):
                # the three modes of one side back to back (what the ratios compare), in a
                # rotating order; the sides alternate which goes first
                sides = ("node", "kubo") if r % 2 == 0 else ("kubo", "node")
                modes = MODES[r % 3:] + MODES[:r % 3]
                for side in sides:
                    for mode in modes:
                        for attempt in range(args.retries + 1):
                            if not args.no_idle_wait:
                                wait_for_idle()
                            cpu0 = tree_cpu_secs(pids[side])
                            with ForeignCpu() as foreign:
                                res = wrk_run(ports[side], reqs[side][mode], args.seconds, args.concurrency, tmp)
                            res["cpu_us"] = (tree_cpu_secs(pids[side]) - cpu0) / max(1, res["requests"]) * 1e6
                            res["foreign"] = round(foreign.share, 3)
                            res["attempt"] = attempt
                            if foreign.share <= args.max_foreign:
                                break
                            log(f"round {r} {side} {mode}: other work used {foreign.share:.0%} of the machine, again")
                        results["runs"][side][mode].append(res)
                        log(f"round {r} {side:4} {mode:9}: {res['rps']:.0f} req/s, {res['cpu_us']:.0f} µs CPU/req "
                            f"({res['errors']} errors, foreign {res['foreign']:.0%})")
        results["verify"] = verify_rate()
        log(f"IPNS record verify: {results['verify']['per_second']:.0f}/s")
    finally:
        node.cleanup()
        kubo.cleanup()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(table(results, args))
    return 0


def table(results: dict, args) -> str:
    runs = results["runs"]

    def ok(x):  # runs still disturbed by other work after the retries are left out
        return x.get("foreign", 0) <= args.max_foreign

    def pairs(side, mode, other_side, other_mode, field="rps"):
        """Per-round ratios of one combination to another (rounds where both runs are clean)."""
        out = []
        for a, b in zip(runs[side][mode], runs[other_side][other_mode]):
            if ok(a) and ok(b):
                out.append(a[field] / b[field])
        return out

    def vals(side, mode, field="rps"):
        return [x[field] for x in runs[side][mode] if ok(x)]

    def mmm(xs):
        return f"{min(xs):.0f}/{median(xs):.0f}/{max(xs):.0f}" if xs else "-"

    def span(xs):
        return f"{median(xs):.2f}x ({min(xs):.2f}–{max(xs):.2f})" if xs else "-"

    lines = [f"{args.files} x {args.size} B files, wrk -t1 -c{args.concurrency}, {args.rounds} rounds of "
             f"{args.seconds} s per combination. req/s: min/median/max; ratios: median (min–max) of per-round "
             "ratios; CPU: the server's CPU time per request (all its processes), median", "",
             "| request | node req/s | node vs `/ipfs/` | node CPU/req | Kubo req/s | Kubo vs `/ipfs/` | Kubo CPU/req "
             "| node/Kubo req/s | goal (node vs `/ipfs/` >= 0.95x) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for mode in MODES:
        vs_n = pairs("node", mode, "node", "path")
        vs_k = pairs("kubo", mode, "kubo", "path")
        nk = pairs("node", mode, "kubo", mode)
        cpu_n, cpu_k = vals("node", mode, "cpu_us"), vals("kubo", mode, "cpu_us")
        if mode == "path":
            goal = "(baseline)"
        else:
            goal = "met" if vs_n and median(vs_n) >= GOAL else "missed"
        lines.append(f"| {LABELS[mode]} | {mmm(vals('node', mode))} | {span(vs_n)} | {median(cpu_n):.0f} µs | "
                     f"{mmm(vals('kubo', mode))} | {span(vs_k)} | {median(cpu_k):.0f} µs | {span(nk)} | {goal} |")
    errors = sum(x["errors"] for s in runs.values() for m in s.values() for x in m)
    redone = sum(x.get("attempt", 0) for s in runs.values() for m in s.values() for x in m)
    disturbed = sum(1 for s in runs.values() for m in s.values() for x in m if not ok(x))
    v = results.get("verify")
    lines.append("")
    if v:
        lines.append(f"IPNS record verification (in process, Ed25519, V1+V2 record of {v['record_bytes']} B): "
                     f"{v['per_second']:.0f}/s")
    lines.append(f"errors (non-200 or socket) across all timed runs: {errors}; runs done again because other "
                 f"work used > {args.max_foreign:.0%} of the machine: {redone}; still disturbed (left out): "
                 f"{disturbed}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
