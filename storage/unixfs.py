"""Read UnixFS over any block source: path resolution, file ranges, directory
listings (plain and HAMT-sharded) and the block walks behind CAR responses.

Everything here takes `get_block(cid) -> bytes`, so the gateway's semantics are
the same whichever storage engine supplies the blocks.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from . import dagpb
from .cid import CID, DAG_CBOR, DAG_JSON, DAG_PB, RAW, IDENTITY

GetBlock = Callable[[CID], Awaitable[bytes]]

READ_AHEAD = 8  # sibling blocks fetched concurrently while reading a file


class PathNotFound(LookupError):
    """A path segment does not exist under its parent."""


class NotTraversable(ValueError):
    """A path continues through something that is not a directory."""


@dataclass(slots=True)
class Node:
    """A decoded block: what the gateway needs to know to serve it."""

    cid: CID
    block: bytes
    kind: str  # "file" | "directory" | "hamt" | "symlink" | "raw-block" | "dag-cbor" | "dag-json" | "unknown"
    size: int  # file bytes for files; block length otherwise
    pb: dagpb.PBNode | None = None
    unixfs: dagpb.UnixFSData | None = None


@dataclass(slots=True)
class Resolved:
    node: Node
    roots: list[CID]  # the CID at each path segment, for X-Ipfs-Roots
    path_blocks: list[CID] = field(default_factory=list)  # every block visited before the terminus


@dataclass(slots=True)
class DirEntry:
    name: str
    cid: CID
    tsize: int


def decode(cid: CID, block: bytes) -> Node:
    if cid.codec == RAW:
        return Node(cid, block, "file", len(block))
    if cid.codec == DAG_CBOR:
        return Node(cid, block, "dag-cbor", len(block))
    if cid.codec == DAG_JSON:
        return Node(cid, block, "dag-json", len(block))
    if cid.codec != DAG_PB:
        return Node(cid, block, "unknown", len(block))
    pb = dagpb.decode_node(block)
    if pb.data is None:
        # dag-pb without UnixFS data: not a file system node
        return Node(cid, block, "unknown", len(block), pb)
    fs = dagpb.decode_unixfs(pb.data)
    if fs.type in (dagpb.FILE, dagpb.RAW):
        size = fs.filesize if fs.filesize is not None else len(fs.data)
        return Node(cid, block, "file", size, pb, fs)
    if fs.type == dagpb.DIRECTORY:
        return Node(cid, block, "directory", len(block), pb, fs)
    if fs.type == dagpb.HAMT_SHARD:
        return Node(cid, block, "hamt", len(block), pb, fs)
    if fs.type == dagpb.SYMLINK:
        return Node(cid, block, "symlink", len(fs.data), pb, fs)
    return Node(cid, block, "unknown", len(block), pb, fs)


async def load(get_block: GetBlock, cid: CID) -> Node:
    if cid.hash_code == IDENTITY:
        return decode(cid, cid.digest)
    return decode(cid, await get_block(cid))


# --- murmur3 x64 128 (first 64 bits), the HAMT hash of go-unixfs ------------

_M64 = (1 << 64) - 1


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _fmix(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    k ^= k >> 33
    return k


def murmur3_64(data: bytes) -> bytes:
    c1, c2 = 0x87C37B91114253D5, 0x4CF5AD432745937F
    h1 = h2 = 0
    n = len(data)
    nblocks = n // 16
    for i in range(nblocks):
        k1 = int.from_bytes(data[i * 16 : i * 16 + 8], "little")
        k2 = int.from_bytes(data[i * 16 + 8 : i * 16 + 16], "little")
        k1 = (k1 * c1) & _M64
        k1 = _rotl(k1, 31)
        k1 = (k1 * c2) & _M64
        h1 ^= k1
        h1 = _rotl(h1, 27)
        h1 = (h1 + h2) & _M64
        h1 = (h1 * 5 + 0x52DCE729) & _M64
        k2 = (k2 * c2) & _M64
        k2 = _rotl(k2, 33)
        k2 = (k2 * c1) & _M64
        h2 ^= k2
        h2 = _rotl(h2, 31)
        h2 = (h2 + h1) & _M64
        h2 = (h2 * 5 + 0x38495AB5) & _M64
    tail = data[nblocks * 16 :]
    k1 = k2 = 0
    t = len(tail)
    if t > 8:
        k2 = int.from_bytes(tail[8:], "little")
        k2 = (k2 * c2) & _M64
        k2 = _rotl(k2, 33)
        k2 = (k2 * c1) & _M64
        h2 ^= k2
    if t > 0:
        k1 = int.from_bytes(tail[:8], "little")
        k1 = (k1 * c1) & _M64
        k1 = _rotl(k1, 31)
        k1 = (k1 * c2) & _M64
        h1 ^= k1
    h1 ^= n
    h2 ^= n
    h1 = (h1 + h2) & _M64
    h2 = (h2 + h1) & _M64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    h1 = (h1 + h2) & _M64
    return h1.to_bytes(8, "big")


def _hamt_bits(fanout: int) -> int:
    bits = fanout.bit_length() - 1
    if fanout <= 0 or 1 << bits != fanout or bits % 8 and bits > 8:
        raise dagpb.InvalidNode(f"unsupported HAMT fanout {fanout}")
    return bits


async def _hamt_lookup(get_block: GetBlock, shard: Node, name: str, visited: list[CID]) -> CID:
    fanout = shard.unixfs.fanout or 256
    bits = _hamt_bits(fanout)
    width = len(format(fanout - 1, "X"))
    h = int.from_bytes(murmur3_64(name.encode()), "big")
    depth = 0
    node = shard
    while True:
        shift = 64 - bits * (depth + 1)
        if shift < 0:
            raise PathNotFound(name)
        index = (h >> shift) & (fanout - 1)
        prefix = format(index, "X").zfill(width)
        nxt = None
        for link in node.pb.links:
            if link.name == prefix + name:
                return link.cid
            if link.name == prefix:
                nxt = link.cid
        if nxt is None:
            raise PathNotFound(name)
        visited.append(nxt)
        node = await load(get_block, nxt)
        if node.kind != "hamt":
            raise dagpb.InvalidNode("HAMT shard links to a non-shard node")
        depth += 1


async def resolve(get_block: GetBlock, root: CID, segments: list[str]) -> Resolved:
    node = await load(get_block, root)
    roots = [root]
    visited: list[CID] = []
    for seg in segments:
        visited.append(node.cid)
        if node.kind == "directory":
            child = next((l.cid for l in node.pb.links if l.name == seg), None)
            if child is None:
                raise PathNotFound(seg)
        elif node.kind == "hamt":
            child = await _hamt_lookup(get_block, node, seg, visited)
        else:
            raise NotTraversable(f"cannot traverse {seg!r}: {node.cid} is a {node.kind}, not a directory")
        node = await load(get_block, child)
        roots.append(child)
    return Resolved(node, roots, visited)


async def list_directory(get_block: GetBlock, node: Node) -> AsyncIterator[DirEntry]:
    if node.kind == "directory":
        for link in node.pb.links:
            yield DirEntry(link.name, link.cid, link.tsize)
        return
    if node.kind != "hamt":
        raise NotTraversable(f"{node.cid} is not a directory")
    width = len(format((node.unixfs.fanout or 256) - 1, "X"))
    stack = [node]
    while stack:
        shard = stack.pop(0)
        for link in shard.pb.links:
            if len(link.name) > width:
                yield DirEntry(link.name[width:], link.cid, link.tsize)
            else:
                stack.append(await load(get_block, link.cid))


async def read_file(get_block: GetBlock, node: Node, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
    """Yield the bytes of a UnixFS file from offset, at most length of them."""
    end = node.size if length is None else min(node.size, offset + length)
    if offset >= end:
        return
    async for piece in _read_range(get_block, node, 0, offset, end):
        yield piece


async def _read_range(get_block: GetBlock, node: Node, base: int, start: int, end: int) -> AsyncIterator[bytes]:
    # node covers file bytes [base, base+node.size); emit the overlap with [start, end)
    if node.cid.codec == RAW:
        yield node.block[max(0, start - base) : end - base]
        return
    fs = node.unixfs
    if fs is None or fs.type not in (dagpb.FILE, dagpb.RAW):
        raise dagpb.InvalidNode(f"{node.cid} is not part of a file")
    pos = base
    if fs.data:
        d_end = pos + len(fs.data)
        if d_end > start and pos < end:
            yield fs.data[max(0, start - pos) : end - pos]
        pos = d_end
    sizes = fs.blocksizes
    links = node.pb.links
    # Read ahead: fetch up to READ_AHEAD sibling blocks at once, so block reads (and
    # the hash checks behind them) overlap with sending the bytes already read.
    pending: dict[int, asyncio.Future] = {}
    try:
        for i, link in enumerate(links):
            size = sizes[i] if i < len(sizes) else None
            if size is not None and pos + size <= start:
                pos += size
                continue
            if pos >= end:
                return
            ahead_pos = pos
            for j in range(i, min(len(links), i + READ_AHEAD)):
                if j >= len(sizes) or ahead_pos >= end:
                    break
                if j not in pending:
                    pending[j] = asyncio.ensure_future(load(get_block, links[j].cid))
                ahead_pos += sizes[j]
            task = pending.pop(i, None)
            child = await task if task is not None else await load(get_block, link.cid)
            async for piece in _read_range(get_block, child, pos, start, end):
                yield piece
            pos += size if size is not None else child.size
    finally:
        for task in pending.values():
            task.cancel()
        if pending:
            await asyncio.gather(*pending.values(), return_exceptions=True)


# --- CAR walks ---------------------------------------------------------------

def child_links(node: Node) -> list[CID]:
    return [l.cid for l in node.pb.links] if node.pb is not None else []


async def walk_all(get_block: GetBlock, node: Node, seen: set) -> AsyncIterator[tuple[CID, bytes]]:
    """Depth-first, each block once: dag-scope=all. Children load lazily, so memory
    holds one path of CIDs, not the DAG."""
    stack: list[Node | CID] = [node]
    while stack:
        item = stack.pop()
        cid = item.cid if isinstance(item, Node) else item
        key = (cid.codec, cid.multihash)
        if key in seen:
            continue
        seen.add(key)
        n = item if isinstance(item, Node) else await load(get_block, cid)
        if cid.hash_code != IDENTITY:
            yield cid, n.block
        stack.extend(reversed(child_links(n)))


def parse_entity_bytes(value: str) -> tuple[int, int | None]:
    """Parse `from:to` (ints, negatives from the end, `*` for to). Raises ValueError."""
    parts = value.split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError("entity-bytes must be from:to")
    start = int(parts[0])
    end = None if parts[1] == "*" else int(parts[1])
    if end is not None and start >= 0 and end >= 0 and end < start:
        raise ValueError("entity-bytes: to is before from")
    return start, end


def resolve_entity_range(rng: tuple[int, int | None], size: int) -> tuple[int, int]:
    """Absolute half-open byte range [start, stop) for a file of size bytes."""
    start, end = rng
    if start < 0:
        start = max(0, size + start)
    stop = size if end is None else (size + end + 1 if end < 0 else end + 1)
    return start, min(stop, size)


async def walk_file_range(get_block: GetBlock, node: Node, base: int, start: int, stop: int, seen: set) -> AsyncIterator[tuple[CID, bytes]]:
    key = (node.cid.codec, node.cid.multihash)
    if key not in seen:
        seen.add(key)
        if node.cid.hash_code != IDENTITY:
            yield node.cid, node.block
    if node.pb is None or node.unixfs is None:
        return
    pos = base + len(node.unixfs.data or b"")
    sizes = node.unixfs.blocksizes
    for i, link in enumerate(node.pb.links):
        size = sizes[i] if i < len(sizes) else 0
        if pos + size > start and pos < stop:
            child = await load(get_block, link.cid)
            async for item in walk_file_range(get_block, child, pos, start, stop, seen):
                yield item
        pos += size
        if pos >= stop:
            break


async def walk_entity(get_block: GetBlock, node: Node, entity_bytes: tuple[int, int | None] | None, seen: set) -> AsyncIterator[tuple[CID, bytes]]:
    """dag-scope=entity (optionally narrowed by entity-bytes)."""
    if node.kind == "file":
        start, stop = (0, node.size) if entity_bytes is None else resolve_entity_range(entity_bytes, node.size)
        if start >= stop:  # zero-length or fully outside: the same as dag-scope=block
            if node.cid.hash_code != IDENTITY:
                yield node.cid, node.block
            return
        async for item in walk_file_range(get_block, node, 0, start, stop, seen):
            yield item
        return
    if node.kind == "hamt":
        # every shard block, none of the entries below them
        width = len(format((node.unixfs.fanout or 256) - 1, "X"))
        stack = [node]
        while stack:
            shard = stack.pop()
            key = (shard.cid.codec, shard.cid.multihash)
            if key in seen:
                continue
            seen.add(key)
            yield shard.cid, shard.block
            for link in reversed(shard.pb.links):
                if len(link.name) <= width:
                    stack.append(await load(get_block, link.cid))
        return
    key = (node.cid.codec, node.cid.multihash)
    if key not in seen and node.cid.hash_code != IDENTITY:
        seen.add(key)
        yield node.cid, node.block
