"""EmbeddedEngine: the StorageEngine that keeps blocks on local disk, no daemon.

    data_dir/blocks/       flatfs-style block files (blockstore.py)
    data_dir/pins.sqlite   pin index (pins.py)
    data_dir/staging/      CAR imports in progress (removed on failure/restart)

Every disk access runs in a worker thread (asyncio.to_thread), batched so one
thread hop covers many blocks where it matters (file import, CAR staging, gc),
except page-cache work of a few microseconds: reading a block of at most
serving.SMALL_READ bytes, and the opens, fstats and header reads of zero-copy
file serving (serving.py).
The engine's only network is HTTP, outbound, through the guarded client
(outbound/client.py): pin(fetch=True) fetches missing blocks from trustless
gateways -- the HTTP origins of the request plus `fetch_gateways` -- verified
block by block (fetch.py), and as Kubo keeps trying (with backoff; without any
source it looks again on disk, where an upload or CAR import may put the
content, and an add wakes it at once) until the caller gives up;
pin(fetch=False) never touches the network and raises BlockNotFound for a
missing block. With network_reads (`[gateway] serve = "network"`), get_block
fetches a missing block from `fetch_gateways` within retrieval_timeout
(EngineTimeout after that) and stores it unpinned. addresses() is the node's
own HTTP address (public_addresses); connect() does nothing (no libp2p).

Choices: the pin index is SQLite (atomic, durable small transactions; see pins.py);
blocks are not fsynced by default (``fsync=True`` to enable; see blockstore.py);
with verify_on_read="always" every read is checked against its hash (a torn write
after power loss is detected, never served), with "never" reads are not re-hashed
(blocks were verified as they were written) and the scrubber (scrubber.py) finds
damage in the background; file_segments serves file bytes from the block files
with sendfile (serving.py) in that mode; gc and concurrent adds are coordinated
as described in gc.py.
pins() lists the recursive and direct pins (roots), not the indirect ones.
"""
from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, Sequence

from outbound import GuardedClient

from .. import dagpb, unixfs
from ..car import CarReader, InvalidCAR
from ..cid import CID, DAG_PB, IDENTITY, RAW
from ..engine import (
    AddedItem,
    AddEntry,
    AddOptions,
    AddResult,
    BlockNotFound,
    EngineTimeout,
    EngineUnavailable,
    FileSegment,
    InvalidContent,
    PinInfo,
    RepoStat,
    StorageEngine,
)
from . import fetch as fetchmod
from . import gc as gcmod
from . import serving
from .blockstore import Blockstore, process_alive
from .importer import HAMT_THRESHOLD, IMPORT_BUDGET, DirNode, ImportBudget, Link, build_dir, import_file
from .pins import DIRECT, RECURSIVE, PinIndex

CAR_STAGE_BATCH = 8 << 20
PIN_RETRY_FIRST, PIN_RETRY_MAX = 0.5, 30.0  # backoff between rounds of a pin whose blocks no source has (yet)
READ_RETRY_FIRST, READ_RETRY_MAX = 0.1, 2.0  # the same for a network read, within retrieval_timeout

log = logging.getLogger("hearth.embedded")


def _split_path(path: str) -> list[str]:
    p = path.strip("/")
    if not p:
        raise InvalidContent(f"invalid upload path {path!r}")
    parts = p.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidContent(f"invalid upload path {path!r}")
    return parts


def _dagpb_links(cid: CID, data: bytes) -> list[CID]:
    """Links of a dag-pb block entering the store; InvalidContent unless it is valid
    dag-pb in canonical order (Links before Data, as go-codec-dagpb requires). gc's
    mark phase relies on that order to skip reading leaves (see gc.py)."""
    try:
        links = [l.cid for l in dagpb.decode_node(data).links]
    except dagpb.InvalidNode as exc:
        raise InvalidContent(f"block {cid} is not valid dag-pb: {exc}") from None
    if links and data[:1] != b"\x12":
        raise InvalidContent(f"block {cid} is not canonical dag-pb (Data before Links)")
    return links


