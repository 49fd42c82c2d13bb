"""Moving bytes between stream sockets with splice(2), on the event loop, without
copying them through Python: socket -> pipe -> socket, in the kernel.

Both directions of the Kubo engine use it: uploads (the client's socket -> Kubo's
RPC socket, gateway/socket_body.py) and downloads (Kubo's gateway socket -> the
client's socket: storage/kubo.py offers the socket, gateway/ipfs/unixfs_file.py
writes the response around it). The callers own the descriptors (dup()ed where
another owner could close them meanwhile) and map the failures below to their
own errors: which side failed matters (a client that went away is not an engine
error, and an upstream connection that broke is not a client's fault).

Linux only (os.splice); AVAILABLE says whether it is there.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
from typing import Callable

_SPLICE = getattr(os, "splice", None)
AVAILABLE = _SPLICE is not None
PIPE_SIZE = 1 << 20  # bytes per splice; the pipe is grown to this when the system allows
LOWAT = 256 * 1024  # wake up once this much has arrived (SO_RCVLOWAT), not per segment
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_MORE = getattr(os, "SPLICE_F_MORE", 4)


class SourceFailed(Exception):
    """The source socket did not deliver all the bytes: it `ended` (EOF), `broke`
    (reset, or another socket error) or `stalled` (nothing for idle_timeout seconds).
    `moved` bytes of this call reached the destination."""

    def __init__(self, reason: str, moved: int, detail: str = ""):
        super().__init__(f"{reason} after {moved} bytes" + (f" ({detail})" if detail else ""))
        self.reason, self.moved, self.detail = reason, moved, detail


async def wait_fd(loop: asyncio.AbstractEventLoop, fd: int, writable: bool, timeout: float | None,
                  timeout_message: str | None) -> bool:
    """Wait until fd is readable/writable: True. On timeout (None: none) raise
    OSError(ETIMEDOUT, timeout_message), or return False if timeout_message is None."""
    fut = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, ready)
    try:
        if timeout is None:
            await fut
            return True
        async with asyncio.timeout(timeout):
            await fut
        return True
    except TimeoutError:
        if timeout_message is None:
            return False
        raise OSError(errno.ETIMEDOUT, timeout_message) from None
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def write_all(fd: int, data: bytes, *, timeout: float | None, timeout_message: str) -> None:
    """Write all of data to the non-blocking fd, waiting (at most timeout s each time)
    while it is full."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await wait_fd(loop, fd, True, timeout, timeout_message)


def open_pipe() -> tuple[int, int, int]:
    """A non-blocking pipe (read end, write end, capacity), grown to PIPE_SIZE when the
    per-user pipe budget allows (the default 64 KiB works too, with more system calls)."""
    pr, pw = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        capacity = fcntl.fcntl(pw, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        capacity = fcntl.fcntl(pw, _F_GETPIPE_SZ)
    return pr, pw, capacity


def grow_unix_sndbuf(fd: int) -> None:
    """A Unix socket's send buffer is fixed (wmem_default, ~208 KiB: a wake-up for every
    208 KiB forwarded); ask for PIPE_SIZE, within net.core.wmem_max. TCP sockets are
    left alone: setting SO_SNDBUF would turn their autotuning off."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        if sock.family == socket.AF_UNIX and sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * PIPE_SIZE:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 * PIPE_SIZE)
    except OSError:
        pass
    finally:
        sock.close()


async def forward(src: socket.socket, dst: int, count: int, *, idle_timeout: float | None,
                  write_timeout: float | None, write_timeout_message: str, lowat: int = LOWAT,
                  on_moved: Callable[[int], None] | None = None) -> None:
    """Move exactly `count` bytes from the non-blocking stream socket src into the
    non-blocking stream socket dst, through a pipe, on the event loop.

    Waits at most idle_timeout s for src to have bytes (None: no limit) and at most
    write_timeout s each time dst is full (None: no limit; then OSError(ETIMEDOUT,
    write_timeout_message)). src's SO_RCVLOWAT is set to min(lowat, what is left) so
    the loop wakes once per `lowat` bytes, not per segment (lowat <= 1: every byte
    wakes it, for sources that may trickle), and reset to 1 at the end. on_moved(n) is
    called as each n bytes reach dst.

    Raises SourceFailed when src ends, breaks or stalls; an error writing to dst (e.g.
    BrokenPipeError, ConnectionResetError: its peer went away) propagates as it is.
    Either way part of the bytes may have been moved: both connections are then out
    of step and must be abandoned."""
    if _SPLICE is None:
        raise OSError(errno.ENOSYS, "splice(2) is not available here")
    if count <= 0:
        return
    loop = asyncio.get_running_loop()
    sfd = src.fileno()
    moved = 0
    remaining = count
    pr, pw, chunk = open_pipe()
    current_lowat = 0
    try:
        while remaining:
            want = min(remaining, chunk)
            if lowat > 1 and current_lowat != min(lowat, want):
                current_lowat = min(lowat, want)
                src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, current_lowat)
            try:
                n = _SPLICE(sfd, pw, want, flags=_FLAGS)
            except BlockingIOError:
                if not await wait_fd(loop, sfd, False, idle_timeout, None):
                    raise SourceFailed("stalled", moved, f"nothing for {idle_timeout:.0f} s") from None
                continue
            except ConnectionError as exc:  # reset
                raise SourceFailed("broke", moved, exc.__class__.__name__) from None
            if n == 0:
                raise SourceFailed("ended", moved)
            remaining -= n
            while n:
                try:
                    m = _SPLICE(pr, dst, n, flags=_FLAGS | (_MORE if remaining else 0))
                except BlockingIOError:
                    await wait_fd(loop, dst, True, write_timeout, write_timeout_message)
                    continue
                n -= m
                moved += m
                if on_moved is not None:
                    on_moved(m)
    finally:
        os.close(pr)
        os.close(pw)
        if current_lowat > 1:
            try:
                src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass
