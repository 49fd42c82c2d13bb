"""Shared benchmark helpers: a Kubo daemon, a `hearth serve` subprocess, peak-RSS
sampling, deterministic data streams and small load generators (aiohttp, wrk, curl).

Not a test module: imported by the bench_*.py scripts, which are run by hand.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Iterable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.kubo import KuboDaemon, free_port  # noqa: E402

import aiohttp  # noqa: E402
import psutil  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else float("nan")


# --- Kubo -----------------------------------------------------------------------------------------
def start_kubo(unix_api: bool = False) -> KuboDaemon:
    """A fresh offline Kubo (tests/support/kubo.py) in a temp repo; call .cleanup() when done.
    unix_api: its RPC also listens on a Unix socket (kubo.api_unix, for the node)."""
    kubo = KuboDaemon(unix_api=unix_api)
    kubo.start()
    return kubo


# --- the node ----------------------------------------------------------------------------------------
def hearth_cmd() -> list[str]:
    exe = ROOT / ".venv" / "bin" / "hearth"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway.cli"]


class HearthNode:
    """`hearth serve` as a child process on a free loopback port, with a fresh data
    dir and one bearer token."""

    def __init__(self, engine: str = "kubo", kubo_api: str | None = None, data_dir: str | None = None,
                 env: dict | None = None, log_level: str = "warning"):
        self.engine = engine
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="hearth-bench-")
        self.port = free_port()
        self.env = dict(os.environ, HEARTH_STORAGE_ENGINE=engine, HEARTH_SERVER_LOG_LEVEL=log_level,
                        PYTHONUNBUFFERED="1")
        self.env.pop("HEARTH_CONFIG", None)
        if kubo_api:
            self.env["HEARTH_STORAGE_KUBO_API"] = kubo_api
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 60) -> "HearthNode":
        out = subprocess.run(hearth_cmd() + ["token", "create", "--name", "bench", "--data-dir", self.data_dir],
                             env=self.env, cwd=ROOT, capture_output=True, text=True, check=True)
        self.token = out.stdout.strip().splitlines()[0]
        self._log = open(Path(self.data_dir) / "serve.log", "ab")
        self.proc = subprocess.Popen(hearth_cmd() + ["serve", "--port", str(self.port), "--data-dir", self.data_dir],
                                     env=self.env, cwd=ROOT, stdout=self._log, stderr=self._log,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hearth serve exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hearth serve did not become ready: {self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (Path(self.data_dir) / "serve.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --- peak RSS -------------------------------------------------------------------------------------------
class RssSampler:
    """Peak resident set size of one process over a window.

    Samples psutil's RSS every `interval` seconds on a thread; on Linux it also
    resets the kernel's high-water mark at start (/proc/PID/clear_refs, 5) and
    reads VmHWM at stop, so a spike between two samples is not missed. The peak
    is the larger of both."""

    def __init__(self, pid: int, interval: float = 0.02, tree: bool = False):
        self.proc = psutil.Process(pid)
        self.interval = interval
        # tree=True: the process and its descendants (a supervisor and its workers);
        # `peak` is then the largest peak of any one of them, `peak_total` the
        # largest sampled sum of all of them
        self.procs = process_tree(pid) if tree else [self.proc]
        self.peak_sampled = 0
        self.peak_hwm = 0
        self.peak_total = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _proc_file(self, name: str, pid: int | None = None) -> Path:
        return Path(f"/proc/{self.proc.pid if pid is None else pid}/{name}")

    def __enter__(self) -> "RssSampler":
        for p in self.procs:
            try:
                self._proc_file("clear_refs", p.pid).write_text("5")
            except OSError:
                pass
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            total = alive = 0
            for p in self.procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                alive += 1
                total += rss
                if rss > self.peak_sampled:
                    self.peak_sampled = rss
            if not alive:
                return
            self.samples += 1
            self.peak_total = max(self.peak_total, total)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        for p in self.procs:
            try:
                for line in self._proc_file("status", p.pid).read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_hwm = max(self.peak_hwm, int(line.split()[1]) * 1024)
            except OSError:
                pass

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.peak_hwm)


def rss_now(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def cpu_secs(pid: int) -> float:
    """user+system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return t.user + t.system


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and its descendants (`hearth serve` with several workers is a
    supervisor and its worker processes)."""
    try:
        root = psutil.Process(pid)
        return [root] + root.children(recursive=True)
    except psutil.Error:
        return []


def tree_cpu_secs(pid: int) -> float:
    """user+system CPU seconds used so far by a process and its live descendants."""
    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class ForeignCpu:
    """How much of the machine something else used during a block: all CPUs' busy
    time (user, nice, system, irq, softirq, steal) minus what this process and its
    descendants (the node, Kubo, curl...) used, as a share of wall time x CPUs.
    Kernel work done for the measured processes outside their own accounting
    (softirq, writeback) counts as foreign too, so an undisturbed run is not 0
    (0.02-0.06 for an upload here); another engineer's benchmark on the same 2
    cores shows as 0.15 and more."""

    def __init__(self):
        self.share = 0.0
        self.seconds = 0.0

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)

    @staticmethod
    def _own() -> float:
        # live descendants, plus the children already reaped (curl, `ipfs add`...)
        import resource

        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return tree_cpu_secs(os.getpid()) + ru.ru_utime + ru.ru_stime

    def __enter__(self) -> "ForeignCpu":
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        self.seconds = max(0.0, (self._busy() - self._busy0) - (self._own() - self._own0))
        self.share = self.seconds / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0


def wait_for_idle(min_idle: float = 0.85, window: float = 0.5, max_wait: float = 30.0) -> float:
    """Wait until the whole machine is at least min_idle idle over `window`
    seconds (others may share it), at most max_wait; return the last idle share."""
    deadline = time.time() + max_wait
    idle = psutil.cpu_times_percent(interval=window).idle / 100
    while idle < min_idle and time.time() < deadline:
        idle = psutil.cpu_times_percent(interval=window).idle / 100
    if idle < min_idle:
        log(f"machine still busy ({idle:.0%} idle): numbers may be noisy")
    return idle


# --- data ---------------------------------------------------------------------------------------------------
_BASE: dict[int, bytes] = {}


def _base_block(size: int = MiB) -> bytes:
    if size not in _BASE:
        _BASE[size] = random.Random(0x4EA27).randbytes(size)
    return _BASE[size]


def data_chunks(total: int, seed: int, chunk: int = MiB, stamp_every: int = 4096) -> Iterable[bytes]:
    """`total` pseudo-random bytes as `chunk`-sized pieces, never held whole.

    A fixed random MiB stamped with (seed, counter) every `stamp_every` bytes, so
    no block under any chunker repeats within a stream or across seeds (no dedup
    flattering either side), at the cost of one copy per chunk."""
    base = _base_block(chunk)
    stamps = range(0, chunk, stamp_every)
    pack = struct.Struct(">QQ").pack_into
    sent = 0
    i = 0
    while sent < total:
        buf = bytearray(base)
        for off in stamps:
            pack(buf, off, seed, i)
            i += 1
        n = min(chunk, total - sent)
        yield bytes(buf[:n]) if n < chunk else bytes(buf)
        sent += n


async def adata_chunks(total: int, seed: int, chunk: int = MiB) -> AsyncIterator[bytes]:
    for piece in data_chunks(total, seed, chunk):
        yield piece


def small_file(i: int, size: int, seed: int = 7) -> bytes:
    return random.Random(seed * 1_000_003 + i).randbytes(size)


# --- uploads ----------------------------------------------------------------------------------------------------
async def node_upload(session: aiohttp.ClientSession, node: HearthNode, body, filename: str = "bench.bin",
                      size: int | None = None, cid_version: int = 1) -> dict:
    """POST /api/v1/content with a raw body (bytes or an async iterator of bytes);
    cid_version 1 (raw leaves, the node's default) or 0 (dag-pb leaves, as plain `ipfs add`)."""
    headers = dict(node.auth, **{"Content-Type": "application/octet-stream"})
    if size is not None:
        headers["Content-Length"] = str(size)
    params = {"filename": filename} if cid_version == 1 else {"filename": filename, "cid_version": str(cid_version)}
    async with session.post(f"{node.url}/api/v1/content", params=params, data=body,
                            headers=headers) as r:
        text = await r.text()
        if r.status != 201:
            raise RuntimeError(f"node upload failed: {r.status} {text[:500]}")
        return json.loads(text)


KUBO_ADD_PARAMS = {"cid-version": "1", "pin": "true", "progress": "false", "quieter": "true"}


async def kubo_add(session: aiohttp.ClientSession, kubo: KuboDaemon, body, filename: str = "bench.bin",
                   size: int | None = None, cid_version: int = 1) -> str:
    """POST Kubo's /api/v0/add (multipart, cid-version=1 unless told) and return the root CID."""
    boundary = "benchboundary" + os.urandom(8).hex()
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    async def multipart():
        yield head
        if isinstance(body, (bytes, bytearray)):
            yield bytes(body)
        else:
            async for piece in body:
                yield piece
        yield tail

    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if size is not None:
        headers["Content-Length"] = str(len(head) + size + len(tail))
    params = dict(KUBO_ADD_PARAMS, **{"cid-version": str(cid_version)})
    async with session.post(f"{kubo.api_url}/api/v0/add", params=params, data=multipart(),
                            headers=headers) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"kubo add failed: {r.status} {text[:500]}")
        lines = [json.loads(x) for x in text.splitlines() if x.strip()]
        hashes = [x["Hash"] for x in lines if "Hash" in x]
        if not hashes:
            raise RuntimeError(f"kubo add returned no hash: {text[:500]}")
        return hashes[-1]


