"""The storage-engine boundary: one async interface, implemented by the Kubo
engine (storage/kubo.py) and the embedded engine (storage/embedded/).

Everything HTTP-shaped lives above this line, in gateway/. Engines raise the
typed errors below; the gateway maps them to status codes.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, BinaryIO, Callable, Sequence

from . import unixfs
from .cid import CID


class EngineError(Exception):
    """The engine failed in a way the caller did not cause (maps to 502)."""


class EngineUnavailable(EngineError):
    """The engine cannot be reached right now (maps to 503 + Retry-After)."""


class EngineTimeout(EngineError):
    """The engine did not answer in time, e.g. content not retrievable (maps to 504)."""


class BlockNotFound(LookupError):
    """The block is not in this node's store (and, in local mode, was not fetched)."""

    def __init__(self, cid: CID | str):
        super().__init__(f"block {cid} not found on this node")
        self.cid = cid


class InvalidContent(ValueError):
    """Input the caller sent is not acceptable (bad CAR, bad DAG...): maps to 400."""


class UploadTooLarge(ValueError):
    """An upload went over max_upload_bytes (maps to 413)."""


class RawBody(abc.ABC):
    """A file's bytes still unread in the client's socket: an upload body of known
    length that the caller forwards unchanged. An engine that sends them over a
    stream socket of its own (the Kubo engine, to Kubo's add) may move them with
    send_to, in the kernel (splice(2)), instead of iterating AddEntry.chunks: it
    uses one or the other, never both."""

    size: int  # the exact number of bytes send_to moves

    @abc.abstractmethod
    async def send_to(self, fd: int, *, timeout: float | None) -> None:
        """Move all `size` bytes into the connected stream socket `fd`, which the caller
        owns and must not write to meanwhile (its own buffered writes flushed first).
        Waits at most `timeout` s each time the socket is full. Raises if the body ends
        short, stalls or a socket breaks: part of it may have been sent, so the caller
        must then abandon that connection."""


class SocketSource(RawBody):
    """A run of a file's bytes waiting in an open stream socket of the engine's -- the
    body of an upstream HTTP response, its head already read and checked -- for
    zero-copy serving (StorageEngine.file_socket): `size` bytes, which send_to moves
    into the client's socket (with splice(2)). The caller either calls send_to once or
    just close()s it; send_to closes it too.

    send_to(fd, timeout=...) waits at most `timeout` s (None: without limit) each time
    the client's socket is full, and at most the engine's own timeout for the source
    to deliver. A source that ends short, breaks or stalls raises EngineError /
    EngineUnavailable / EngineTimeout; a failed write to fd (the client went away)
    raises ConnectionError. Either way the client's connection is out of step: the
    caller must close it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the source (idempotent)."""


@dataclass(slots=True)
class AddEntry:
    """One item of an upload: a file with its bytes, or an (empty) directory.

    `path` is relative and '/'-separated; `chunks` is None for a directory. `raw`,
    when not None, is the same bytes as `chunks`, for an engine that forwards
    them from socket to socket (see RawBody).
    """

    path: str
    chunks: AsyncIterator[bytes] | None
    raw: RawBody | None = None


@dataclass(slots=True)
class AddOptions:
    cid_version: int = 1  # 1 implies raw leaves, as `ipfs add --cid-version=1`
    raw_leaves: bool | None = None  # None: the default for cid_version
    wrap: bool = False
    pin: bool = True
    size_hint: int | None = None  # exact byte count of a single-file upload, when known up front

    @property
    def effective_raw_leaves(self) -> bool:
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves


@dataclass(slots=True)
class AddedItem:
    path: str  # "" for the wrapping directory
    cid: CID
    size: int  # cumulative DAG size (as `ipfs add` reports it), for files and directories


@dataclass(slots=True)
class AddResult:
    root: CID
    size: int
    items: list[AddedItem] = field(default_factory=list)


@dataclass(slots=True)
class RepoStat:
    size_bytes: int  # bytes of block data stored
    blocks: int
    pins: int  # recursive + direct pins held for Hearth


@dataclass(slots=True)
class FileSegment:
    """A run of a file's bytes, for zero-copy serving (StorageEngine.file_segments):
    either `length` bytes at `offset` of an open block file (`file`, sent with
    sendfile), or bytes already in memory (`data`)."""

    data: bytes | None = None
    file: BinaryIO | None = None
    offset: int = 0
    length: int = 0

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.length


@dataclass(slots=True)
class PinInfo:
    cid: CID
    type: str  # "recursive" | "direct" | "indirect"


