"""UnixFS importer producing the same DAGs (and so the same CIDs) as Kubo's
``ipfs add`` with its defaults: fixed 262144-byte chunks, balanced layout with at
most 174 links per node, CIDv0 + dag-pb leaves (``cid_version=0``) or CIDv1 +
raw leaves (``cid_version=1``), directories as sorted dag-pb nodes, and
HAMT-sharded directories (fanout 256, murmur3) once a directory's link-based
size estimate goes over 256 KiB, as Kubo's ``Import.UnixFSHAMTDirectorySizeThreshold``.

Streaming: the bytes of a file are cut into batches of BATCH_LEAVES leaves; each
batch is encoded, hashed and written in ONE worker-thread call (hashlib and file
IO release the GIL, so two batches hash in parallel on two cores), with at most
MAX_INFLIGHT batches outstanding. Memory stays at a few batches plus one list of
at most 174 links per tree level, whatever the file size. Imports running at
the same time share an ImportBudget: with many of them, each one's batches get
smaller and fewer are in flight, so a hundred concurrent uploads hold about as
much as a few do (one leaf each at the least, which must be whole before it is
hashed).
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from .. import dagpb
from ..cid import CID, DAG_PB, RAW, encode_varint
from ..dagpb import PBLink, PBNode, UnixFSData
from ..unixfs import murmur3_64

CHUNK_SIZE = 262144
MAX_LINKS = 174
BATCH_LEAVES = 16  # 4 MiB per worker-thread call
MAX_INFLIGHT = 3
HAMT_THRESHOLD = 262144  # Kubo Import.UnixFSHAMTDirectorySizeThreshold default (256KiB)
HAMT_FANOUT = 256
HAMT_MURMUR3 = 0x22
DIR_DATA = dagpb.encode_unixfs(UnixFSData(dagpb.DIRECTORY))  # b"\x08\x01"
SHA256_PREFIX = b"\x12\x20"


IMPORT_BUDGET = 48 << 20  # bytes all imports in progress may buffer between them


class ImportBudget:
    def __init__(self, total: int = IMPORT_BUDGET):
        self.total = total
        self.active = 0

    def shape(self) -> tuple[int, int]:
        """(leaves per batch, batches in flight) for one import right now."""
        share = self.total // max(1, self.active)
        for inflight in (MAX_INFLIGHT, 2, 1):
            leaves = share // (CHUNK_SIZE * (inflight + 2))  # + the batch being filled and its join copy
            if leaves >= 1:
                return min(BATCH_LEAVES, leaves), inflight
        return 1, 1


@dataclass(slots=True)
class Link:
    cid: CID
    tsize: int  # cumulative DAG size (block bytes of the whole sub-DAG)
    filesize: int  # file bytes under it


# A block's bytes, or the parts to concatenate (written with writev, never joined).
Block = "bytes | memoryview | tuple[bytes | memoryview, ...]"
# A sink stores blocks (multihash, data) and protects them from gc; blocking.
BlockSink = Callable[[list[tuple[bytes, Block]]], None]


def _leaf_header(n: int) -> tuple[bytes, bytes]:
    """dag-pb file leaf = head + chunk + tail, as dagpb.file_leaf_node builds it
    (PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: n}}), without copying chunk."""
    ufs_len = 3 + len(encode_varint(n)) + n + 1 + len(encode_varint(n))
    head = b"\x0a" + encode_varint(ufs_len) + b"\x08\x02\x12" + encode_varint(n)
    return head, b"\x18" + encode_varint(n)


_FULL_HEAD, _FULL_TAIL = _leaf_header(CHUNK_SIZE)


def _leaf_blocks(data: bytes | memoryview, raw_leaves: bool, cid_version: int) -> tuple[list[Link], list[tuple[bytes, Block]]]:
    """Cut data into CHUNK_SIZE leaves; return their links and blocks. Runs in a thread.
    No copy of the bytes: raw leaves are memoryview slices, dag-pb leaves are
    (head, chunk, tail) parts hashed incrementally and written with writev."""
    mv = memoryview(data)
    n = len(mv)
    links: list[Link] = []
    blocks: list[tuple[bytes, Block]] = []
    sha = hashlib.sha256
    pos = 0
    while True:
        chunk = mv[pos : pos + CHUNK_SIZE]
        size = len(chunk)
        if raw_leaves:
            mh = SHA256_PREFIX + sha(chunk).digest()
            cid = CID(1, RAW, mh)
            blocks.append((mh, chunk))
            blen = size
        elif size == 0:
            block = dagpb.file_leaf_node(b"")
            mh = SHA256_PREFIX + sha(block).digest()
            cid = CID(cid_version, DAG_PB, mh)
            blocks.append((mh, block))
            blen = len(block)
        else:
            head, tail = (_FULL_HEAD, _FULL_TAIL) if size == CHUNK_SIZE else _leaf_header(size)
            h = sha(head)
            h.update(chunk)
            h.update(tail)
            mh = SHA256_PREFIX + h.digest()
            cid = CID(cid_version, DAG_PB, mh)
            blocks.append((mh, (head, chunk, tail)))
            blen = len(head) + size + len(tail)
        links.append(Link(cid, blen, size))
        pos += CHUNK_SIZE
        if pos >= n:
            return links, blocks


def encode_block(node: PBNode, cid_version: int) -> tuple[CID, bytes]:
    block = dagpb.encode_node(node)
    return CID(cid_version, DAG_PB, SHA256_PREFIX + hashlib.sha256(block).digest()), block


class BalancedBuilder:
    """Kubo's balanced layout, built bottom-up level by level: each full group of
    MAX_LINKS nodes at a level becomes a parent at the next level as soon as it is
    complete; finish() closes the partial groups (a lone tail becomes a chain of
    one-link parents, as go-unixfs does)."""

    def __init__(self, cid_version: int):
        self.cid_version = cid_version
        self.levels: list[list[Link]] = [[]]
        self.blocks: list[tuple[bytes, bytes]] = []  # parent blocks not yet written

    def _parent(self, links: list[Link]) -> Link:
        fs = UnixFSData(dagpb.FILE, filesize=sum(l.filesize for l in links), blocksizes=[l.filesize for l in links])
        node = PBNode(links=[PBLink(l.cid, "", l.tsize) for l in links], data=dagpb.encode_unixfs(fs))
        cid, block = encode_block(node, self.cid_version)
        self.blocks.append((cid.multihash, block))
        return Link(cid, len(block) + sum(l.tsize for l in links), fs.filesize)

    def push(self, link: Link) -> None:
        level = 0
        self.levels[0].append(link)
        while len(self.levels[level]) == MAX_LINKS:
            parent = self._parent(self.levels[level])
            self.levels[level] = []
            level += 1
            if level == len(self.levels):
                self.levels.append([])
            self.levels[level].append(parent)

    def finish(self) -> Link:
        levels = self.levels
        top = len(levels) - 1
        while top > 0 and not levels[top]:
            top -= 1
        i = 0
        while True:
            if i >= top and len(levels[i]) == 1 and all(not l for l in levels[i + 1 :]):
                return levels[i][0]
            if levels[i]:
                parent = self._parent(levels[i])
                levels[i] = []
                if i + 1 == len(levels):
                    levels.append([])
                levels[i + 1].append(parent)
            i += 1

    def take_blocks(self) -> list[tuple[bytes, bytes]]:
        blocks, self.blocks = self.blocks, []
        return blocks


async def import_file(
    chunks: AsyncIterator[bytes],
    sink: BlockSink,
    cid_version: int,
    raw_leaves: bool,
    budget: ImportBudget | None = None,
) -> Link:
    """Stream one file into the store; return the link to its root."""
    builder = BalancedBuilder(cid_version)
    pending: collections.deque = collections.deque()
    budget = budget or ImportBudget()
    leaves, inflight = budget.shape()
    batch_bytes = CHUNK_SIZE * leaves

    def job(data, extra):
        links, blocks = _leaf_blocks(data, raw_leaves, cid_version)
        if extra:
            blocks.extend(extra)
        sink(blocks)
        return links

    async def drain_one():
        for link in await pending.popleft():
            builder.push(link)

    def submit(data):
        pending.append(asyncio.ensure_future(asyncio.to_thread(job, data, builder.take_blocks())))

    pieces: list[bytes] = []
    buffered = 0
    total = 0
    try:
        async for piece in chunks:
            if not piece:
                continue
            total += len(piece)
            pieces.append(piece)
            buffered += len(piece)
            if buffered >= batch_bytes:
                # one copy (the join); full batches go out as zero-copy views
                data = bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)
                full = len(data) - len(data) % batch_bytes
                mv = memoryview(data)
                for off in range(0, full, batch_bytes):
                    submit(mv[off : off + batch_bytes])
                rest = bytes(mv[full:])
                del data, mv
                pieces = [rest] if rest else []
                buffered = len(rest)
                leaves, inflight = budget.shape()  # others may have started or finished
                batch_bytes = CHUNK_SIZE * leaves
            while len(pending) >= inflight:
                await drain_one()
        if pieces or total == 0:
            submit(b"".join(pieces))
            pieces = []
        while pending:
            await drain_one()
    except BaseException:
        # Let worker threads finish before unwinding (their blocks stay unpinned: gc food).
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        raise
    root = builder.finish()
    rest = builder.take_blocks()
    if rest:
        await asyncio.to_thread(sink, rest)
    return root


# --- directories ---------------------------------------------------------------

@dataclass
class DirNode:
    children: dict[str, "DirNode | Link"] = field(default_factory=dict)


def build_basic_dir(entries: list[tuple[str, Link]], cid_version: int) -> tuple[Link, list[tuple[bytes, bytes]]]:
    entries = sorted(entries, key=lambda e: e[0].encode())
    node = PBNode(links=[PBLink(l.cid, name, l.tsize) for name, l in entries], data=DIR_DATA)
    cid, block = encode_block(node, cid_version)
    return Link(cid, len(block) + sum(l.tsize for _, l in entries), 0), [(cid.multihash, block)]


def estimated_dir_size(entries: list[tuple[str, Link]]) -> int:
    """go-unixfs' link-based size estimate: sum of name + binary CID lengths."""
    return sum(len(name.encode()) + len(l.cid.to_bytes()) for name, l in entries)


