"""Deserialized UnixFS files: Content-Type, ranges (one, or several as
multipart/byteranges: byteranges.py), and bodies sent from memory, streamed
from the engine's cat(), or with no copy through Python: when the engine offers
file_segments (the embedded engine with verify_on_read = "never"), written with
sendfile straight from its block files; when it offers file_socket (the Kubo
engine reading from Kubo's gateway over plain HTTP), spliced from Kubo's socket
into the client's (one run of bytes -- a whole file or a single range -- to a
plain, uncompressed connection; several ranges keep the other paths).

Every GET/HEAD of a file goes through one plan (byteranges.plan): whole body,
one range or several, so HEAD, ranges and multi-range share the code path;
304s are answered before any of it.
"""
from __future__ import annotations

import asyncio
import os
import socket

from aiohttp import web

from storage import splice, unixfs
from storage.cid import RAW
from storage.engine import EngineError, FileSegment, SocketSource, StorageEngine

from ..cache import ResponseCache
from . import byteranges, mime
from .headers import GatewayRequest, common_headers, content_disposition, etag_matches, not_modified, cache_key_for


def send_bytes(req: GatewayRequest, headers: dict, body: bytes, cache: ResponseCache | None) -> web.Response:
    """A whole-in-memory body (small blocks/files) with Range support, cached."""
    headers["Accept-Ranges"] = "bytes"
    plan = byteranges.plan(req.request.headers.get("Range"), len(body), headers.get("Content-Type", ""),
                           headers.get("Etag", ""))
    headers.update(plan.headers)
    if plan.whole and cache is not None and "Range" not in req.request.headers:
        cache.put(cache_key_for(req), (200, {k: v for k, v in headers.items() if k != "Content-Length"}, body),
                  len(body) + 512)
    if req.is_head:
        return web.Response(status=plan.status, headers=headers)
    out = byteranges.assemble(body, plan)
    return web.Response(status=plan.status, headers={k: v for k, v in headers.items() if k != "Content-Length"},
                        body=out)


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
    ctype = mime.from_name(name)
    if not ctype:  # no type from the name: sniff the first bytes
        if inline:
            head = body[:512]
        else:
            head = b"".join([c async for c in unixfs.read_file(get_block, node, 0, 512)])
        ctype = mime.sniff(head)
    if ctype.startswith("text/html;"):
        ctype = "text/html"  # as boxo: let the browser work out an HTML page's charset (kubo#2203)
    headers["Content-Type"] = ctype
    if req.filename or req.download:
        headers["Content-Disposition"] = content_disposition(req.filename or name or str(node.cid), req.download)
    if inline:
        return send_bytes(req, headers, body, cache)

    size = node.size
    headers["Accept-Ranges"] = "bytes"
    plan = byteranges.plan(req.request.headers.get("Range"), size, ctype, headers["Etag"])
    headers.update(plan.headers)
    if req.is_head:
        return web.Response(status=plan.status, headers=headers)
    if plan.whole and size <= cache.max_item:
        # small enough to keep: read it whole (a missing block is still a proper error), cache it
        body = b"".join([chunk async for chunk in engine.cat(node.cid)])
        cache.put(cache_key_for(req), (200, dict(headers), body), len(body) + 512)
        return web.Response(status=200, headers=headers, body=body)
    return await send_plan(req.request, headers, plan, node, engine)


# --- streamed bodies ------------------------------------------------------------------

# as aiohttp's FileResponse: AIOHTTP_NOSENDFILE=1 turns sendfile off (the bytes are then copied)
SENDFILE = not os.environ.get("AIOHTTP_NOSENDFILE")
# splice(2) from an engine's socket (file_socket) where the system has it
SPLICE = splice.AVAILABLE
COPY_CHUNK = 256 * 1024


def _pieces(engine: StorageEngine, node: unixfs.Node, start: int, end: int):
    """The bytes [start, end) of the file: FileSegments from the engine when it offers
    them, else the chunks of its cat() stream."""
    segments = engine.file_segments(node, start, end)
    if segments is not None:
        return segments
    return engine.cat(node.cid, start, end - start)


