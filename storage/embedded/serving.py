"""Serving file bytes straight from the block files: the embedded engine's
`file_segments` (zero-copy, see StorageEngine.file_segments) and its small reads
on the event loop.

A UnixFS file is a tree: intermediate dag-pb nodes (one per 174 leaves, a few
KiB each) list the leaves with their sizes, and the leaves hold the bytes,
either whole (raw leaves, CIDv1) or inside a dag-pb/UnixFS envelope (CIDv0):

    0x0a <len> ( 0x08 <type> 0x12 <len> FILE BYTES 0x18 <filesize> ... )

For a leaf, the walk opens the block file, reads its first HEAD_READ bytes to
find where the file bytes start (`leaf_span`), and hands out (file, offset,
length) for the gateway to send with sendfile: the bytes never pass through
Python, and no thread is involved. Checks that cost nothing catch a damaged
file on the way (its size on disk against the size the parent node gives, the
envelope's framing against the file's length); anything unusual -- a leaf
whose layout is not the plain one, a size that does not add up -- is read
whole instead, verified against its hash, and sliced. Blocks are otherwise not
re-hashed here: this path is used with `[storage] verify_on_read = "never"`
(blocks were verified when they were written; the scrubber re-checks them in
the background).

Everything here runs on the event loop: opening a file, one fstat, a 64-byte
pread, or reading an intermediate node of a few KiB are page-cache work of a
few microseconds. Bigger reads (a block over SMALL_READ) go to a thread.
"""
from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, AsyncIterator, BinaryIO

from .. import dagpb, unixfs
from ..cid import CID, DAG_PB, IDENTITY, RAW, InvalidCID, decode_varint
from ..engine import FileSegment
from .blockstore import SUFFIX, Blockstore, CorruptBlock, mh_key, verify_mh

if TYPE_CHECKING:
    from .engine import EmbeddedEngine

SMALL_READ = 64 * 1024  # blocks up to this size are read on the event loop (page cache, a few microseconds)
HEAD_READ = 64  # bytes read from a dag-pb leaf to find where its file bytes start


def block_path(root: str, mh: bytes) -> str:
    """Blockstore.path_for as a plain string (no pathlib: this runs once per leaf)."""
    key = mh_key(mh)
    return f"{root}/{key[-3:-1]}/{key}{SUFFIX}"


async def open_block(store: Blockstore, mh: bytes, root: str | None = None) -> BinaryIO | None:
    """The block file opened for reading (unbuffered, binary: what loop.sendfile
    takes), or None if it is not there."""
    path = block_path(root or str(store.root), mh)
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        return None


def read_small(store: Blockstore, cid: CID, verify: bool, limit: int = SMALL_READ) -> bytes | None:
    """A block of at most `limit` bytes, read right here (call it on the event loop:
    page-cache reads of a few KiB cost less than a hop to a thread). None if the block
    is bigger, or not found at first sight (the caller then takes the thread path,
    which looks again and raises BlockNotFound)."""
    path = store.path_str(cid.multihash)
    try:
        if os.stat(path).st_size > limit:  # a bigger block is not even opened here
            return None
        with open(path, "rb", buffering=0) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if verify and not verify_mh(cid.multihash, data):
        store._quarantine(path)
        raise CorruptBlock(cid)
    return data


def leaf_span(head: bytes, block_size: int) -> tuple[int, int] | None:
    """(offset, length) of the file bytes inside a dag-pb leaf block, from its first
    bytes `head` and its total size; None unless the block is a plain leaf: a PBNode
    holding only Data (no links), whose UnixFS message is of type File or Raw and has
    its Type before its Data field, and whose framing fits the block exactly."""
    try:
        if not head or head[0] != 0x0A:  # starts with Links (an intermediate node), or is empty
            return None
        msg_len, p = decode_varint(head, 1)
        end = p + msg_len
        if end != block_size:  # anything after Data: not a plain leaf (dag-pb puts Links first)
            return None
        kind = None
        while p < end:
            key, p = decode_varint(head, p)
            field, wire = key >> 3, key & 7
            if wire == 0:
                value, p = decode_varint(head, p)
                if field == 1:
                    kind = value
            elif wire == 2:
                length, p = decode_varint(head, p)
                if field == 2:
                    if kind not in (dagpb.FILE, dagpb.RAW) or p + length > end:
                        return None
                    return p, length
                p += length
                if p > len(head):
                    return None  # a long field before Data: unusual, read it whole
            else:
                return None
    except (InvalidCID, IndexError):  # truncated varint in the head
        return None
    return None