# --- downloads -----------------------------------------------------------------------------------------------
def have_curl() -> bool:
    return shutil.which("curl") is not None


def curl_download(url: str) -> tuple[int, float]:
    """(bytes, seconds) for one GET into /dev/null, timed by curl itself."""
    out = subprocess.run(["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url],
                         capture_output=True, text=True, check=True)
    size, secs = out.stdout.split()
    return int(size), float(secs)


async def aiohttp_download(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    n = 0
    async with session.get(url) as r:
        if r.status != 200:
            raise RuntimeError(f"GET {url}: {r.status}")
        while True:
            piece = await r.content.readany()
            if not piece:
                break
            n += len(piece)
    return n, time.perf_counter() - t0


# --- small-request load ------------------------------------------------------------------------------------
@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    bytes: int
    generator: str
    latencies: list[float] = field(default_factory=list, repr=False)
    p50_ms: float | None = None
    p99_ms: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        out = {"requests": self.requests, "errors": self.errors, "seconds": round(self.seconds, 3),
               "rps": round(self.rps, 1), "bytes": self.bytes, "generator": self.generator}
        if self.latencies:
            lat = sorted(self.latencies)
            out["p50_ms"] = round(lat[len(lat) // 2] * 1000, 2)
            out["p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 2)
        elif self.p50_ms is not None:
            out["p50_ms"], out["p99_ms"] = round(self.p50_ms, 2), round(self.p99_ms or 0, 2)
        return out


async def aiohttp_load(base_url: str, paths: list[str], concurrency: int = 32, passes: int = 1,
                       min_seconds: float = 0.0, expect_size: int | None = None) -> LoadResult:
    """GET every path `passes` times (and keep going, whole passes, until
    min_seconds have passed) with `concurrency` workers on one keep-alive
    connector. Each worker pulls the next path from a shared cursor."""
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False, keepalive_timeout=60)
    errors = 0
    nbytes = 0
    done = 0
    lat: list[float] = []
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        t0 = time.perf_counter()
        pass_no = 0
        while True:
            it = iter(paths)

            async def worker():
                nonlocal errors, nbytes, done
                for p in it:
                    s = time.perf_counter()
                    try:
                        async with session.get(base_url + p) as r:
                            body = await r.read()
                            if r.status != 200 or (expect_size is not None and len(body) != expect_size):
                                errors += 1
                            nbytes += len(body)
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        errors += 1
                    lat.append(time.perf_counter() - s)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            pass_no += 1
            if pass_no >= passes and time.perf_counter() - t0 >= min_seconds:
                break
        secs = time.perf_counter() - t0
    return LoadResult(done, errors, secs, nbytes, f"aiohttp {aiohttp.__version__} (1 process, {concurrency} keep-alive conns)", lat)


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


_WRK_LUA = r"""
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
local i = 0
local bad = 0
request = function()
  i = i %% #paths + 1
  return wrk.format("GET", paths[i])
end
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("WRKJSON {\"requests\": %%d, \"duration_us\": %%d, \"bytes\": %%d, \"non2xx\": %%d, \"socket_errors\": %%d, \"p50_us\": %%d, \"p99_us\": %%d}\n",
    summary.requests, summary.duration, summary.bytes, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


def h2load_once(base_url: str, paths: list[str], concurrency: int = 32) -> LoadResult:
    """Each path requested once (a cold pass), over `concurrency` keep-alive HTTP/1.1
    connections, by h2load (nghttp2-client, C: it leaves the CPU to the servers): one
    h2load -c1 per connection with its own slice of the paths, all started at once;
    req/s is the paths over the time from the start to the last answer."""
    slices = [paths[i::concurrency] for i in range(concurrency)]
    with tempfile.TemporaryDirectory(prefix="hearth-h2load-") as tmp:
        procs = []
        started = time.perf_counter()
        for n, part in enumerate(s for s in slices if s):
            uris = Path(tmp) / f"{n}.txt"
            uris.write_text("".join(f"{base_url}{p}\n" for p in part))
            procs.append(subprocess.Popen(["h2load", "--h1", "-c1", "-n", str(len(part)), "-i", str(uris)],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [p.communicate()[0] for p in procs]
        elapsed = time.perf_counter() - started
    ok = sum(int(m.group(1)) for o in outs for m in [re.search(r"status codes: (\d+) 2xx", o)] if m)
    version = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.split()[-1]
    return LoadResult(len(paths), len(paths) - ok, elapsed, 0,
                      f"h2load {version} ({concurrency} connections), each path once")


def wrk_load(base_url: str, paths: list[str], concurrency: int = 32, seconds: int = 10, threads: int = 1) -> LoadResult:
    """wrk -t{threads} -c{concurrency} -d{seconds}s cycling through paths (round-robin per wrk thread)."""
    with tempfile.TemporaryDirectory(prefix="hearth-wrk-") as tmp:
        plist = Path(tmp) / "paths.txt"
        plist.write_text("\n".join(paths) + "\n")
        script = Path(tmp) / "paths.lua"
        script.write_text(_WRK_LUA % str(plist))
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
                              "-s", str(script), base_url], capture_output=True, text=True, check=True)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk output not understood: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    d = json.loads(line[len("WRKJSON "):])
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    return LoadResult(d["requests"], d["non2xx"] + d["socket_errors"], d["duration_us"] / 1e6, d["bytes"],
                      f"{version} (-t{threads} -c{concurrency})", p50_ms=d["p50_us"] / 1000, p99_ms=d["p99_us"] / 1000)
