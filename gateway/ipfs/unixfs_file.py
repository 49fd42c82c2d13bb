"""Deserialized UnixFS files: Content-Type, single ranges, streamed bodies."""
from __future__ import annotations

import re

from aiohttp import web

from storage import unixfs
from storage.cid import RAW
from storage.engine import StorageEngine

from ..cache import ResponseCache
from ..errors import HTTPError
from . import mime
from .headers import GatewayRequest, common_headers, content_disposition, etag_matches, not_modified, cache_key_for

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
STREAM_CHUNK = 256 * 1024


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """(start, end_exclusive) for a single satisfiable range; None to serve it all.
    Raises HTTPError 416 when the range cannot be satisfied."""
    if not value:
        return None
    m = _RANGE.match(value.strip().replace(" ", ""))
    if not m:
        return None  # multiple or malformed ranges: RFC 9110 lets us ignore Range
    first, last = m.groups()
    if not first and not last:
        return None
    if not first:
        n = int(last)
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size
    start = int(first)
    end = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> HTTPError:
    return HTTPError(416, "range_not_satisfiable", f"range not satisfiable for {size} bytes",
                     {"Content-Range": f"bytes */{size}"})


def send_bytes(req: GatewayRequest, headers: dict, body: bytes, cache: ResponseCache | None) -> web.Response:
    """A whole-in-memory body (small blocks/files) with Range support, cached."""
    size = len(body)
    headers["Accept-Ranges"] = "bytes"
    rng = parse_range(req.request.headers.get("Range"), size)
    if rng is not None:
        start, end = rng
        h = dict(headers, **{"Content-Range": f"bytes {start}-{end - 1}/{size}"})
        part = body[start:end]
        if req.is_head:
            return web.Response(status=206, headers=dict(h, **{"Content-Length": str(len(part))}))
        return web.Response(status=206, headers=h, body=part)
    if cache is not None and "Range" not in req.request.headers:
        cache.put(cache_key_for(req), (200, headers, body), len(body) + 512)
    if req.is_head:
        return web.Response(status=200, headers=dict(headers, **{"Content-Length": str(size)}))
    return web.Response(status=200, headers=headers, body=body)


async def serve(req: GatewayRequest, resolved: unixfs.Resolved, get_block, engine: StorageEngine,
                cache: ResponseCache, name: str | None = None, etag_cid=None) -> web.StreamResponse:
    node = resolved.node
    headers = common_headers(req, resolved.roots, f'"{etag_cid or node.cid}"')
    if etag_matches(req.request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    if node.kind == "symlink":
        headers["Content-Type"] = "inode/symlink"
        return send_bytes(req, headers, node.unixfs.data, cache)

    name = req.filename or name or (req.segments[-1] if req.segments else None)
    inline = node.cid.codec == RAW or not node.pb.links
    if inline:
        body = node.block if node.cid.codec == RAW else (node.unixfs.data or b"")
        head = body[:512]
    else:
        head = b"".join([c async for c in unixfs.read_file(get_block, node, 0, 512)])
    ctype = mime.from_name(name) or mime.sniff(head)
    if ctype.startswith("text/html;"):
        ctype = "text/html"  # as boxo: let the browser work out an HTML page's charset (kubo#2203)
    headers["Content-Type"] = ctype
    if req.filename or req.download:
        headers["Content-Disposition"] = content_disposition(req.filename or name or str(node.cid), req.download)
    if inline:
        return send_bytes(req, headers, body, cache)

    size = node.size
    headers["Accept-Ranges"] = "bytes"
    rng = parse_range(req.request.headers.get("Range"), size)
    status, start, end = (200, 0, size) if rng is None else (206, rng[0], rng[1])
    if rng is not None:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if req.is_head:
        return web.Response(status=status, headers=headers)

    cacheable = rng is None and size <= cache.max_item
    stream = engine.cat(node.cid, start, end - start)
    # Pull the first chunk before committing to a status, so a missing block or a
    # dead engine still becomes a proper error response.
    first = b""
    async for first in stream:
        if first:
            break
    if cacheable:
        parts = [first]
        async for chunk in stream:
            parts.append(chunk)
        body = b"".join(parts)
        cache.put(cache_key_for(req), (200, dict(headers), body), len(body) + 512)
        return web.Response(status=200, headers=headers, body=body)
    resp = web.StreamResponse(status=status, headers=headers)
    await resp.prepare(req.request)
    sent = len(first)
    if first:
        await resp.write(first)
    try:
        async for chunk in stream:
            await resp.write(chunk)
            sent += len(chunk)
    except Exception:
        # Headers are gone: the only honest signal left is a short body.
        req.request.transport and req.request.transport.close()
        raise
    await resp.write_eof()
    return resp