class SegmentWalk:
    """Bytes [start, end) of a UnixFS file as FileSegments (see the module docstring)."""

    def __init__(self, engine: "EmbeddedEngine"):
        self.engine = engine
        self.store = engine.store
        self.root = str(engine.store.root)

    async def segments(self, node: unixfs.Node, start: int, end: int) -> AsyncIterator[FileSegment]:
        end = min(end, node.size)
        if start >= end:
            return
        async for seg in self._walk(node, 0, start, end):
            yield seg

    async def _walk(self, node: unixfs.Node, base: int, start: int, end: int) -> AsyncIterator[FileSegment]:
        # node covers file bytes [base, base + its size): emit the overlap with [start, end),
        # exactly as unixfs._read_range does (the path this one stands in for)
        if node.cid.codec == RAW:
            data = node.block[max(0, start - base) : end - base]
            if data:
                yield FileSegment(data=data)
            return
        fs = node.unixfs
        if fs is None or fs.type not in (dagpb.FILE, dagpb.RAW):
            raise dagpb.InvalidNode(f"{node.cid} is not part of a file")
        pos = base
        if fs.data:
            d_end = pos + len(fs.data)
            if d_end > start and pos < end:
                yield FileSegment(data=fs.data[max(0, start - pos) : end - pos])
            pos = d_end
        sizes = fs.blocksizes
        for i, link in enumerate(node.pb.links):
            size = sizes[i] if i < len(sizes) else None
            if size is not None and pos + size <= start:
                pos += size
                continue
            if pos >= end:
                return
            child = None
            if size is not None:
                lo, hi = max(start, pos) - pos, min(end, pos + size) - pos
                leaf = await self._leaf(link.cid, size, lo, hi)
                if isinstance(leaf, FileSegment):
                    try:
                        yield leaf
                    finally:
                        leaf.file.close()
                    pos += size
                    continue
                child = leaf
            if child is None:
                child = await self._load(link.cid, verify=False)
            async for seg in self._walk(child, pos, start, end):
                yield seg
            pos += size if size is not None else child.size

    async def _leaf(self, cid: CID, size: int, lo: int, hi: int) -> FileSegment | unixfs.Node | None:
        """A child block covering `size` file bytes, of which [lo, hi) are wanted: a
        FileSegment if it is a leaf that can be sent from its file, else the decoded
        node (an intermediate node, or a leaf read whole because it looked unusual)."""
        if cid.multihash[0] == IDENTITY or cid.codec not in (RAW, DAG_PB):
            return await self._load(cid, verify=False)
        f = await open_block(self.store, cid.multihash, self.root)
        if f is None:  # not here: get_block fetches it (network reads) or raises BlockNotFound
            return await self._load(cid, verify=False)
        keep = False
        try:
            block_size = os.fstat(f.fileno()).st_size
            if cid.codec == RAW:
                if block_size == size:
                    keep = True
                    return FileSegment(file=f, offset=lo, length=hi - lo)
                return await self._load(cid, verify=True)  # a torn write? the hash decides
            head = os.pread(f.fileno(), HEAD_READ, 0)
            span = leaf_span(head, block_size)
            if span is not None and span[1] == size:
                keep = True
                return FileSegment(file=f, offset=span[0] + lo, length=hi - lo)
            if head[:1] == b"\x12" and block_size <= SMALL_READ:
                # an intermediate node (Links first): it is small, decode it from here
                data = os.pread(f.fileno(), block_size, 0) if block_size > len(head) else head
                try:
                    return unixfs.decode(cid, data)
                except dagpb.InvalidNode:
                    pass  # damaged on disk (CorruptBlock), or truly invalid: the checked read tells
            return await self._load(cid, verify=True)  # unusual layout or sizes: read whole, checked
        finally:
            if not keep:
                f.close()

    async def _load(self, cid: CID, verify: bool) -> unixfs.Node:
        if cid.hash_code == IDENTITY:
            return unixfs.decode(cid, cid.digest)
        if verify:
            data = read_small(self.store, cid, True)
            if data is None:
                data = await asyncio.to_thread(self.store.get, cid)  # hashes it; CorruptBlock if damaged
            return unixfs.decode(cid, data)
        return unixfs.decode(cid, await self.engine.get_block(cid))
