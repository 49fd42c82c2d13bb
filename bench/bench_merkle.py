"""Merkle trees of CID batches (chain/merkle.py): build time, RSS, proof size, proof and
verification time, per batch size, each size in a fresh process (so RSS is that of the tree
alone). Prints a markdown table.

    .venv/bin/python bench/bench_merkle.py                   # 1, 100, 10,000, 65,536 leaves
    .venv/bin/python bench/bench_merkle.py --sizes 65536 262144
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import hashlib, json, resource, sys, time
sys.path.insert(0, sys.argv[2])
import psutil
from chain.merkle import MerkleTree, leaf_hash, verify_proof
from storage.cid import CID, RAW
n = int(sys.argv[1])
proc = psutil.Process()
values = [CID.from_digest(hashlib.sha256(i.to_bytes(8, "big")).digest(), codec=RAW).to_bytes() for i in range(n)]
rss0 = proc.memory_info().rss
peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter(); tree = MerkleTree.build(values); build = time.perf_counter() - t
rss1 = proc.memory_info().rss
peak1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
picks = values[:: max(1, n // 1000)]
t = time.perf_counter(); proofs = [tree.proof(v) for v in picks]; proof_t = (time.perf_counter() - t) / len(picks)
leaves = [leaf_hash(v) for v in picks]
t = time.perf_counter()
ok = all(verify_proof(tree.root, lf, p) for lf, p in zip(leaves, proofs))
verify_t = (time.perf_counter() - t) / len(picks)
print(json.dumps({"n": n, "build_s": build, "rss_tree_mib": (rss1 - rss0) / 2**20,
                  "peak_growth_mib": max(0, peak1 - max(peak0, rss0)) / 2**20, "rss_total_mib": rss1 / 2**20,
                  "proof_bytes": 32 * max(len(p) for p in proofs), "proof_us": proof_t * 1e6,
                  "verify_us": verify_t * 1e6, "ok": ok}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 10_000, 65_536])
    args = ap.parse_args()
    print("| leaves | build | RSS of the tree | peak RSS growth | process RSS | proof | proof lookup | verify (no chain) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(ROOT)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        assert r["ok"]
        print(f"| {n:,} | {r['build_s'] * 1000:.1f} ms | {r['rss_tree_mib']:.1f} MiB | {r['peak_growth_mib']:.1f} MiB | "
              f"{r['rss_total_mib']:.0f} MiB | {r['proof_bytes']} B | {r['proof_us']:.0f} µs | {r['verify_us']:.0f} µs |")


if __name__ == "__main__":
    main()
