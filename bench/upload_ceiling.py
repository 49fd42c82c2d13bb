"""The ceiling for any node that forwards uploads to Kubo's add, on this machine.

A minimal forwarder (a thread per connection, blocking sockets, no HTTP library):
it reads a raw-body `POST` with a Content-Length, sends Kubo's `/api/v0/add` the
multipart head, moves the body client socket -> pipe -> Kubo socket with
os.splice (no copy through Python), sends the tail, and answers 201 with the CID
Kubo returned. Nothing a node must do is there (auth, records, limits, pins
checked): it is the least work any proxy in front of Kubo can do per upload.

The same client (bench/common.py: aiohttp, 1 MiB pieces, Content-Length, a new
connection per upload, fresh bytes every run) uploads 1 GiB to the forwarder, to
`hearth serve` (Kubo engine, same Kubo) and to Kubo's `/api/v0/add` directly; the
order rotates between runs; each run after a `sync` and an idle machine, and
done again if other work took more than 10% of the machine meanwhile; each
upload is unpinned and collected afterwards (untimed).

    .venv/bin/python bench/upload_ceiling.py                 # 1 GiB, 5 rounds
    .venv/bin/python bench/upload_ceiling.py --runs 3 --big-mb 256

Not a test and not product code.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402

from common import (  # noqa: E402
    MiB, ForeignCpu, HearthNode, adata_chunks, kubo_add, log, median, node_upload, start_kubo, tree_cpu_secs,
    wait_for_idle,
)

PIPE = 1 << 20


def _splice_all(src: int, dst: int, n: int) -> None:
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, 1031, PIPE)  # F_SETPIPE_SZ
    except OSError:
        pass
    try:
        while n:
            got = os.splice(src, w, min(n, PIPE), flags=os.SPLICE_F_MOVE)
            if got == 0:
                raise ConnectionError("short body")
            n -= got
            while got:
                got -= os.splice(r, dst, got, flags=os.SPLICE_F_MOVE | (os.SPLICE_F_MORE if n else 0))
    finally:
        os.close(r)
        os.close(w)


class Forwarder:
    """POST /?filename=NAME, raw body with Content-Length -> Kubo add -> 201 {"cid"}.
    Runs in a process of its own (`--serve-forwarder`), as the node does."""

    def __init__(self, kubo_port: int, unix_path: str | None = None):
        self.kubo_port = kubo_port
        self.unix_path = unix_path  # Kubo's API on a Unix socket instead of TCP
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                b = conn.recv(1)  # one byte at a time: nothing of the body is read into Python
                if not b:
                    return
                head += b
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
            size = int(headers["content-length"])
            name = parse_qs(urlsplit(target).query).get("filename", ["file"])[0]
            boundary = "ceiling" + os.urandom(8).hex()
            part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            if self.unix_path:
                k = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                k.connect(self.unix_path)
            else:
                k = socket.create_connection(("127.0.0.1", self.kubo_port))
            with k:
                k.sendall((f"POST /api/v0/add?cid-version=1&raw-leaves=true&pin=true&progress=false&quieter=true "
                           f"HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                           f"Content-Length: {len(part) + size + len(tail)}\r\n\r\n").encode() + part)
                _splice_all(conn.fileno(), k.fileno(), size)
                k.sendall(tail)
                answer = b""
                while chunk := k.recv(65536):  # HTTP/1.0: Kubo closes after the response
                    answer += chunk
            body = answer.split(b"\r\n\r\n", 1)[1]
            cid = [json.loads(x)["Hash"] for x in body.splitlines() if x.strip() and b"Hash" in x][-1]
            out = json.dumps({"cid": cid}).encode()
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(out)).encode() + b"\r\n\r\n" + out)


class _Target:
    """What node_upload needs of a node: url, auth."""

    def __init__(self, url: str):
        self.url, self.auth = url, {}


def start_forwarder(kubo_port: int, unix_path: str | None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve-forwarder", str(kubo_port)]
                            + (["--forwarder-unix", unix_path] if unix_path else []), stdout=subprocess.PIPE)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


async def run(args) -> dict:
    kubo = start_kubo(unix_api=args.kubo_unix)
    node = HearthNode("kubo", kubo_api=kubo.api_unix if args.kubo_unix else kubo.api_url,
                      env=dict(kv.split("=", 1) for kv in args.node_env)).start()
    fwd_proc, fwd_url = start_forwarder(kubo.api_port, kubo.api_socket if args.kubo_unix else None)
    size = args.big_mb * MiB
    sides = ["forwarder", "node", "kubo"]
    out: dict = {s: [] for s in sides} | {f"cpu_{s}": [] for s in sides} | {"retries": 0}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                         timeout=aiohttp.ClientTimeout(total=None, sock_read=600)) as session:
            seed = 5000
            for r in range(args.runs):
                order = sides[r % 3:] + sides[:r % 3]
                for side in order:
                    for attempt in range(4):
                        os.sync()
                        wait_for_idle()
                        seed += 1
                        pids = (("node", node.pid), ("kubo", kubo.proc.pid), ("forwarder", fwd_proc.pid))
                        c0 = {k: tree_cpu_secs(p) for k, p in pids}
                        with ForeignCpu() as foreign:
                            t0 = time.perf_counter()
                            if side == "kubo":
                                cid = await kubo_add(session, kubo, adata_chunks(size, seed=seed), "big.bin", size=size)
                            else:
                                target = node if side == "node" else _Target(fwd_url)
                                cid = (await node_upload(session, target, adata_chunks(size, seed=seed), "big.bin",
                                                         size=size))["cid"]
                            secs = time.perf_counter() - t0
                        cpu = {k: round(tree_cpu_secs(p) - c0[k], 2) for k, p in pids}
                        if side == "node":
                            async with session.delete(f"{node.url}/api/v1/content/{cid}", headers=node.auth) as x:
                                await x.read()
                        else:
                            async with session.post(f"{kubo.api_url}/api/v0/pin/rm", params={"arg": cid}) as x:
                                await x.read()
                        async with session.post(f"{kubo.api_url}/api/v0/repo/gc") as x:
                            await x.read()
                        if foreign.share <= 0.10 or attempt == 3:
                            break
                        out["retries"] += 1
                        log(f"{side} run {r}: other work used {foreign.share:.0%} of the machine: again")
                    out[side].append(size / MiB / secs)
                    out[f"cpu_{side}"].append(cpu)
                    log(f"{side} run {r}: {size / MiB / secs:.0f} MiB/s, cpu {cpu}, {cid}")
    finally:
        fwd_proc.kill()
        fwd_proc.wait()
        node.cleanup()
        kubo.cleanup()
    return out


def render(out: dict, args) -> str:
    k = out["kubo"]
    rows = ["| side | MiB/s min / median / max | vs Kubo direct, median (min–max) of per-round ratios | "
            "CPU s per GiB: forwarder or node / Kubo (median) |", "|---|---:|---:|---:|"]
    gib = args.big_mb / 1024
    for side in ("forwarder", "node", "kubo"):
        xs = out[side]
        ratios = [a / b for a, b in zip(xs, k)]
        cpu_mid = median(c[side] if side != "kubo" else 0.0 for c in out[f"cpu_{side}"]) / gib
        cpu_kubo = median(c["kubo"] for c in out[f"cpu_{side}"]) / gib
        rows.append(f"| {side} | {min(xs):.0f} / {median(xs):.0f} / {max(xs):.0f} | "
                    f"{median(ratios):.2f}x ({min(ratios):.2f}–{max(ratios):.2f}) | "
                    f"{cpu_mid:.2f} / {cpu_kubo:.2f} |")
    nf = [a / b for a, b in zip(out["node"], out["forwarder"])]
    link = "a Unix socket" if args.kubo_unix else "loopback TCP"
    rows += ["", f"forwarder and node reach Kubo's RPC over {link}; "
                 f"node / splice forwarder (the ceiling): {median(nf):.2f}x ({min(nf):.2f}–{max(nf):.2f}); "
                 f"{args.big_mb} MiB, {len(k)} rounds, order rotated; runs done again for other work: {out['retries']}"]
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--big-mb", type=int, default=1024)
    p.add_argument("--runs", type=int, default=5, help="rounds (each: forwarder, node, Kubo; order rotated)")
    p.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--kubo-unix", action="store_true",
                   help="the forwarder and the node reach Kubo's RPC over a Unix socket (Kubo direct stays TCP)")
    p.add_argument("--serve-forwarder", type=int, metavar="KUBO_PORT", help=argparse.SUPPRESS)
    p.add_argument("--forwarder-unix", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_forwarder:
        fwd = Forwarder(args.serve_forwarder, args.forwarder_unix)
        print(fwd.port, flush=True)
        fwd.serve_forever()
        return
    out = asyncio.run(run(args))
    table = render(out, args)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(out | {"table": table}, indent=2))


if __name__ == "__main__":
    main()