class StorageEngine(abc.ABC):
    """The one interface every storage engine implements."""

    name: str = "abstract"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open resources. Must not fail when a remote daemon is down."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    @abc.abstractmethod
    async def check_ready(self) -> None:
        """Return if the engine can serve; raise EngineUnavailable otherwise."""

    # --- content -----------------------------------------------------------
    @abc.abstractmethod
    async def add(self, entries: AsyncIterator[AddEntry], options: AddOptions) -> AddResult:
        """Import files, streaming. The last/wrapping item is the root."""

    @abc.abstractmethod
    def cat(self, cid: CID, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream the bytes of a UnixFS file (or raw block) from offset."""

    @abc.abstractmethod
    async def get_block(self, cid: CID) -> bytes:
        """The raw block; raises BlockNotFound."""

    @abc.abstractmethod
    async def has_block(self, cid: CID) -> bool: ...

    @abc.abstractmethod
    async def put_block(self, data: bytes, codec: int = 0x55) -> CID: ...

    def file_segments(self, node: unixfs.Node, start: int, end: int) -> AsyncIterator[FileSegment] | None:
        """Optional: bytes [start, end) of the UnixFS file `node` as FileSegments, in order,
        so the gateway can send them with sendfile, with no copy through Python. None
        (the default) means the engine does not offer it: the gateway streams cat().

        The iterator owns the files it opens: a segment's file is valid until the next
        one is asked for, and closing the iterator (aclose) closes the last one. A missing
        or damaged block raises as get_block would, when its segment is reached."""
        return None

    async def file_socket(self, node: unixfs.Node, start: int, end: int) -> SocketSource | None:
        """Optional: bytes [start, end) of the UnixFS file `node` as a SocketSource (an open
        socket positioned at them), so the gateway can splice them into the client's socket
        with no copy through Python. None (the default, or when the engine cannot offer it
        for this read) means: use file_segments or cat(). Raises as cat() would when the
        content is missing (BlockNotFound) or the engine is down, before any byte is sent.
        The gateway asks only for a single run of bytes to a plain (non-TLS) connection."""
        return None

    async def stat(self, cid: CID) -> unixfs.Node:
        """Decode the node at cid (type and size)."""
        return await unixfs.load(self.get_block, cid)

    async def ls(self, cid: CID) -> AsyncIterator[unixfs.DirEntry]:
        node = await self.stat(cid)
        async for entry in unixfs.list_directory(self.get_block, node):
            yield entry

    async def export_car(self, roots: list[CID]) -> AsyncIterator[tuple[CID, bytes]]:
        """Every block of the DAGs under roots, depth-first, each once."""
        seen: set = set()
        for root in roots:
            node = await unixfs.load(self.get_block, root)
            async for item in unixfs.walk_all(self.get_block, node, seen):
                yield item

    def writing(self):
        """Async context manager around an upload: from before its add until its record
        is written, no gc may take its blocks (the Kubo engine: Kubo's own add is atomic
        with its pin; the embedded engine: the store lock, storage/embedded/gc.py)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    async def import_car(self, read: Callable[[int], Awaitable[bytes]]) -> list[CID]:
        """Import a CARv1 stream, every block verified; pin and return its roots.
        Raises InvalidContent (nothing kept) for a bad, truncated or rootless CAR."""

    # --- pins and gc -----------------------------------------------------------
    @abc.abstractmethod
    async def pin(self, cid: CID, recursive: bool = True, fetch: bool = False, origins: Sequence[str] = ()) -> None:
        """Pin cid. With fetch=True the engine may retrieve missing blocks from the network,
        using origins (a pin request's multiaddrs or URLs of peers that have the content)
        as hints; while nothing delivers them it keeps trying until the caller gives up
        (cancellation, e.g. the pin worker's pin_timeout). With fetch=False it never
        touches the network: missing blocks raise BlockNotFound."""

    @abc.abstractmethod
    async def unpin(self, cid: CID) -> None:
        """Remove a pin; not an error if there is none."""

    @abc.abstractmethod
    def pins(self) -> AsyncIterator[PinInfo]: ...

    @abc.abstractmethod
    async def gc(self) -> int:
        """Remove unpinned blocks; return how many were removed (best effort for Kubo)."""

    @abc.abstractmethod
    async def repo_stat(self) -> RepoStat:
        """Size, block count and pin count of the store."""

    async def repo_size(self) -> int:
        """Bytes stored, as cheaply as the engine can tell (for the gc watermark)."""
        return (await self.repo_stat()).size_bytes

    # --- network ---------------------------------------------------------------
    async def addresses(self) -> list[str]:
        """Multiaddrs other peers can reach this node's blocks at (PSA delegates); may be
        empty, then the PSA falls back to the node's own HTTP address ([server] public_url)."""
        return []

    async def connect(self, multiaddr: str) -> None:  # noqa: B027 - optional hook
        """Best-effort connection to a peer (a libp2p multiaddr)."""