class _Shard:
    __slots__ = ("slots",)

    def __init__(self):
        self.slots: dict[int, "tuple[str, bytes, Link] | _Shard"] = {}


def build_hamt_dir(entries: list[tuple[str, Link]], cid_version: int, fanout: int = HAMT_FANOUT) -> tuple[Link, list[tuple[bytes, bytes]]]:
    """A HAMT-sharded directory as go-unixfs builds it (the trie is canonical:
    an entry lives in the shallowest shard where its hash prefix is unique)."""
    bits = fanout.bit_length() - 1
    width = len(format(fanout - 1, "X"))
    root = _Shard()

    def index(h: bytes, depth: int) -> int:
        v = int.from_bytes(h, "big")
        shift = 64 - bits * (depth + 1)
        if shift < 0:
            raise ValueError("HAMT too deep (hash exhausted)")
        return (v >> shift) & (fanout - 1)

    for name, link in entries:
        h = murmur3_64(name.encode())
        shard, depth = root, 0
        while True:
            i = index(h, depth)
            cur = shard.slots.get(i)
            if cur is None:
                shard.slots[i] = (name, h, link)
                break
            if isinstance(cur, _Shard):
                shard, depth = cur, depth + 1
                continue
            if cur[0] == name:
                shard.slots[i] = (name, h, link)
                break
            child = _Shard()
            child.slots[index(cur[1], depth + 1)] = cur
            shard.slots[i] = child
            shard, depth = child, depth + 1

    blocks: list[tuple[bytes, bytes]] = []

    def emit(shard: _Shard) -> Link:
        links = []
        bitfield = 0
        for i in sorted(shard.slots):
            bitfield |= 1 << i
            v = shard.slots[i]
            prefix = format(i, "X").zfill(width)
            if isinstance(v, _Shard):
                sub = emit(v)
                links.append(PBLink(sub.cid, prefix, sub.tsize))
            else:
                name, _h, l = v
                links.append(PBLink(l.cid, prefix + name, l.tsize))
        bf = bitfield.to_bytes((bitfield.bit_length() + 7) // 8, "big")
        data = dagpb.encode_unixfs(UnixFSData(dagpb.HAMT_SHARD, data=bf, hash_type=HAMT_MURMUR3, fanout=fanout))
        cid, block = encode_block(PBNode(links=links, data=data), cid_version)
        blocks.append((cid.multihash, block))
        return Link(cid, len(block) + sum(l.tsize for l in links), 0)

    return emit(root), blocks


def build_dir(entries: list[tuple[str, Link]], cid_version: int, hamt_threshold: int = HAMT_THRESHOLD) -> tuple[Link, list[tuple[bytes, bytes]]]:
    if estimated_dir_size(entries) > hamt_threshold:
        return build_hamt_dir(entries, cid_version)
    return build_basic_dir(entries, cid_version)
