"""application/vnd.ipld.car: a CARv1 stream of the blocks behind a content path,
with dag-scope (block | entity | all) and entity-bytes, depth-first, each block
once unless dups=y is asked for."""
from __future__ import annotations

import hashlib

from aiohttp import web

from storage import unixfs
from storage.car import encode_block, encode_header

from ..content_origin import public_path
from ..errors import bad_request
from .resolve import resolve_path
from .headers import GatewayRequest, common_headers, content_disposition, etag_matches, not_modified


class _KeepAll(set):
    """A 'seen' set that remembers nothing: dups=y sends every occurrence."""

    def __contains__(self, item):
        return False

    def add(self, item):
        pass


def car_options(req: GatewayRequest) -> tuple[str, tuple | None, str, str]:
    q = req.request.query
    version = req.car_params.get("version", "1")
    if version != "1":
        raise bad_request(f"CAR version {version} is not supported (only 1)", "unsupported_car_version")
    order = req.car_params.get("order", "dfs")
    if order not in ("dfs", "unk"):
        raise bad_request(f"CAR order {order!r} is not supported (dfs, unk)", "invalid_car_order")
    dups = req.car_params.get("dups", "n")
    if dups not in ("y", "n"):
        raise bad_request(f"CAR dups must be y or n, got {dups!r}", "invalid_car_dups")
    scope = q.get("dag-scope", "all")
    if scope not in ("block", "entity", "all"):
        raise bad_request(f"dag-scope must be block, entity or all, got {scope!r}", "invalid_dag_scope")
    entity_bytes = None
    if "entity-bytes" in q:
        try:
            entity_bytes = unixfs.parse_entity_bytes(q["entity-bytes"])
        except ValueError as exc:
            raise bad_request(f"invalid entity-bytes {q['entity-bytes']!r}: {exc}", "invalid_entity_bytes") from None
        scope = "entity"
    return scope, entity_bytes, order, dups


async def serve(req: GatewayRequest, get_block) -> web.StreamResponse:
    scope, entity_bytes, _order, dups = car_options(req)
    # Resolve the path first (before any byte is sent): a missing root is a 404.
    resolved = await resolve_path(req, get_block)
    node = resolved.node
    # A range wholly past the end is answered like dag-scope=block (as Kubo does),
    # so the client gets the root block and its blocksizes to see why.

    fingerprint = hashlib.sha256(
        f"{req.content_path}|{scope}|{entity_bytes}|dfs|{dups}".encode()
    ).hexdigest()[:16]
    headers = common_headers(req, resolved.roots, f'W/"{req.root}.car.{fingerprint}"')
    headers["Content-Type"] = f"application/vnd.ipld.car; version=1; order=dfs; dups={dups}"
    headers["Content-Disposition"] = content_disposition(req.filename or f"{req.root}.car", True)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Accept-Ranges"] = "none"
    if req.format_from_accept:
        qs = req.request.rel_url.raw_query_string
        headers["Content-Location"] = public_path(req.request) + "?" + (qs + "&" if qs else "") + "format=car"
    if etag_matches(req.request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    if req.is_head:
        return web.Response(status=200, headers=headers)

    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(req.request)
    await resp.write(encode_header([req.root]))
    seen: set = _KeepAll() if dups == "y" else set()
    buf = bytearray()

    async def emit(cid, data):
        buf.extend(encode_block(cid, data))
        if len(buf) >= 256 * 1024:
            await resp.write(bytes(buf))
            buf.clear()

    try:
        for cid in resolved.path_blocks:
            key = (cid.codec, cid.multihash)
            if key in seen:
                continue
            seen.add(key)
            await emit(cid, await get_block(cid))
        if scope == "block":
            key = (node.cid.codec, node.cid.multihash)
            if key not in seen:
                seen.add(key)
                await emit(node.cid, node.block)
        elif scope == "entity":
            async for cid, data in unixfs.walk_entity(get_block, node, entity_bytes, seen):
                await emit(cid, data)
        else:
            async for cid, data in unixfs.walk_all(get_block, node, seen):
                await emit(cid, data)
    except Exception:  # a missing block (BlockNotFound) or a failing engine
        # Committed to 200 already: end the stream short; clients verify CAR completeness.
        if buf:
            await resp.write(bytes(buf))
        if req.request.transport is not None:
            req.request.transport.close()
        return resp
    if buf:
        await resp.write(bytes(buf))
    await resp.write_eof()
    return resp
