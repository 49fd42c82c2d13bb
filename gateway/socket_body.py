"""A raw upload body forwarded from the client's socket with splice(2).

A raw-body upload (`POST /api/v1/content?filename=...`, Content-Length set, no
Content-Encoding) sends exactly the bytes of one file, which the Kubo engine
forwards unchanged as the file part of its multipart request to Kubo's add.
Read through aiohttp, every byte is received into a Python object, copied again
by the HTTP parser, and sent again: about 1 CPU second per GiB in the node. Here
the node takes the socket over from aiohttp once the request's headers are
parsed and moves the rest of the body socket -> pipe -> socket in the kernel
(storage.engine.RawBody): 0.35 CPU s per GiB for the node process when Kubo's
RPC is on loopback TCP (nearly all of it the kernel's TCP work for the extra
hop), 0.22 over a Unix socket (bench/bench_gateway.py, bench/upload_ceiling.py).

Taking over a connection from aiohttp:

* what aiohttp has already received is drained from the request's StreamReader
  (with an identity body the parser hands every body byte it has read to that
  reader at once: nothing of the body stays in the parser), then the transport
  stops reading; the rest of the body, exactly Content-Length minus what was
  drained, is spliced from the socket;
* aiohttp's parser never sees those bytes, so the connection cannot carry another
  request: it is closed once the response is sent (`Connection: close`);
* the socket and the destination are dup()ed, so a close by aiohttp or by the
  engine's HTTP client meanwhile never leaves this code with a recycled fd;
* while it runs the protocol is marked as not reading (aiohttp's own flow-control
  flag, which the server's body-idle sweeper skips), and this code enforces
  `[server] body_idle_timeout` itself; a stalled or short body closes the
  connection at once and fails the upload (nothing is recorded).

Used only on Linux (os.splice), plain TCP/Unix sockets (not TLS), bodies of
SPLICE_MIN bytes or more. The splice loop, the pipe and the readiness waits are
storage/splice.py's, shared with the Kubo engine's spliced downloads.
"""
from __future__ import annotations

import logging
import os
import socket

from aiohttp import web
from aiohttp.streams import StreamReader

from storage import splice
from storage.engine import RawBody

from .errors import HTTPError, bad_request

log = logging.getLogger("hearth.upload")


SPLICE_MIN = 1 << 20  # smaller bodies go through aiohttp: keep-alive kept, nothing to gain


class SocketBody(RawBody):
    """The rest of `request`'s body, movable into another socket (see the module doc)."""

    def __init__(self, request: web.Request, *, idle_timeout: float):
        self.request = request
        self.size = request.content_length or 0
        self.idle_timeout = idle_timeout
        self.used = False  # send_to was called: the connection closes after the response
        self.moved = 0  # body bytes sent on so far
        self.error: HTTPError | None = None  # set when the client's side failed

    @classmethod
    def of(cls, request: web.Request, *, idle_timeout: float) -> "SocketBody | None":
        """A SocketBody if this request's body can be spliced, else None."""
        if not splice.AVAILABLE or request.content_length is None or request.content_length < SPLICE_MIN:
            return None
        if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
            return None  # aiohttp decodes it: the bytes on the wire are not the file's
        if "Transfer-Encoding" in request.headers:
            return None
        transport = request.transport
        if transport is None or transport.is_closing() or transport.get_extra_info("ssl_object") is not None:
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6,
                                                                                 socket.AF_UNIX):
            return None
        content = request.content
        if type(content) is not StreamReader or content.total_bytes != content._size:  # noqa: SLF001
            return None  # something already read part of the body
        return cls(request, idle_timeout=idle_timeout)

    # --- taking the connection over from aiohttp ------------------------------------
    def _take_over(self) -> bytes:
        """What aiohttp already received of the body; its transport then stops reading."""
        request = self.request
        content = request.content
        pieces = []
        # Each read may resume the transport's reading (flow control) and so let the
        # parser hand over what it held back; no await: the loop reads nothing meanwhile.
        while True:
            try:
                piece = content.read_nowait()
            except Exception as exc:  # the connection broke before the handler got here
                raise self._client_failed(f"the client's connection broke ({exc.__class__.__name__})") from None
            if not piece:
                break
            pieces.append(piece)
        transport = request.transport
        if transport is None or transport.is_closing():
            raise self._client_failed("the client closed the connection during the upload")
        transport.pause_reading()
        # Tell aiohttp (and the server's body-idle sweeper) it is not reading: this
        # code watches the body from here on.
        request.protocol._reading_paused = True  # noqa: SLF001
        # whatever answers this request (the handler, or an error from the middleware)
        # says Connection: close: aiohttp takes a response's keep-alive from its request
        request._message = request._message._replace(should_close=True)  # noqa: SLF001
        prefix = b"".join(pieces)
        if content.total_bytes != len(prefix):  # cannot happen: checked in of()
            raise RuntimeError("part of the request body was read before it was forwarded")
        return prefix

    def _finish(self, client_failed: bool) -> None:
        """The connection will close after the response (its parser is out of step)."""
        protocol = self.request.protocol
        if client_failed:
            protocol.force_close()  # nobody is listening: close now (the request counts as 499)
        else:
            protocol.close()  # send the response, then close
        if not self.request.content.is_eof():
            # the body is consumed: aiohttp must not wait for more of it ("lingering");
            # reading resumes, and the protocol drops what arrives (it is closing)
            self.request.content.feed_eof()

    def _client_failed(self, message: str) -> HTTPError:
        self.error = bad_request(f"malformed upload body: {message}", "invalid_body")
        return self.error

    # --- RawBody ------------------------------------------------------------------------
    async def send_to(self, fd: int, *, timeout: float) -> None:
        if self.used:
            raise RuntimeError("a request body can be sent only once")
        self.used = True
        client_failed = False
        src = dst = None
        try:
            prefix = self._take_over()
            sock = self.request.transport.get_extra_info("socket")
            src = socket.socket(fileno=os.dup(sock.fileno()))
            dst = os.dup(fd)
            splice.grow_unix_sndbuf(dst)
            await self._move(src, dst, prefix, self.size - len(prefix), timeout)
        except HTTPError:
            client_failed = True
            raise
        finally:
            if src is not None:
                src.close()
            if dst is not None:
                os.close(dst)
            self._finish(client_failed)

    async def _move(self, src: socket.socket, dst: int, prefix: bytes, remaining: int, timeout: float) -> None:
        late = "Kubo did not take the upload in time"
        await splice.write_all(dst, prefix, timeout=timeout, timeout_message=late)
        self.moved = len(prefix)

        def moved(n: int) -> None:
            self.moved += n

        try:
            await splice.forward(src, dst, remaining, idle_timeout=self.idle_timeout, write_timeout=timeout,
                                 write_timeout_message=late, on_moved=moved)
        except splice.SourceFailed as exc:
            if exc.reason == "stalled":
                log.info("closing a connection whose upload body stalled for %.0f s (%d of %d bytes)",
                         self.idle_timeout, self.moved, self.size)
                raise self._client_failed(f"the body stalled for {self.idle_timeout:.0f} s after "
                                          f"{self.moved} of {self.size} bytes") from None
            if exc.reason == "broke":
                raise self._client_failed(f"the client's connection broke after {self.moved} of "
                                          f"{self.size} bytes ({exc.detail})") from None
            raise self._client_failed(f"the client closed the connection after {self.moved} of "
                                      f"{self.size} bytes") from None
