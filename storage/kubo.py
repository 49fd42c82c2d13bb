"""The Kubo engine: the storage-engine interface over Kubo's HTTP RPC.

Every RPC call is a POST (Kubo answers GET with 405), made with aiohttp and a
timeout; bodies stream both ways. `offline=true` keeps local-only reads from
ever reaching the network.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import json
import logging
import re
import secrets
import socket
import time
from typing import AsyncIterator, Awaitable, Callable, Sequence
from urllib.parse import quote, urlsplit

import aiohttp
import aiohttp.payload

from outbound.multiaddr import multiaddr_to_http

from . import splice, unixfs
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
    RepoStat,
    SocketSource,
    StorageEngine,
)

log = logging.getLogger("hearth.kubo")

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
# File bytes can also come from Kubo's own HTTP gateway (GET /ipfs/{cid} + Range),
# which spends noticeably less CPU per GiB than its RPC `cat`. After the gateway
# could not be reached, it is left alone for this long before it is tried again.
GATEWAY_RETRY_SECS = 30.0
# A file response's bytes from Kubo's gateway, when the client's connection is a plain
# socket, go from Kubo's socket to the client's with splice(2) (file_socket): the node
# speaks HTTP/1.0 to the gateway itself, reads the response head, and hands the socket
# over positioned at the body. Heads and error bodies it reads are at most this long.
GATEWAY_HEAD_MAX = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
# pin origins: how long Kubo may spend dialing the peers a pin request names
ORIGIN_CONNECT_TIMEOUT = 15.0


def gateway_decision(setting: str, addresses_gateway, no_fetch, *, offline_reads: bool, api_url: str) -> str | None:
    """The base URL of Kubo's gateway to read file bytes from, or None for the RPC `cat`.

    setting is `[storage] kubo_gateway` ("" = discover from Addresses.Gateway, "off",
    or a URL); addresses_gateway and no_fetch are Kubo's Addresses.Gateway and
    Gateway.NoFetch config values (None when they could not be read). Local-only
    reads (offline_reads) must never make Kubo fetch from the network, so they use
    the gateway only when Kubo's gateway is itself barred from fetching (NoFetch).
    """
    setting = (setting or "").strip()
    if setting.lower() == "off":
        return None
    if offline_reads and no_fetch is not True:
        return None
    if setting:
        return setting.rstrip("/")
    addrs = [addresses_gateway] if isinstance(addresses_gateway, str) else list(addresses_gateway or [])
    for addr in addrs:
        url = multiaddr_to_url(addr, api_url) if isinstance(addr, str) else None
        if url:
            return url
    return None


def unix_socket_path(api_url: str) -> str | None:
    """The socket path of a Kubo RPC address on a Unix socket: `unix:/run/kubo/api.sock`,
    `unix:///run/kubo/api.sock` or Kubo's own multiaddr `/unix/run/kubo/api.sock`
    (as in $IPFS_PATH/api); None for an http(s) URL."""
    api_url = api_url.strip()
    if api_url.startswith("unix:"):
        path = api_url[len("unix:"):]
        return "/" + path.lstrip("/") if path.startswith("//") else path or None
    if api_url.startswith("/unix/"):
        return api_url[len("/unix"):]
    return None


def multiaddr_to_url(addr: str, api_url: str) -> str | None:
    """/ip4/127.0.0.1/tcp/8080 -> http://127.0.0.1:8080 (None if not plain TCP).

    A loopback or unspecified address means Kubo's own host, which is the RPC's
    host: when that is not a loopback one, the gateway is looked for there."""
    parts = addr.strip().split("/")
    if len(parts) < 5 or parts[0] != "" or parts[3] != "tcp" or not parts[4].isdigit() or parts[5:] not in ([], [""]):
        return None
    proto, host, port = parts[1], parts[2], parts[4]
    if proto in ("dns", "dns4", "dns6"):
        return f"http://{'127.0.0.1' if host == 'localhost' else host}:{port}"  # localhost: a subdomain gateway
    if proto not in ("ip4", "ip6"):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.is_unspecified or ip.is_loopback:
        api_host = urlsplit(api_url).hostname or "localhost"
        try:
            api_local = api_host == "localhost" or ipaddress.ip_address(api_host).is_loopback
        except ValueError:
            api_local = False
        if not api_local:
            return f"http://[{api_host}]:{port}" if ":" in api_host else f"http://{api_host}:{port}"
        host = "127.0.0.1" if ip.version == 4 else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class KuboError(EngineError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class KuboEngine(StorageEngine):
    name = "kubo"

    def __init__(self, api_url: str, *, timeout: float = 60.0, offline_reads: bool = True,
                 retrieval_timeout: float = 30.0, observe: Callable[[str, float], None] | None = None,
                 gateway: str = "", pin_name: str = "hearth"):
        # The RPC over a Unix socket (`unix:/path` or Kubo's `/unix/path`): Kubo on the
        # same host; cheaper per byte than loopback TCP, for uploads above all
        self.unix_path = unix_socket_path(api_url)
        self.api_url = "http://localhost" if self.unix_path else api_url.rstrip("/")
        # every pin Hearth makes carries this name, so it can tell its pins from others
        self.pin_name = pin_name
        self.api = self.api_url + "/api/v0/"
        self.api_label = f"unix:{self.unix_path}" if self.unix_path else self.api
        self.timeout = timeout
        self.offline_reads = offline_reads
        self.retrieval_timeout = retrieval_timeout
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        # Kubo's gateway is always TCP: with the RPC on a Unix socket, sessions of its own
        self._gw_session: aiohttp.ClientSession | None = None
        self._gw_stream_session: aiohttp.ClientSession | None = None
        self._observe = observe or (lambda cmd, secs: None)
        # the gateway transport for cat: `[storage] kubo_gateway`, decided once (see
        # _gateway_url) and again after an outage
        self.gateway_setting = gateway
        self._gw_decided = False
        self._gw_url: str | None = None
        self._gw_retry_at = float("inf")
        self._gw_lock = asyncio.Lock()
        # spliced downloads (file_socket): sources handed out, bytes they moved
        self.socket_reads = 0
        self.socket_bytes = 0

    def _sessions(self, unix_path: str | None) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        def connector(**kw) -> aiohttp.BaseConnector:
            return aiohttp.UnixConnector(path=unix_path, **kw) if unix_path else aiohttp.TCPConnector(**kw)

        session = aiohttp.ClientSession(
            connector=connector(limit=64, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )
        # one connection per long read (see STREAM_HTTP10_MIN)
        stream_session = aiohttp.ClientSession(
            connector=connector(limit=64, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
            version=aiohttp.HttpVersion10,
            read_bufsize=1 << 20,
        )
        return session, stream_session

    async def start(self) -> None:
        self._session, self._stream_session = self._sessions(self.unix_path)
        if self.unix_path:
            self._gw_session, self._gw_stream_session = self._sessions(None)
        else:
            self._gw_session, self._gw_stream_session = self._session, self._stream_session

    async def close(self) -> None:
        for name in ("_session", "_stream_session", "_gw_session", "_gw_stream_session"):
            session = getattr(self, name)
            setattr(self, name, None)
            if session is not None and not session.closed:
                await session.close()

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
            self._gw_decided = False  # Kubo may come back with another config
            raise EngineUnavailable(f"Kubo RPC at {self.api_label} is unreachable: {exc.__class__.__name__}") from None
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
            "pin-name": self.pin_name,
            "progress": "false",
            "stream-channels": "true",
        }
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        body = _multipart_body(entries, boundary)
        if options.size_hint is not None and not options.wrap:
            # A single file of known size: send Content-Length, so neither side pays
            # for chunked framing of the whole upload.
            first = await anext(entries, None)
            body = _multipart_body(_prepend(first, entries), boundary)
            if first is not None and first.chunks is not None and "/" not in first.path:
                head = _part_head(boundary, first.path, "application/octet-stream")
                tail = f"\r\n--{boundary}--\r\n".encode()
                headers["Content-Length"] = str(len(head) + options.size_hint + len(tail))
                if first.raw is not None and first.raw.size == options.size_hint:
                    # its bytes go from the client's socket to Kubo's in the kernel
                    body = _ForwardedFile(head, first, tail, timeout=max(self.timeout, 600))
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
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise EngineUnavailable(f"Kubo add stream broke: {exc}") from None
        finally:
            resp.release()
        if not items:
            raise InvalidContent("nothing was added")
        root = items[-1]
        return AddResult(root.cid, root.size, items)

    # --- the gateway transport for cat ----------------------------------------------
    async def _config_value(self, key: str):
        try:
            out = await self._json("config", {"arg": key}, timeout=10)
        except KuboError:
            return None  # not set
        return (out or {}).get("Value")

    async def _gateway_url(self) -> str | None:
        if (self.gateway_setting or "").strip().lower() == "off":
            return None
        if self._gw_decided and (self._gw_url is not None or time.monotonic() < self._gw_retry_at):
            return self._gw_url
        async with self._gw_lock:
            if self._gw_decided and (self._gw_url is not None or time.monotonic() < self._gw_retry_at):
                return self._gw_url
            try:
                no_fetch = await self._config_value("Gateway.NoFetch") if self.offline_reads else None
                addrs = None
                if not (self.gateway_setting or "").strip():
                    addrs = await self._config_value("Addresses.Gateway")
            except (EngineError, ValueError):
                return None  # undecided: the RPC cat this time, ask again next time
            self._gw_url = gateway_decision(self.gateway_setting, addrs, no_fetch, offline_reads=self.offline_reads,
                                            api_url=self.api_url)
            self._gw_retry_at = float("inf")
            self._gw_decided = True
            return self._gw_url

    def _gateway_failed(self) -> None:
        self._gw_url = None
        self._gw_retry_at = time.monotonic() + GATEWAY_RETRY_SECS

    async def _open_gateway(self, base: str, cid: CID, offset: int, length: int | None,
                            long_read: bool) -> aiohttp.ClientResponse | None:
        """The gateway's response for these bytes, or None to use the RPC cat instead."""
        if self._session is None:
            await self.start()
        session = self._gw_stream_session if long_read else self._gw_session
        headers = {"Accept-Encoding": "identity", "Accept": "application/octet-stream, */*"}
        ranged = offset > 0 or length is not None
        if ranged:
            headers["Range"] = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        started = time.perf_counter()
        try:
            resp = await session.get(
                f"{base}/ipfs/{cid}",
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=self.timeout),
            )
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionResetError):
            self._gateway_failed()
            return None
        except asyncio.TimeoutError:
            raise EngineTimeout(f"Kubo's gateway did not answer for {cid} in time") from None
        except aiohttp.ClientError:
            self._gateway_failed()
            return None
        finally:
            self._observe("gateway", time.perf_counter() - started)
        ok = 206 if ranged else 200
        if resp.status == ok or (resp.status == 200 and offset == 0):
            declared = resp.headers.get("Content-Length", "")
            if resp.status == 200 and length is not None and not (declared.isdigit() and int(declared) >= length):
                resp.release()
                return None
            return resp
        try:
            body = await resp.read() if resp.status >= 400 else b""
        except (aiohttp.ClientError, asyncio.TimeoutError):
            body = b""
        finally:
            resp.release()
        refusal = self._gateway_refusal(resp.status, body, cid)
        if refusal is not None:
            raise refusal
        return None  # anything else: let the RPC cat give the canonical answer

    def _gateway_refusal(self, status: int, body: bytes, cid: CID) -> Exception | None:
        """What a gateway answer other than the bytes asked for means: missing content
        (local reads), a retrieval timeout (network reads), or None: ask the RPC cat."""
        text = body.decode("utf-8", "replace").lower()
        if self.offline_reads and (status in (404, 410) or any(m in text for m in _NOT_FOUND_MARKERS)):
            return BlockNotFound(cid)
        if status == 504 and not self.offline_reads:
            return EngineTimeout(f"retrieving {cid} timed out")
        return None

    # --- spliced file bytes from the gateway (StorageEngine.file_socket) ---------------
    async def file_socket(self, node: unixfs.Node, start: int, end: int) -> SocketSource | None:
        """Bytes [start, end) of node's file as the body of Kubo's gateway response, on a
        connection of its own: `GET /ipfs/{cid}` with the Range cat() would send, over
        HTTP/1.0 (never chunked). Only for long reads (STREAM_HTTP10_MIN) from a gateway
        cat() would use (_gateway_url: local reads stay local) over plain HTTP; status and
        length are checked as _open_gateway does, and the head is read here. None: use
        cat() (a short read, no gateway, TLS, or a gateway that cannot be reached or
        answered otherwise -- cat() then gives the canonical answer)."""
        length = end - start
        if length < STREAM_HTTP10_MIN or not splice.AVAILABLE:
            return None
        base = await self._gateway_url()
        if base is None:
            return None
        url = urlsplit(base)
        if url.scheme != "http" or not url.hostname:
            return None  # a gateway behind TLS: cat() reads it with aiohttp
        cid = node.cid
        started = time.perf_counter()
        sock = None
        try:
            sock = await self._gateway_connect(url.hostname, url.port or 80)
            if sock is None:
                return None
            request = (f"GET {url.path.rstrip('/')}/ipfs/{cid} HTTP/1.0\r\nHost: {url.netloc}\r\n"
                       "Accept-Encoding: identity\r\nAccept: application/octet-stream, */*\r\n"
                       f"Range: bytes={start}-{end - 1}\r\nUser-Agent: hearth\r\n\r\n").encode()
            await splice.write_all(sock.fileno(), request, timeout=self.timeout,
                                   timeout_message="Kubo's gateway did not take the request")
            answer = await self._gateway_head(sock, cid)
            if answer is None:
                return None
            status, headers, rest = answer
            if status == 206 or (status == 200 and start == 0):
                framing = (headers.get("transfer-encoding", "identity"), headers.get("content-encoding", "identity"))
                if any(v.strip().lower() not in ("", "identity") for v in framing):
                    return None  # not the bytes as they are: cat() decodes them
                declared = headers.get("content-length", "")
                if status == 200:
                    if not (declared.isdigit() and int(declared) >= length):
                        return None  # as _open_gateway: a whole file shorter than the range
                else:
                    m = _CONTENT_RANGE.fullmatch(headers.get("content-range", "").strip())
                    if (m is None or int(m[1]) != start or int(m[2]) < end - 1
                            or (declared and not (declared.isdigit() and int(declared) >= length))):
                        raise EngineError(f"Kubo's gateway answered {headers.get('content-range')!r} "
                                          f"({declared or 'no'} bytes) for bytes {start}-{end - 1} of {cid}")
                source = _GatewaySocket(self, sock, rest, length, cid)
                sock = None  # the source owns it now
                self.socket_reads += 1
                return source
            body = rest
            if status >= 400:
                body = await self._gateway_error_body(sock, rest, headers)
            refusal = self._gateway_refusal(status, body, cid)
            if refusal is not None:
                raise refusal
            return None
        except OSError as exc:
            if exc.errno == errno.ETIMEDOUT:
                raise EngineTimeout(f"Kubo's gateway did not answer for {cid} in time") from None
            self._gateway_failed()
            return None
        finally:
            if sock is not None:
                sock.close()
            self._observe("gateway_socket", time.perf_counter() - started)

    async def _gateway_connect(self, host: str, port: int) -> socket.socket | None:
        """A non-blocking TCP connection to the gateway (5 s to connect, as the sessions'
        sock_connect), or None if it cannot be reached (then left alone for a while)."""
        loop = asyncio.get_running_loop()
        try:
            ip = ipaddress.ip_address(host)
            targets = [(socket.AF_INET if ip.version == 4 else socket.AF_INET6, (host, port))]
        except ValueError:
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                self._gateway_failed()
                return None
            targets = [(family, addr) for family, _t, _p, _c, addr in infos]
        for family, addr in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                async with asyncio.timeout(5):
                    await loop.sock_connect(sock, addr)
                return sock
            except TimeoutError:
                sock.close()
                raise EngineTimeout("Kubo's gateway did not accept a connection in time") from None
            except OSError:
                sock.close()
            except BaseException:
                sock.close()
                raise
        self._gateway_failed()
        return None

    async def _gateway_head(self, sock: socket.socket, cid: CID) -> tuple[int, dict[str, str], bytes] | None:
        """(status, headers with lower-case names, body bytes read along with the head),
        or None (the gateway is then left alone for a while) if the connection closed or
        broke before a well-formed head arrived. Waits at most self.timeout for each read."""
        loop = asyncio.get_running_loop()
        buf = b""
        while True:
            try:
                chunk = sock.recv(GATEWAY_HEAD_MAX)
            except BlockingIOError:
                if not await splice.wait_fd(loop, sock.fileno(), False, self.timeout, None):
                    raise EngineTimeout(f"Kubo's gateway did not answer for {cid} in time") from None
                continue
            except ConnectionError:
                chunk = b""
            if not chunk:
                self._gateway_failed()
                return None
            buf += chunk
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(buf) > GATEWAY_HEAD_MAX:
                self._gateway_failed()
                return None
        lines = buf[:i].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            self._gateway_failed()
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            if not sep or not name:
                self._gateway_failed()
                return None
            if name in headers and name in ("content-length", "content-range") and headers[name] != value:
                self._gateway_failed()
                return None
            headers[name] = value
        return int(parts[1]), headers, buf[i + 4:]

    async def _gateway_error_body(self, sock: socket.socket, rest: bytes, headers: dict[str, str]) -> bytes:
        """The start of an error answer's body (what _gateway_refusal looks at), best effort."""
        loop = asyncio.get_running_loop()
        declared = headers.get("content-length", "")
        want = min(int(declared) if declared.isdigit() else GATEWAY_HEAD_MAX, GATEWAY_HEAD_MAX)
        body = rest
        try:
            while len(body) < want:
                try:
                    chunk = sock.recv(want - len(body))
                except BlockingIOError:
                    if not await splice.wait_fd(loop, sock.fileno(), False, self.timeout, None):
                        break
                    continue
                if not chunk:
                    break
                body += chunk
        except OSError:
            pass
        return body

    async def _cat_gateway(self, resp: aiohttp.ClientResponse, cid: CID, offset: int,
                           length: int | None) -> AsyncIterator[bytes]:
        if length is not None:
            expected = length
        elif resp.headers.get("Content-Length", "").isdigit():
            expected = int(resp.headers["Content-Length"])
        else:
            expected = None
        received = 0
        try:
            async for chunk in resp.content.iter_any():
                if expected is not None and received + len(chunk) > expected:
                    chunk = chunk[:expected - received]  # a 200 for the whole file, of which we want a prefix
                received += len(chunk)
                if chunk:
                    yield chunk
                if expected is not None and received >= expected:
                    break
            if expected is not None and received < expected:
                raise EngineError(f"Kubo's gateway stream of {cid} ended after {received} of {expected} bytes")
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise EngineUnavailable(f"Kubo's gateway stream of {cid} broke: {exc}") from None
        except asyncio.TimeoutError:
            raise EngineTimeout(f"Kubo's gateway stalled on {cid}") from None
        finally:
            resp.release()

    async def cat(self, cid: CID, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        long_read = length is None or length >= STREAM_HTTP10_MIN
        if length != 0:
            base = await self._gateway_url()
            if base is not None:
                resp = await self._open_gateway(base, cid, offset, length, long_read)
                if resp is not None:
                    if long_read and self.offline_reads:
                        _set_lowat(resp, STREAM_LOWAT)
                    async for chunk in self._cat_gateway(resp, cid, offset, length):
                        yield chunk
                    return
        async for chunk in self._cat_rpc(cid, offset, length):
            yield chunk

    async def _cat_rpc(self, cid: CID, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
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
    async def pin(self, cid: CID, recursive: bool = True, fetch: bool = False, origins: Sequence[str] = ()) -> None:
        if recursive and await self._pinned_as_ours(cid):
            # Kubo's pin/add walks the whole DAG before it sees the pin is there (0.6 CPU s
            # and 0.4 s per GiB, after every upload, whose add has pinned it already)
            return
        params = {"arg": str(cid), "recursive": "true" if recursive else "false", "name": self.pin_name}
        if not fetch:
            params["offline"] = "true"
        elif origins:
            await self._connect_origins(origins)
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
        """This node's pins: recursive and direct ones named `pin_name` (a Kubo may hold
        pins of its operator's own, which Hearth neither lists nor removes)."""
        for type_ in ("recursive", "direct"):
            resp = await self._open("pin/ls", {"stream": "true", "type": type_, "names": "true"})
            try:
                async for line in resp.content:
                    if line.strip():
                        obj = json.loads(line)
                        if obj.get("Name") == self.pin_name:
                            yield PinInfo(CID.parse(obj["Cid"]), obj["Type"])
            finally:
                resp.release()

    async def _pinned_as_ours(self, cid: CID) -> bool:
        """Pinned recursively under this node's pin name (a pin of another name is
        renamed by pin/add, so it does not count)."""
        try:
            out = await self._json("pin/ls", {"arg": str(cid), "type": "recursive", "names": "true"})
        except KuboError:
            return False  # not pinned
        keys = (out or {}).get("Keys") or {}
        return any(isinstance(v, dict) and v.get("Type") == "recursive" and v.get("Name") == self.pin_name
                   for v in keys.values())

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

    async def repo_stat(self) -> RepoStat:
        stat = await self._json("repo/stat", timeout=max(self.timeout, 300))
        pins = 0
        async for _ in self.pins():
            pins += 1
        return RepoStat(int(stat.get("RepoSize", 0)), int(stat.get("NumObjects", 0)), pins)

    async def repo_size(self) -> int:
        stat = await self._json("repo/stat", {"size-only": "true"})
        return int(stat.get("RepoSize", 0))

    # --- network -----------------------------------------------------------------------------
    async def addresses(self) -> list[str]:
        info = await self._json("id")
        peer = info.get("ID", "")
        out = []
        for a in info.get("Addresses") or []:
            out.append(a if "/p2p/" in a else f"{a}/p2p/{peer}")
        return out

    async def routing_get(self, key: str) -> bytes | None:
        """Kubo's best value for a routing key (`ipfs routing get`), e.g. an IPNS record
        for "/ipns/k51..."; None if its routing system has none. Unverified: the caller
        checks it (naming/ipns/system.py)."""
        try:
            out = await self._json("routing/get", {"arg": key})
        except KuboError as exc:
            text = str(exc).lower()
            if "online mode" in text and key.startswith("/ipns/"):
                # a daemon run with --offline refuses routing/get, but its routing system
                # (the datastore) answers through its gateway's Routing V1 API
                return await self._routing_get_gateway(key[len("/ipns/"):])
            if "not found" in text or "not supported" in text:
                return None
            raise
        import base64

        try:
            return base64.b64decode((out or {}).get("Extra") or "", validate=True) or None
        except ValueError:
            raise EngineError(f"Kubo's routing get of {key} answered something that is not base64") from None

    async def _routing_get_gateway(self, name: str) -> bytes | None:
        """An IPNS record from Kubo's gateway (GET /routing/v1/ipns/{name}); None if it has
        none or no gateway can be used. At most 10 KiB (the record size limit) plus one
        byte is read: the caller verifies, and refuses a larger one."""
        base = await self._gateway_url()
        if base is None or self._gw_session is None:
            return None
        try:
            async with self._gw_session.get(
                    f"{base}/routing/v1/ipns/{name}", headers={"Accept": "application/vnd.ipfs.ipns-record"},
                    timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=5)) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise EngineError(f"Kubo's gateway answered {resp.status} for the IPNS record of {name}")
                body = b""
                while len(body) <= 10 * 1024:
                    chunk = await resp.content.read(10 * 1024 + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
                return body or None
        except asyncio.TimeoutError:
            raise EngineTimeout(f"Kubo's gateway did not answer for the IPNS record of {name} in time") from None
        except aiohttp.ClientError as exc:
            raise EngineUnavailable(f"Kubo's gateway failed for the IPNS record of {name}: {exc}") from None

    async def connect(self, multiaddr: str) -> None:
        try:
            await self._json("swarm/connect", {"arg": multiaddr}, timeout=ORIGIN_CONNECT_TIMEOUT)
        except (KuboError, EngineTimeout):
            pass  # origins are a hint, not a requirement

    async def _connect_origins(self, origins: Sequence[str]) -> None:
        """Best effort: have Kubo dial the libp2p peers a pin request names, all at once,
        for at most ORIGIN_CONNECT_TIMEOUT. HTTP origins (URLs, /http multiaddrs) are
        skipped: swarm connect cannot use them. Raises EngineUnavailable if Kubo is down."""
        addrs = [o for o in origins if isinstance(o, str) and o.startswith("/") and multiaddr_to_http(o) is None]
        if not addrs:
            return
        results = []
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(self.connect(a) for a in addrs), return_exceptions=True), ORIGIN_CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            pass
        for r in results:
            if isinstance(r, EngineUnavailable):
                raise r


class _GatewaySocket(SocketSource):
    """The body of a Kubo gateway response on a connection of the engine's own
    (file_socket): `size` bytes, the first of which may already have been read along
    with the head (`prefix`)."""

    def __init__(self, engine: KuboEngine, sock: socket.socket, prefix: bytes, size: int, cid: CID):
        self._engine, self._sock, self._prefix, self.size, self._cid = engine, sock, prefix[:size], size, cid

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def send_to(self, fd: int, *, timeout: float | None = None) -> None:
        if self._sock is None:
            raise RuntimeError("a gateway socket source can be sent only once")
        engine, sock, size = self._engine, self._sock, self.size
        late = "the client did not take the download in time"
        moved = 0

        def count(n: int) -> None:
            nonlocal moved
            moved += n

        try:
            await splice.write_all(fd, self._prefix, timeout=timeout, timeout_message=late)
            moved = len(self._prefix)
            # local reads: Kubo has every block, wake up once per STREAM_LOWAT; network
            # reads may trickle in from peers (and must not look stalled meanwhile)
            await splice.forward(sock, fd, size - moved, idle_timeout=engine.timeout, write_timeout=timeout,
                                 write_timeout_message=late, lowat=STREAM_LOWAT if engine.offline_reads else 1,
                                 on_moved=count)
        except splice.SourceFailed as exc:
            what = f"stalled for {engine.timeout:.0f} s" if exc.reason == "stalled" else exc.reason
            message = f"Kubo's gateway stream of {self._cid} {what} after {moved} of {size} bytes"
            log.warning("%s: the client's connection is cut", message)
            if exc.reason == "stalled":
                raise EngineTimeout(message) from None
            if exc.reason == "broke":
                raise EngineUnavailable(message) from None
            raise EngineError(message) from None
        finally:
            engine.socket_bytes += moved
            self.close()


def _set_lowat(resp: aiohttp.ClientResponse, nbytes: int) -> None:
    """SO_RCVLOWAT on the (not reused) connection resp arrived on; best effort."""
    try:
        sock = resp.connection.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
    except (AttributeError, OSError):
        pass


class _ForwardedFile(aiohttp.payload.Payload):
    """The multipart body of a one-file add whose bytes are already in a socket
    (AddEntry.raw): only the part's head and tail go through Python, the file's bytes
    are moved by RawBody.send_to into this request's connection to Kubo. Over TLS (a
    remote Kubo behind https) it falls back to writing AddEntry.chunks."""

    _autoclose = True

    def __init__(self, head: bytes, entry: AddEntry, tail: bytes, *, timeout: float):
        super().__init__(entry.path)
        self._head, self._entry, self._tail, self._timeout = head, entry, tail, timeout
        self._size = len(head) + entry.raw.size + len(tail)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a forwarded upload body cannot be decoded")

    async def write(self, writer) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        self._consumed = True
        await writer.write(self._head)
        transport = writer.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or transport.get_extra_info("ssl_object") is not None:
            async for chunk in self._entry.chunks:
                await writer.write(chunk)
        else:
            # the head (and the request's headers) must be on the wire before the file
            while transport.get_write_buffer_size():
                if transport.is_closing():
                    raise ConnectionResetError("Kubo closed the connection")
                await asyncio.sleep(0.001)
            await self._entry.raw.send_to(sock.fileno(), timeout=self._timeout)
        await writer.write(self._tail)


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
