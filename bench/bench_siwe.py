"""SIWE message parse + EOA verification per second on one core, with p99.

    .venv/bin/python bench/bench_siwe.py [--n 5000]

Each iteration: identity.siwe.verify() of a full EIP-4361 message (statement, expiry,
not-before, request id, two resources) signed by an eth-account key: parse, EIP-55,
domain/URI/chain/date checks, EIP-191 recovery, an in-memory nonce check. Goal >= 5,000/s.
Needs coincurve for that (eth-keys' pure-Python recovery alone gives ~160/s).
"""

import argparse
import asyncio
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from eth_account import Account  # noqa: E402
from eth_account.messages import encode_defunct  # noqa: E402

from identity import siwe as siwe_mod  # noqa: E402
from identity.siwe import SiweMessage, verify  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    acct = Account.from_key(b"\x11" * 32)
    msg = SiweMessage.build(
        scheme="https", domain="hearth.example", address=acct.address,
        statement="Sign in to Hearth.", uri="https://hearth.example/login", chain_id=1,
        nonce="abcdef0123456789", issued_at="2026-11-25T12:00:00Z",
        expiration_time="2026-11-25T12:10:00Z", not_before="2026-11-25T11:59:00Z",
        request_id="req-1", resources=("ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
                                       "https://hearth.example/tos"),
    )
    text = msg.to_text()
    sig = acct.sign_message(encode_defunct(text=text)).signature.to_0x_hex()
    now = msg.issued_at_s + 30

    async def run() -> list[float]:
        lat = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            await verify(text, sig, domains=("hearth.example",), chain_ids=(1,), now=now,
                         skew_s=60, nonce_check=lambda n: True)
            lat.append(time.perf_counter() - t0)
        return lat

    asyncio.run(run())  # warm-up
    t0 = time.perf_counter()
    lat = asyncio.run(run())
    wall = time.perf_counter() - t0
    lat.sort()
    p50 = lat[len(lat) // 2] * 1e3
    p99 = lat[int(len(lat) * 0.99)] * 1e3
    print(f"siwe parse+EOA verify: {args.n / wall:,.0f}/s on one core, "
          f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, mean {statistics.fmean(lat) * 1e3:.3f} ms (n={args.n}; "
          f"recovery: {'coincurve' if siwe_mod._coincurve else 'eth-account pure Python, install coincurve'})")


if __name__ == "__main__":
    main()