class EmbeddedEngine(StorageEngine):
    name = "embedded"

    def __init__(self, data_dir: Path, *, fsync: bool = False, hamt_threshold: int = HAMT_THRESHOLD,
                 fetch_gateways: Sequence[str] = (), client: GuardedClient | None = None,
                 network_reads: bool = False, retrieval_timeout: float = 30.0,
                 public_addresses: Sequence[str] = (), verify_on_read: str = "always", shared_store: bool = False,
                 import_budget: int = IMPORT_BUDGET):
        """fetch_gateways: trustless gateway URLs (or HTTP multiaddrs) missing blocks are
        fetched from; client: the guarded outbound client for every such request (a strict
        default one if None); network_reads: get_block fetches missing blocks (gateway
        `serve = "network"`), within retrieval_timeout seconds; public_addresses: the
        multiaddrs addresses() reports."""
        self.gateways = fetchmod.targets(fetch_gateways, what="fetch_gateways")
        self.client = client if client is not None else GuardedClient()
        self.fetcher = fetchmod.BlockFetcher(self.client)
        self.network_reads = network_reads
        self.retrieval_timeout = float(retrieval_timeout)
        if verify_on_read not in ("always", "never"):
            raise ValueError(f'verify_on_read must be "always" or "never", got {verify_on_read!r}')
        self.verify_reads = verify_on_read == "always"  # re-hash every block read from the store
        self.public_addresses = list(public_addresses)
        self._reads: dict[bytes, asyncio.Task] = {}  # network reads in flight, by multihash
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # shared_store: other processes (server workers) write to this store too
        self.store = Blockstore(self.data_dir / "blocks", fsync=fsync, shared=shared_store)
        self.staging = self.data_dir / "staging"
        self.pin_index = PinIndex(self.data_dir / "pins.sqlite")
        self.run_dir = self.data_dir / "run"
        self.store_lock = gcmod.StoreLock(self.run_dir)  # writes shared, gc exclusive, across processes (gc.py)
        self.hamt_threshold = hamt_threshold
        self.import_budget = ImportBudget(import_budget)  # buffers shared by the adds in progress
        self._closed = False
        self._arrived = asyncio.Event()  # set (and replaced) whenever content lands: see _content_arrived

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        def clean():
            # only what dead processes left: other workers may be writing now
            if self.staging.is_dir():
                for stage in self.staging.iterdir():
                    if not process_alive(stage.name):
                        shutil.rmtree(stage, ignore_errors=True)
            self.store.remove_stale_temps()

        await asyncio.to_thread(clean)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            for task in list(self._reads.values()):
                task.cancel()
            await self.client.close()
            await asyncio.to_thread(self.pin_index.close)
            self.store_lock.close()

    async def check_ready(self) -> None:
        def ok():
            return self.store.root.is_dir() and os.access(self.store.root, os.W_OK)

        if self._closed or not await asyncio.to_thread(ok):
            raise EngineUnavailable(f"embedded block store at {self.store.root} is not writable")

    # --- blocks -----------------------------------------------------------------
    async def get_block(self, cid: CID) -> bytes:
        cid = CID.parse(cid)
        if cid.hash_code == IDENTITY:
            return cid.digest
        try:
            # a small block is read right here (page cache, microseconds); bigger ones in a thread
            data = serving.read_small(self.store, cid, self.verify_reads)
            if data is not None:
                return data
            return await asyncio.to_thread(self.store.get, cid, self.verify_reads)
        except BlockNotFound:
            if not (self.network_reads and self.gateways):
                raise
        return await self._retrieve(cid)

    async def _retrieve(self, cid: CID) -> bytes:
        """A missing block from fetch_gateways (network reads): one fetch per block however
        many readers wait for it, retried until retrieval_timeout (EngineTimeout)."""
        self.fetcher.check_hash(cid)
        key = cid.multihash
        task = self._reads.get(key)
        if task is None:
            task = asyncio.create_task(self._retrieve_once(cid), name=f"hearth-fetch-{cid}")
            self._reads[key] = task

            def done(t: asyncio.Task) -> None:
                if self._reads.get(key) is t:
                    del self._reads[key]
                if not t.cancelled():
                    t.exception()  # retrieved: the readers may all have gone

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _retrieve_once(self, cid: CID) -> bytes:
        sources = fetchmod.SourceSet(self.gateways)
        delay, last = READ_RETRY_FIRST, None
        try:
            async with asyncio.timeout(self.retrieval_timeout):
                while True:
                    try:
                        data = await self.fetcher.fetch(cid, sources)
                        break
                    except fetchmod.NotRetrievable as exc:
                        last = exc
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, READ_RETRY_MAX)
        except TimeoutError:
            detail = f": {last}" if last is not None else ""
            raise EngineTimeout(f"retrieving {cid} timed out after {self.retrieval_timeout:g}s{detail}") from None

        def keep():  # unpinned: gc may collect it
            if cid.codec == DAG_PB:
                try:
                    _dagpb_links(cid, data)
                except InvalidContent:
                    return  # served, but not kept (see _dagpb_links)
            self.store.put(cid.multihash, data)

        await asyncio.to_thread(keep)
        return data

    async def has_block(self, cid: CID) -> bool:
        cid = CID.parse(cid)
        return await asyncio.to_thread(self.store.has, cid.multihash)

    async def put_block(self, data: bytes, codec: int = RAW) -> CID:
        data = bytes(data)
        cid = CID.from_digest(data, codec=codec, version=1)
        if codec == DAG_PB:
            _dagpb_links(cid, data)
        await asyncio.to_thread(self.store.put, cid.multihash, data)
        self._content_arrived()
        return cid

    # --- add ------------------------------------------------------------------------
    async def add(self, entries: AsyncIterator[AddEntry], options: AddOptions) -> AddResult:
        if options.cid_version not in (0, 1):
            raise InvalidContent(f"unsupported cid_version {options.cid_version}")
        async with self.store_lock.shared():  # from before the first block until the pin: see gc.py
            return await self._add(entries, options)

    async def _add(self, entries: AsyncIterator[AddEntry], options: AddOptions) -> AddResult:
        cid_version = options.cid_version
        raw_leaves = options.effective_raw_leaves
        store = self.store
        self.import_budget.active += 1

        def sink(blocks):
            store.put_many(blocks)

        try:
            tree = DirNode()
            items: list[AddedItem] = []
            top: list[str] = []  # top-level names, in first-seen order
            async for entry in entries:
                parts = _split_path(entry.path)
                if parts[0] not in tree.children and parts[0] not in top:
                    top.append(parts[0])
                node = tree
                for i, part in enumerate(parts[:-1]):
                    child = node.children.get(part)
                    if child is None:
                        child = node.children[part] = DirNode()
                    elif not isinstance(child, DirNode):
                        raise InvalidContent(f"{'/'.join(parts[: i + 1])!r} is a file, not a directory")
                    node = child
                name = parts[-1]
                existing = node.children.get(name)
                if entry.chunks is None:
                    if existing is None:
                        node.children[name] = DirNode()
                    elif not isinstance(existing, DirNode):
                        raise InvalidContent(f"{entry.path!r} given as both a file and a directory")
                    continue
                if existing is not None:
                    raise InvalidContent(f"{entry.path!r} given twice")
                link = await import_file(entry.chunks, sink, cid_version, raw_leaves, self.import_budget)
                node.children[name] = link
                items.append(AddedItem("/".join(parts), link.cid, link.tsize))

            dir_blocks: list[tuple[bytes, bytes]] = []

            def build(node: DirNode, path: str) -> Link:
                children = []
                for name in sorted(node.children, key=lambda n: n.encode()):
                    child = node.children[name]
                    if isinstance(child, DirNode):
                        child = build(child, f"{path}/{name}" if path else name)
                    children.append((name, child))
                link, blocks = build_dir(children, cid_version, self.hamt_threshold)
                dir_blocks.extend(blocks)
                items.append(AddedItem(path, link.cid, link.tsize))
                return link

            def build_all() -> Link:
                # encoding/hashing directories is CPU work: keep it off the event loop too
                if options.wrap:
                    root = build(tree, "")
                else:
                    for name in sorted(top, key=lambda n: n.encode()):
                        child = tree.children[name]
                        if isinstance(child, DirNode):
                            build(child, name)
                    # Kubo emits files first, then directories bottom-up: the last item is the root
                    last = items[-1]
                    root = Link(last.cid, last.size, 0)
                if dir_blocks:
                    sink(dir_blocks)
                self.store.sync_dirs()
                return root

            if not options.wrap and not top:
                raise InvalidContent("nothing to add")
            root = await asyncio.to_thread(build_all)
            if options.pin:
                await asyncio.to_thread(self.pin_index.add, [root.cid], RECURSIVE)
            self._content_arrived()
            return AddResult(root.cid, root.tsize, items)
        finally:
            self.import_budget.active -= 1

    # --- read --------------------------------------------------------------------
    async def cat(self, cid: CID, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        cid = CID.parse(cid)
        node = await unixfs.load(self.get_block, cid)
        if node.kind != "file":
            raise dagpb.InvalidNode(f"{cid} is a {node.kind}, not a file")
        async for piece in unixfs.read_file(self.get_block, node, offset, length):
            yield piece

    def file_segments(self, node: unixfs.Node, start: int, end: int) -> AsyncIterator[FileSegment] | None:
        """File bytes from the block files, for sendfile (serving.py); only when reads are
        not re-hashed (verify_on_read="never"): "always" keeps the verified copy path."""
        if self.verify_reads:
            return None
        return serving.SegmentWalk(self).segments(node, start, end)

    # --- CAR import -------------------------------------------------------------------
    async def import_car(self, read: Callable[[int], Awaitable[bytes]]) -> list[CID]:
        stage = self.staging / f"{os.getpid()}-{uuid.uuid4().hex}"
        await asyncio.to_thread(stage.mkdir, parents=True, exist_ok=True)
        staged: dict[bytes, CID] = {}
        links: dict[bytes, list[CID]] = {}

        def write_batch(batch: list[tuple[CID, bytes]]):
            for cid, data in batch:
                mh = cid.multihash
                if cid.codec == DAG_PB:
                    ls = _dagpb_links(cid, data)
                    if ls:
                        links[mh] = ls
                with open(stage / mh.hex(), "wb") as f:
                    f.write(data)

        try:
            reader = CarReader(read)
            try:
                roots = await reader.read_header()
                if not roots:
                    raise InvalidContent("CAR has no roots")
                batch: list[tuple[CID, bytes]] = []
                size = 0
                async for cid, data in reader.blocks():
                    if cid.hash_code == IDENTITY or cid.multihash in staged:
                        continue
                    staged[cid.multihash] = cid
                    batch.append((cid, data))
                    size += len(data)
                    if size >= CAR_STAGE_BATCH:
                        await asyncio.to_thread(write_batch, batch)
                        batch, size = [], 0
                if batch:
                    await asyncio.to_thread(write_batch, batch)
            except InvalidCAR as exc:
                raise InvalidContent(f"invalid CAR: {exc}") from None

            def check_and_commit():
                reach: list[bytes] = []
                seen: set[bytes] = set()
                stack = list(reversed(roots))
                while stack:
                    cid = stack.pop()
                    mh = cid.multihash
                    if cid.hash_code == IDENTITY or mh in seen:
                        continue
                    seen.add(mh)
                    if mh in staged:
                        reach.append(mh)
                        if mh in links:
                            stack.extend(links[mh])
                        elif cid.codec == DAG_PB and staged[mh].codec != DAG_PB:
                            stack.extend(_dagpb_links(cid, (stage / mh.hex()).read_bytes()))
                        continue
                    ls = gcmod.block_links(self.store, cid)
                    if ls is None:
                        what = "root block" if cid in roots else "block"
                        raise InvalidContent(f"incomplete DAG: {what} {cid} is neither in the CAR nor on this node")
                    stack.extend(ls)
                for mh in reach:
                    self.store.adopt(mh, str(stage / mh.hex()))
                self.store.sync_dirs()
                self.pin_index.add(roots, RECURSIVE)

            async with self.store_lock.shared():  # the blocks it relies on stay until its pin: see gc.py
                await asyncio.to_thread(check_and_commit)
            self._content_arrived()
            return roots
        finally:
            await asyncio.to_thread(shutil.rmtree, stage, True)

    def writing(self):
        return self.store_lock.shared()

    # --- pins and gc ----------------------------------------------------------------------
    async def pin(self, cid: CID, recursive: bool = True, fetch: bool = False, origins: Sequence[str] = ()) -> None:
        cid = CID.parse(cid)
        sources = fetchmod.SourceSet([*self._origin_targets(origins), *self.gateways]) if fetch else None
        fetching = sources is not None

        def check_and_pin():
            if not recursive:
                if not self.store.has(cid.multihash):
                    raise BlockNotFound(cid)
            else:
                seen: set[bytes] = set()
                stack = [cid]
                while stack:
                    c = stack.pop()
                    if c.multihash in seen:
                        continue
                    seen.add(c.multihash)
                    ls = gcmod.block_links(self.store, c)
                    if ls is None:
                        raise BlockNotFound(c)
                    stack.extend(ls)
            self.pin_index.add([cid], RECURSIVE if recursive else DIRECT)

        # The blocks found on disk or fetched stay safe from a gc in any process until
        # the pin is recorded: the store lock is held shared across each round of
        # fetching and the pin that ends the last one (gc.py). It is let go while a round
        # waits to try again (content may be missing for pin_timeout), so a gc is not
        # held up meanwhile; the next round finds again what that gc took.
        if not fetching:
            async with self.store_lock.shared():
                await asyncio.to_thread(check_and_pin)
            return
        await self._fetch_for_pin(cid, recursive, sources, check_and_pin)

    def _content_arrived(self) -> None:
        """Wake the pins waiting for content (an upload may bring what they lack)."""
        event, self._arrived = self._arrived, asyncio.Event()
        event.set()

    @staticmethod
    def _origin_targets(origins: Sequence[str]) -> list:
        """The HTTP origins of a pin request (URLs, /http multiaddrs); libp2p ones are ignored."""
        out = []
        for o in origins or ():
            t = fetchmod.http_target(o) if isinstance(o, str) else None
            if t is None:
                log.debug("origin %r is not an HTTP address: ignored", o)
            elif t not in out:
                out.append(t)
        return out

    async def _fetch_for_pin(self, cid: CID, recursive: bool, sources, check_and_pin) -> None:
        """Fetch what is missing of the DAG, round after round (with backoff) while some
        block is not retrievable, then check_and_pin() within the last round's hold of
        the store lock; the caller's timeout or cancellation ends it."""
        store = self.store

        def lookup_many(cids: list[CID]) -> list[list[CID] | None]:
            return [gcmod.block_links(store, c) for c in cids]

        def keep(c: CID, data: bytes) -> list[CID]:
            links = _dagpb_links(c, data) if c.codec == DAG_PB else []
            store.put(c.multihash, data)
            return links

        async def lookup(cids):
            return await asyncio.to_thread(lookup_many, cids)

        async def store_block(c, data):
            return await asyncio.to_thread(keep, c, data)

        delay = PIN_RETRY_FIRST
        while True:
            arrived = self._arrived  # taken before looking: content landing after the look still wakes us
            try:
                async with self.store_lock.shared():
                    n = await fetchmod.fetch_dag(cid, recursive=recursive, sources=sources, fetcher=self.fetcher,
                                                 lookup=lookup, store=store_block)
                    await asyncio.to_thread(check_and_pin)
            except fetchmod.NotRetrievable as exc:
                log.log(logging.INFO if sources else logging.DEBUG, "pin %s: %s; trying again in %.1fs", cid, exc,
                        delay)
                try:  # the backoff, cut short by an add/import/put on this node
                    await asyncio.wait_for(arrived.wait(), delay)
                except asyncio.TimeoutError:
                    delay = min(delay * 2, PIN_RETRY_MAX)
                continue
            if n:
                log.info("pin %s: fetched %d blocks", cid, n)
            return

    async def unpin(self, cid: CID) -> None:
        cid = CID.parse(cid)
        await asyncio.to_thread(self.pin_index.remove, cid)

    async def pins(self) -> AsyncIterator[PinInfo]:
        for cid, type_ in await asyncio.to_thread(self.pin_index.all):
            yield PinInfo(cid, type_)

    async def gc(self) -> int:
        return await asyncio.to_thread(gcmod.collect, self.store, self.pin_index.all, self.store_lock)

    async def repo_stat(self) -> RepoStat:
        def stat():
            blocks, size = self.store.scan_usage()  # exact, and resets the running count
            return RepoStat(size, blocks, self.pin_index.count())

        return await asyncio.to_thread(stat)

    async def repo_size(self) -> int:
        return (await asyncio.to_thread(self.store.usage))[1]

    # --- network ------------------------------------------------------------------------------
    async def addresses(self) -> list[str]:
        return list(self.public_addresses)

    async def connect(self, multiaddr: str) -> None:
        return None

