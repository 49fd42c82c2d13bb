"""Helpers for Pinning Services API tests: requests, status polling, random CIDs."""
from __future__ import annotations

import asyncio
import json
import os
import time

from storage.cid import CID


# a CID nothing in this test network has (Kubo runs with no routing and no peers)
def random_cid() -> str:
    return str(CID.from_digest(os.urandom(32)))


def kubo_content(kubo, pin: bool = False) -> str:
    """Put fresh bytes in Kubo's blockstore (unpinned unless pin); return the CIDv0."""
    return kubo.ipfs("add", "-Q", f"--pin={'true' if pin else 'false'}", input=os.urandom(64) + b"hearth").strip()


def kubo_pinned(kubo, cid: str) -> bool:
    return cid in kubo.ipfs("pin", "ls", "--type=recursive", cid, check=False)


async def post_pin(node, body, headers=None, path="/psa/pins"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    resp = await node.post(path, data=data, headers={**(node.auth if headers is None else headers),
                                                      "Content-Type": "application/json"})
    return resp.status, await resp.json()


async def add(node, cid, **fields):
    status, body = await post_pin(node, {"cid": cid, **fields})
    assert status == 202, body
    return body


async def get(node, rid):
    resp = await node.get(f"/psa/pins/{rid}", headers=node.auth)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def wait_status(node, rid, want=("pinned", "failed"), timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        body = await get(node, rid)
        if body["status"] in want:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"request {rid} still {body['status']} after {timeout}s: {body}")
        await asyncio.sleep(0.05)
