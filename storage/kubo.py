"""The Kubo engine: the storage-engine interface over Kubo's HTTP RPC.

Every RPC call is a POST (Kubo answers GET with 405), made with aiohttp and a
timeout; bodies stream both ways. `offline=true` keeps local-only reads from
ever reaching the network.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from typing import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import aiohttp

from .cid import CID, CODEC_NAMES
from .car import InvalidCAR
from .car_import import check_car
from .engine import (
    AddedItem,
    AddEntry,
    AddOptions,
    AddResult,
    BlockNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    InvalidContent,
    PinInfo,
    StorageEngine,
)

_NOT_FOUND_MARKERS = ("not found", "no link named", "block was not found locally", "ipld: could not find")

# Kubo's RPC streams `cat` as HTTP/1.1 chunked encoding in 4 KiB chunks, one flush
# each: a quarter of a million frames per GiB to write and to parse. Asked over
# HTTP/1.0 it sends the same bytes unframed and closes the connection at the end,
# which costs both sides far less CPU (~1.5-2x faster on a loopback); the length
# Kubo announces up front (X-Content-Length) is then how a short stream is caught.
# Short reads stay on keep-alive HTTP/1.1, where a new connection would cost more.
STREAM_HTTP10_MIN = 1 << 20
# On such a connection, local reads also ask the kernel to wake us only once this
# much has arrived (or the stream ended): Kubo writes 4 KiB at a time, and one
# wake-up per few KiB is most of what proxying a file costs in Python.
STREAM_LOWAT = 256 * 1024


class KuboError(EngineError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class KuboEngine(StorageEngine):
    name = "kubo"

    def __init__(self, api_url: str, *, timeout: float = 60.0, offline_reads: bool = True,
                 retrieval_timeout: float = 30.0, observe: Callable[[str, float], None] | None = None):
        self.api = api_url.rstrip("/") + "/api/v0/"
        self.timeout = timeout
        self.offline_reads = offline_reads
        self.retrieval_timeout = retrieval_timeout
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        self._observe = observe or (lambda cmd, secs: None)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        # one connection per long read (see STREAM_HTTP10_MIN)
        self._stream_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            version=aiohttp.HttpVersion10,
            read_bufsize=1 << 20,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._stream_session is not None:
            await self._stream_session.close()
            self._stream_session = None

    # --- RPC plumbing -------------------------------------------------------------
    def _read_params(self, **params) -> dict:
        if self.offline_reads:
            params["offline"] = "true"
        else:
            params["timeout"] = f"{self.retrieval_timeout}s"
        return params

    async def _open(self, cmd: str, params: dict | list | None = None, *, data=None, headers=None,
                    timeout: float | None = None, http10: bool = False) -> aiohttp.ClientResponse:
        if self._session is None:
            await self.start()
        session = self._stream_session if http10 else self._session
        started = time.perf_counter()
        try:
            resp = await session.post(
                self.api + cmd,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=timeout or self.timeout),
            )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionResetError) as exc:
            raise EngineUnavailable(f"Kubo RPC at {self.api} is unreachable: {exc.__class__.__name__}") from None
        except asyncio.TimeoutError:
            raise EngineTimeout(f"Kubo did not answer {cmd} in time") from None
        except aiohttp.ClientError as exc:
            raise EngineUnavailable(f"Kubo RPC failed: {exc}") from None
        finally:
            self._observe(cmd, time.perf_counter() - started)
        if resp.status != 200:
            body = await resp.read()
            resp.release()
            message = body.decode("utf-8", "replace")
            try:
                message = json.loads(message).get("Message", message)
            except (ValueError, AttributeError):
                pass
            raise KuboError(message.strip(), resp.status)
        return resp

    async def _json(self, cmd: str, params=None, **kw):
        resp = await self._open(cmd, params, **kw)
        try:
            body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise EngineUnavailable(f"Kubo RPC {cmd} failed mid-response: {exc}") from None
        finally:
            resp.release()
        return json.loads(body) if body.strip() else None

    async def _stream(self, resp: aiohttp.ClientResponse, cmd: str) -> AsyncIterator[bytes]:
        expected = resp.headers.get("X-Content-Length")
        received = 0
        try:
            # whatever has arrived, as it arrives: no re-chunking copies
            async for chunk in resp.content.iter_any():
                received += len(chunk)
                yield chunk
            # Kubo reports errors that happen after the 200 in a trailer
            err = resp.headers.get("X-Stream-Error")
            if err:
                raise EngineError(f"Kubo {cmd} failed mid-stream: {err}")
            if expected is not None and expected.isdigit() and received < int(expected):
                raise EngineError(f"Kubo {cmd} stream ended after {received} of {expected} bytes")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise EngineUnavailable(f"Kubo {cmd} stream broke: {exc}") from None
        except asyncio.TimeoutError:
            raise EngineTimeout(f"Kubo {cmd} stalled") from None
        finally:
            resp.release()

    @staticmethod
    def _map_read_error(exc: KuboError, cid) -> Exception:
        text = str(exc).lower()
        if any(m in text for m in _NOT_FOUND_MARKERS):
            return BlockNotFound(cid)
        if "context deadline exceeded" in text or "timeout" in text:
            return EngineTimeout(f"retrieving {cid} timed out")
        return exc

    # --- readiness -------------------------------------------------------------------
    async def check_ready(self) -> None:
        try:
            await self._json("version", timeout=5)
        except KuboError as exc:
            raise EngineUnavailable(f"Kubo answered version with an error: {exc}") from None

    async def version(self) -> str:
        return (await self._json("version"))["Version"]

    # --- content -------------------------------------------------------------------------
    async def add(self, entries: AsyncIterator[AddEntry], options: AddOptions) -> AddResult:
        boundary = "hearth" + secrets.token_hex(12)
        params = {
            "cid-version": str(options.cid_version),
            "raw-leaves": "true" if options.effective_raw_leaves else "false",
            "wrap-with-directory": "true" if options.wrap else "false",
            "pin": "true" if options.pin else "false",
            "progress": "false",
            "stream-channels": "true",
        }
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        body = _multipart_body(entries, boundary)
        if options.size_hint is not None and not options.wrap:
            # A single file of known size: send Content-Length, so neither side pays
            # for chunked framing of the whole upload.
            first = await anext(entries, None)
            if first is not None and first.chunks is not None and "/" not in first.path:
                headers["Content-Length"] = str(len(_part_head(boundary, first.path, "application/octet-stream"))
                                                + options.size_hint + 2 + len(boundary) + 6)
            body = _multipart_body(_prepend(first, entries), boundary)
        resp = await self._open(
            "add",
            params,
            data=body,
            headers=headers,
            timeout=max(self.timeout, 600),
        )
        items: list[AddedItem] = []
        try:
            async for line in resp.content:
                if not line.strip():
                    continue
                obj = json.loads(line)
                if "Message" in obj and "Hash" not in obj:
                    raise EngineError(f"Kubo add failed: {obj['Message']}")
                if "Hash" in obj:
                    items.append(AddedItem(obj.get("Name", ""), CID.parse(obj["Hash"]), int(obj.get("Size", 0))))
            err = resp.headers.get("X-Stream-Error")
            if err:
                raise EngineError(f"Kubo add failed: {err}")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise EngineUnavailable(f"Kubo add stream broke: {exc}") from None
        finally:
            resp.release()
        if not items:
            raise InvalidContent("nothing was added")
        root = items[-1]
        return AddResult(root.cid, root.size, items)

    async def cat(self, cid: CID, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        params = self._read_params(arg=f"/ipfs/{cid}", offset=str(offset))
        if length is not None:
            params["length"] = str(length)
        long_read = length is None or length >= STREAM_HTTP10_MIN
        try:
            resp = await self._open("cat", params, http10=long_read)
        except KuboError as exc:
            raise self._map_read_error(exc, cid) from None
        if long_read and self.offline_reads:
            # not for network reads, whose bytes may trickle in from peers
            _set_lowat(resp, STREAM_LOWAT)
        async for chunk in self._stream(resp, "cat"):
            yield chunk

    async def get_block(self, cid: CID) -> bytes:
        try:
            resp = await self._open("block/get", self._read_params(arg=str(cid)))
        except KuboError as exc:
            raise self._map_read_error(exc, cid) from None
        try:
            data = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise EngineUnavailable(f"Kubo block/get broke: {exc}") from None
        finally:
            resp.release()
        if not cid.verify(data):
            raise EngineError(f"Kubo returned a block that does not match {cid}")
        return data

    async def has_block(self, cid: CID) -> bool:
        try:
            await self._json("block/stat", {"arg": str(cid), "offline": "true"})
            return True
        except KuboError as exc:
            if isinstance(self._map_read_error(exc, cid), BlockNotFound):
                return False
            raise

    async def put_block(self, data: bytes, codec: int = 0x55) -> CID:
        form = aiohttp.FormData()
        form.add_field("file", data, filename="block", content_type="application/octet-stream")
        out = await self._json("block/put", {"cid-codec": CODEC_NAMES.get(codec, "raw"), "mhtype": "sha2-256"}, data=form)
        return CID.parse(out["Key"])

    async def import_car(self, read: Callable[[int], Awaitable[bytes]]) -> list[CID]:
        # Verify the whole CAR (spooled to disk, never memory) before Kubo sees a
        # byte of it, so a bad CAR leaves nothing behind.
        try:
            checked = await check_car(read)
        except InvalidCAR as exc:
            raise InvalidContent(str(exc)) from None
        try:
            for c in checked.dangling:
                if not await self.has_block(c):
                    raise InvalidContent(f"CAR is incomplete: block {c} is linked but neither in the CAR nor on this node")

            async def body():
                while chunk := await asyncio.to_thread(checked.spool.read, 1 << 20):
                    yield chunk

            boundary = "hearth" + secrets.token_hex(12)

            async def multipart():
                yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"import.car\"\r\n"
                       "Content-Type: application/vnd.ipld.car\r\n\r\n").encode()
                async for chunk in body():
                    yield chunk
                yield f"\r\n--{boundary}--\r\n".encode()

            out = await self._open("dag/import", {"pin-roots": "true", "stats": "false"}, data=multipart(),
                                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                                   timeout=max(self.timeout, 600))
            try:
                async for line in out.content:
                    if line.strip():
                        obj = json.loads(line)
                        err = (obj.get("Root") or {}).get("PinErrorMsg")
                        if err:
                            raise InvalidContent(f"Kubo could not pin a CAR root: {err}")
            finally:
                out.release()
        finally:
            checked.spool.close()
        return checked.roots

    # --- pins ---------------------------------------------------------------------------------
    async def pin(self, cid: CID, recursive: bool = True, fetch: bool = False) -> None:
        params = {"arg": str(cid), "recursive": "true" if recursive else "false"}
        if not fetch:
            params["offline"] = "true"
        try:
            await self._json("pin/add", params, timeout=max(self.timeout, 600) if fetch else self.timeout)
        except KuboError as exc:
            raise self._map_read_error(exc, cid) from None

    async def unpin(self, cid: CID) -> None:
        try:
            await self._json("pin/rm", {"arg": str(cid)})
        except KuboError as exc:
            if "not pinned" in str(exc).lower():
                return
            raise

    async def pins(self) -> AsyncIterator[PinInfo]:
        resp = await self._open("pin/ls", {"stream": "true", "type": "all"})
        try:
            async for line in resp.content:
                if line.strip():
                    obj = json.loads(line)
                    yield PinInfo(CID.parse(obj["Cid"]), obj["Type"])
        finally:
            resp.release()

    async def is_pinned(self, cid: CID) -> bool:
        try:
            await self._json("pin/ls", {"arg": str(cid), "type": "recursive"})
            return True
        except KuboError:
            return False

    async def gc(self) -> int:
        resp = await self._open("repo/gc", {"stream-errors": "true"}, timeout=3600)
        removed = 0
        try:
            async for line in resp.content:
                if line.strip() and "Key" in json.loads(line):
                    removed += 1
        finally:
            resp.release()
        return removed

    # --- network -----------------------------------------------------------------------------
    async def addresses(self) -> list[str]:
        info = await self._json("id")
        peer = info.get("ID", "")
        out = []
        for a in info.get("Addresses") or []:
            out.append(a if "/p2p/" in a else f"{a}/p2p/{peer}")
        return out

    async def connect(self, multiaddr: str) -> None:
        try:
            await self._json("swarm/connect", {"arg": multiaddr}, timeout=15)
        except (KuboError, EngineTimeout):
            pass  # origins are a hint, not a requirement


def _set_lowat(resp: aiohttp.ClientResponse, nbytes: int) -> None:
    """SO_RCVLOWAT on the (not reused) connection resp arrived on; best effort."""
    try:
        sock = resp.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
    except (AttributeError, OSError):
        pass


def _part_head(boundary: str, path: str, ctype: str) -> bytes:
    return (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{quote(path, safe="")}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()


async def _prepend(first: AddEntry | None, rest: AsyncIterator[AddEntry]) -> AsyncIterator[AddEntry]:
    if first is not None:
        yield first
    async for entry in rest:
        yield entry


async def _multipart_body(entries: AsyncIterator[AddEntry], boundary: str) -> AsyncIterator[bytes]:
    """A multipart/form-data body for Kubo's add, built while the upload streams in.

    Directory parts are emitted the first time a directory is seen, as Kubo's
    multipart walker expects parents before children.
    """
    seen_dirs: set[str] = set()
    b = boundary.encode()

    def part_head(path: str, ctype: str) -> bytes:
        return _part_head(boundary, path, ctype)

    async for entry in entries:
        parts = entry.path.split("/")
        dirs = parts[:-1] if entry.chunks is not None else parts
        for i in range(1, len(dirs) + 1):
            d = "/".join(dirs[:i])
            if d not in seen_dirs:
                seen_dirs.add(d)
                yield part_head(d, "application/x-directory") + b"\r\n"
        if entry.chunks is None:
            continue
        yield part_head(entry.path, "application/octet-stream")
        async for chunk in entry.chunks:
            yield chunk
        yield b"\r\n"
    yield b"--" + b + b"--\r\n"
