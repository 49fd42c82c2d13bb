"""Helpers for gateway tests: upload fixtures and CAR parsing."""
from __future__ import annotations

import aiohttp

from storage.car import CarReader


async def upload(client, data: bytes, filename: str = "file.bin", **params) -> dict:
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    resp = await client.post(f"/api/v1/content?filename={filename}" + ("&" + qs if qs else ""), data=data, headers=client.auth)
    body = await resp.json()
    assert resp.status == 201, body
    return body


async def upload_tree(client, files: dict[str, bytes], **params) -> dict:
    # quote_fields=False: send the names as they are (aiohttp's default percent-encodes
    # them, "a/b" -> "a%2Fb", and the node takes a multipart filename as sent)
    form = aiohttp.FormData(quote_fields=False)
    for name, data in files.items():
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    qs = "&".join(f"{k}={v}" for k, v in {"wrap": "true", **params}.items())
    resp = await client.post(f"/api/v1/content?{qs}", data=form, headers=client.auth)
    body = await resp.json()
    assert resp.status == 201, body
    return body


def parse_car(data: bytes):
    """Awaitable: (roots, [(cid, block), ...]) of a CAR held in memory, every block verified."""
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        chunk = data[pos : pos + n]
        pos += len(chunk)
        return chunk

    async def go():
        reader = CarReader(read)
        roots = await reader.read_header()
        return roots, [(c, d) async for c, d in reader.blocks()]

    return go()