async def send_plan(request: web.Request, headers: dict, plan: byteranges.BodyPlan, node: unixfs.Node,
                    engine: StorageEngine) -> web.StreamResponse:
    """Write the plan's parts (each: its multipart header, then its bytes) and its closing
    line. The first piece of the first part is read before the status is committed, so
    a missing block or a dead engine still becomes a proper error response; after that
    the only honest signal left is a short body (the connection is closed)."""
    if len(plan.parts) == 1 and SPLICE and _plain_socket(request.transport) is not None:
        part = plan.parts[0]
        source = await engine.file_socket(node, part.start, part.end)  # raises before the status, as cat()
        if source is not None:
            return await _send_spliced(request, headers, plan, source, node, engine)
    it = _pieces(engine, node, plan.parts[0].start, plan.parts[0].end)
    body = None
    try:
        first = await anext(it, None)
        resp = web.StreamResponse(status=plan.status, headers=headers)
        writer = await resp.prepare(request)
        body = _Body(request, resp, writer)
        try:
            for i, part in enumerate(plan.parts):
                if part.head:
                    await resp.write(part.head)
                if i:
                    await it.aclose()
                    it = _pieces(engine, node, part.start, part.end)
                    first = await anext(it, None)
                piece = first
                while piece is not None:
                    await body.send(piece)
                    piece = await anext(it, None)
            if plan.tail:
                await resp.write(plan.tail)
        except Exception:
            # headers are gone: end the body short (a client that went away is then seen gone too)
            _close(request)
            raise
    finally:
        if body is not None:
            body.close()
        await it.aclose()
    await resp.write_eof()
    return resp


async def _send_spliced(request: web.Request, headers: dict, plan: byteranges.BodyPlan, source: SocketSource,
                        node: unixfs.Node, engine: StorageEngine) -> web.StreamResponse:
    """A one-part plan whose bytes wait in the engine's socket: the head through aiohttp,
    then the body spliced into the client's socket. The engine has already answered for
    those bytes (status and length checked), so errors before the head are proper error
    responses; after it, an engine that fails (short body, stall, broken connection) or
    a client that goes away ends the connection short, as in send_plan."""
    part = plan.parts[0]
    body = None
    try:
        resp = web.StreamResponse(status=plan.status, headers=headers)
        writer = await resp.prepare(request)
        body = _Body(request, resp, writer)
        try:
            if body.fd is not None:
                await body.splice(source)
            else:  # the response is compressed after all: its bytes must go through aiohttp
                source.close()
                async for chunk in engine.cat(node.cid, part.start, part.end - part.start):
                    await body.send(chunk)
        except Exception:
            # headers are gone: end the body short (a client that went away is then seen gone too)
            _close(request)
            raise
    finally:
        source.close()
        if body is not None:
            body.close()
    await resp.write_eof()
    return resp


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _plain_socket(transport) -> socket.socket | None:
    """The connection's socket if it is a plain TCP or Unix stream socket (not TLS)."""
    if (transport is None or transport.is_closing() or transport.get_extra_info("sslcontext") is not None
            or transport.get_extra_info("ssl_object") is not None):
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
        return None
    return sock


