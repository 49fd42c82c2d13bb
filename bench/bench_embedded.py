"""Import throughput and peak memory: embedded engine vs Kubo `ipfs add`, side by side.

    .venv/bin/python bench/bench_embedded.py            # 1 GiB
    .venv/bin/python bench/bench_embedded.py --size-mb 256

Each importer runs in its own child process on the same file (already in the page
cache for both: the file is read once before timing) into a fresh store; peak RSS is
the child's ru_maxrss (os.wait4). Kubo: `ipfs add -Q` (pins, writes blocks, default
flatfs sync=false) in an offline repo made with `ipfs init --profile=test`. Embedded:
EmbeddedEngine.add fed by 1 MiB reads (an upload stream), pin=True, fsync off.
Both report the same root CID or the bench fails. Not a test: prints a table.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IPFS = Path.home() / ".cache/hearth/tools/ipfs-v0.42.0"


def make_file(path: Path, size: int) -> None:
    """Deterministic pseudo-random bytes (sha256 counter stream, 1 MiB pieces)."""
    block = 1 << 20
    seed = hashlib.sha256(b"hearth-bench").digest()
    piece = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(block // 32))
    with open(path, "wb") as f:
        written = 0
        i = 0
        while written < size:
            n = min(block, size - written)
            # vary each MiB so blocks do not dedup
            f.write(i.to_bytes(8, "big") + piece[8:n] if n > 8 else piece[:n])
            written += n
            i += 1


def run_child(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return wall, ru.ru_maxrss * 1024, out.decode()


def child_embedded(file: str, data_dir: str, read_size: int, cid_version: int) -> None:
    sys.path.insert(0, str(ROOT))
    from storage.embedded import EmbeddedEngine
    from storage.engine import AddEntry, AddOptions

    async def main():
        engine = EmbeddedEngine(Path(data_dir))
        await engine.start()

        async def chunks():
            with open(file, "rb", buffering=0) as f:
                while True:
                    b = await asyncio.to_thread(f.read, read_size)
                    if not b:
                        return
                    yield b

        async def entries():
            yield AddEntry(os.path.basename(file), chunks())

        t0 = time.perf_counter()
        res = await engine.add(entries(), AddOptions(cid_version=cid_version))
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        n = 0
        async for piece in engine.cat(res.root):
            n += len(piece)
        cat_dt = time.perf_counter() - t1
        await engine.close()
        print(json.dumps({"root": str(res.root), "add_s": dt, "cat_s": cat_dt, "cat_bytes": n}))

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--read-size", type=int, default=1 << 20, help="bytes per upload read (embedded)")
    ap.add_argument("--cid-version", type=int, default=0, choices=(0, 1))
    ap.add_argument("--ipfs", default=os.environ.get("HEARTH_IPFS_BIN", str(DEFAULT_IPFS)))
    ap.add_argument("--workdir", default=None, help="where to put the file and stores (default: a temp dir)")
    ap.add_argument("--child-embedded", nargs=2, metavar=("FILE", "DATADIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_embedded:
        child_embedded(*args.child_embedded, args.read_size, args.cid_version)
        return

    work = Path(tempfile.mkdtemp(prefix="hearth-bench-", dir=args.workdir))
    try:
        size = args.size_mb << 20
        src = work / "input.bin"
        print(f"generating {args.size_mb} MiB test file in {work} ...", flush=True)
        make_file(src, size)
        with open(src, "rb") as f:  # warm the page cache for both sides
            while f.read(8 << 20):
                pass

        # Kubo
        repo = work / "kubo-repo"
        env = dict(os.environ, IPFS_PATH=str(repo))
        subprocess.run([args.ipfs, "init", "--profile=test"], env=env, check=True, capture_output=True)
        kubo_args = [args.ipfs, "add", "-Q", "--pin=true"]
        if args.cid_version == 1:
            kubo_args.append("--cid-version=1")
        k_wall, k_rss, k_out = run_child(kubo_args + [str(src)], env)
        k_root = k_out.strip()

        # Embedded
        cmd = [sys.executable, __file__, "--read-size", str(args.read_size), "--cid-version", str(args.cid_version),
               "--child-embedded", str(src), str(work / "embedded")]
        e_wall, e_rss, e_out = run_child(cmd)
        e = json.loads(e_out.strip().splitlines()[-1])

        mb = size / 1e6
        print()
        print(f"file: {args.size_mb} MiB, cid-version {args.cid_version}, cpus {os.cpu_count()}")
        print(f"{'importer':<28}{'seconds':>10}{'MB/s':>10}{'peak RSS MiB':>15}  root")
        print(f"{'kubo ipfs add (process)':<28}{k_wall:>10.2f}{mb / k_wall:>10.0f}{k_rss / 2**20:>15.1f}  {k_root}")
        print(f"{'embedded add (in-process)':<28}{e['add_s']:>10.2f}{mb / e['add_s']:>10.0f}{e_rss / 2**20:>15.1f}  {e['root']}")
        e_proc = e_wall - e["cat_s"]
        print(f"{'embedded (process, +startup)':<28}{e_proc:>10.2f}{mb / e_proc:>10.0f}")
        print(f"throughput ratio embedded/kubo: {k_wall / e['add_s']:.2f}x (add call), "
              f"{k_wall / e_proc:.2f}x (whole process incl. interpreter start)")
        print(f"embedded cat: {e['cat_bytes'] / 1e6 / e['cat_s']:.0f} MB/s (verified reads)")
        if e["root"] != k_root:
            raise SystemExit(f"ROOT MISMATCH: embedded {e['root']} != kubo {k_root}")
        print("roots match")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