class _Body:
    """Writes a response body: bytes through aiohttp's writer, file segments with
    sendfile, straight from the block file to the client's socket.

    Where the connection is a plain socket, segments are sent with os.sendfile on a
    duplicate of its descriptor, waiting (add_writer) only when the socket is full:
    per segment that is one system call, where loop.sendfile costs a dozen and two
    turns of the event loop (pausing and resuming reading, waiting for an empty
    buffer, registering a writer, seeking the file back). The duplicate descriptor
    stays valid whatever the transport does meanwhile (it never writes to another
    connection), and the transport's own buffer is always empty when it is used:
    after a write that could not go out at once (the socket was full), the next
    segment goes through loop.sendfile, which waits for that buffer to drain.
    Otherwise (TLS, another kind of transport, AIOHTTP_NOSENDFILE) loop.sendfile, or a
    copy, as aiohttp's FileResponse does. An engine's socket (splice) is moved into the
    same duplicate descriptor."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, writer):
        self.loop = asyncio.get_running_loop()
        self.transport = request.transport
        self.resp, self.writer = resp, writer
        self.fd: int | None = None
        if (SENDFILE or SPLICE) and not resp.compression:
            sock = _plain_socket(self.transport)
            if sock is not None:
                self.fd = os.dup(sock.fileno())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    async def send(self, piece) -> None:
        if not isinstance(piece, FileSegment):
            if piece:
                await self.resp.write(piece)
            return
        if piece.data is not None:
            if piece.data:
                await self.resp.write(piece.data)
            return
        if not piece.length:
            return
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("client disconnected")
        if not SENDFILE or self.resp.compression:
            await _copy(self.resp, piece)
            return
        if self.fd is not None and not self.transport.get_write_buffer_size():
            sent = await self._sendfile_direct(piece)
        else:
            sent = await self._loop_sendfile(piece)
        if sent is None:
            return
        # bytes aiohttp's writer did not see: keep its count (/metrics) and its length in step
        self.writer.output_size += sent
        if self.writer.length is not None:
            self.writer.length -= sent
        if sent != piece.length:
            raise EngineError(f"a block file ended {piece.length - sent} bytes early while being sent")

    async def splice(self, source: SocketSource) -> None:
        """All of source's bytes into the client's socket (self.fd), in the kernel, once
        what aiohttp has written (the head) is out. Waits without limit while the client
        is slow to read, as aiohttp's own writes and sendfile do; the engine bounds its
        side (its timeout)."""
        t = self.transport
        while t.get_write_buffer_size() and not t.is_closing():
            await asyncio.sleep(0.001)  # the head is still in the transport's buffer
        if t.is_closing():
            raise ConnectionResetError("client disconnected")
        await source.send_to(self.fd, timeout=None)
        # bytes aiohttp's writer did not see: keep its count (/metrics) and its length in step
        self.writer.output_size += source.size
        if self.writer.length is not None:
            self.writer.length -= source.size

    async def _sendfile_direct(self, piece: FileSegment) -> int:
        src, offset, left = piece.file.fileno(), piece.offset, piece.length
        sent = 0
        while left:
            try:
                n = os.sendfile(self.fd, src, offset, left)
            except BlockingIOError:
                await self._writable()
                if self.transport.is_closing():
                    raise ConnectionResetError("client disconnected") from None
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise ConnectionResetError(f"client disconnected ({exc})") from None
            if not n:
                break  # the file ended early
            offset += n
            left -= n
            sent += n
        return sent

    async def _writable(self) -> None:
        fut = self.loop.create_future()
        self.loop.add_writer(self.fd, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            self.loop.remove_writer(self.fd)

    async def _loop_sendfile(self, piece: FileSegment) -> int | None:
        try:
            return await self.loop.sendfile(self.transport, piece.file, piece.offset, piece.length, fallback=False)
        except (NotImplementedError, RuntimeError):
            # "transport is closing", or no native sendfile here (TLS, another transport) or
            # its first call failed before sending a byte: copy instead
            if self.transport.is_closing():
                raise ConnectionResetError("client disconnected") from None
            await _copy(self.resp, piece)
            return None


async def _copy(resp: web.StreamResponse, piece: FileSegment) -> None:
    """The fallback: read the segment and write it, in chunks."""
    fd, pos, left = piece.file.fileno(), piece.offset, piece.length
    while left > 0:
        n = min(left, COPY_CHUNK)
        data = await asyncio.to_thread(os.pread, fd, n, pos)
        if not data:
            raise EngineError(f"a block file ended {left} bytes early while being sent")
        await resp.write(data)
        pos += len(data)
        left -= len(data)
