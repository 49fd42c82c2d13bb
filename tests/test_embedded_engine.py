"""EmbeddedEngine on its own: blocks, add/cat, directories, CAR import (good and
bad), pins and gc (also gc racing an upload). Kubo comparisons live in
test_embedded_vs_kubo.py."""
from __future__ import annotations

import asyncio
import os
import sys
import random

from pathlib import Path

import pytest

from storage import unixfs
from storage.car import encode_block, encode_header
from storage.cid import CID, DAG_PB, RAW
from storage.dagpb import InvalidNode
from storage.embedded import CorruptBlock, EmbeddedEngine
from storage.embedded import importer
from storage.engine import AddEntry, AddOptions, BlockNotFound, InvalidContent


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


async def pieces(data: bytes, size: int = 100_003, delay: float = 0.0):
    for i in range(0, len(data), size):
        if delay:
            await asyncio.sleep(delay)
        yield data[i : i + size]


def entries(*items):
    async def gen():
        for path, data in items:
            yield AddEntry(path, None if data is None else pieces(data))

    return gen()


async def add_bytes(engine, data: bytes, **opts):
    return await engine.add(entries(("f.bin", data)), AddOptions(**opts))


async def cat_all(engine, cid, offset=0, length=None) -> bytes:
    return b"".join([p async for p in engine.cat(cid, offset, length)])


def block_files(engine: EmbeddedEngine) -> set[str]:
    return {p.name for p in engine.store.root.rglob("*.data")}


async def car_bytes(engine, roots) -> bytes:
    out = bytearray(encode_header(roots))
    async for cid, block in engine.export_car(roots):
        out += encode_block(cid, block)
    return bytes(out)


def reader_of(data: bytes, step: int = 7919):
    pos = 0

    async def read(n: int) -> bytes:
        nonlocal pos
        n = min(n, step)
        chunk = data[pos : pos + n]
        pos += len(chunk)
        return chunk

    return read


@pytest.fixture
async def engine(tmp_path):
    e = EmbeddedEngine(tmp_path / "node")
    await e.start()
    yield e
    await e.close()


# --- blocks ----------------------------------------------------------------------

async def test_put_get_has_block(engine):
    cid = await engine.put_block(b"hello block")
    assert cid == CID.from_digest(b"hello block", RAW)
    assert await engine.has_block(cid)
    assert await engine.get_block(cid) == b"hello block"
    # same multihash under another codec / version is the same stored block
    assert await engine.has_block(CID(0, DAG_PB, cid.multihash))
    missing = CID.from_digest(b"nope")
    assert not await engine.has_block(missing)
    with pytest.raises(BlockNotFound):
        await engine.get_block(missing)
    ident = CID(1, RAW, b"\x00\x03abc")
    assert await engine.get_block(ident) == b"abc" and await engine.has_block(ident)
    with pytest.raises(InvalidContent):
        await engine.put_block(b"\xff\xff not dag-pb", codec=DAG_PB)


async def test_flatfs_layout(engine):
    cid = await engine.put_block(b"layout")
    path = engine.store.path_for(cid.multihash)
    key = path.name[: -len(".data")]
    assert key.startswith("CIQ") and path.parent.name == key[-3:-1]
    assert path.read_bytes() == b"layout"
    assert not [p for p in engine.store.root.rglob(".tmp-*")]


async def test_corrupt_block_is_not_served_and_heals(engine):
    data = data_of(300_000)
    res = await add_bytes(engine, data, cid_version=1)
    leaf = (await engine.stat(res.root)).pb.links[0].cid
    path = engine.store.path_for(leaf.multihash)
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptBlock):
        await engine.get_block(leaf)
    assert not path.exists()  # quarantined
    with pytest.raises(BlockNotFound):
        await cat_all(engine, res.root)
    await add_bytes(engine, data, cid_version=1)  # re-adding rewrites it
    assert await cat_all(engine, res.root) == data


# --- add / cat ---------------------------------------------------------------------

@pytest.mark.parametrize("cid_version", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 262143, 262144, 262145, 3 * 262144 + 17])
async def test_add_cat_roundtrip(engine, size, cid_version):
    data = data_of(size)
    res = await add_bytes(engine, data, cid_version=cid_version)
    assert res.root.version == cid_version
    assert res.root.codec == (RAW if cid_version == 1 and size <= 262144 else DAG_PB)
    assert await cat_all(engine, res.root) == data
    node = await engine.stat(res.root)
    assert node.kind == "file" and node.size == size
    assert [p async for p in engine.pins()][-1].cid == res.root
    for off, ln in [(0, 10), (262140, 10), (size // 2, None), (size, 5)]:
        assert await cat_all(engine, res.root, off, ln) == data[off : None if ln is None else off + ln]


async def test_balanced_tree_shape():
    # 174 leaves: one level; 175: two levels with a lone-leaf chain
    b = importer.BalancedBuilder(0)
    leaves = [importer.Link(CID.from_digest(bytes([i % 256, i // 256]), RAW), 10, 10) for i in range(175)]
    for leaf in leaves[:174]:
        b.push(leaf)
    assert b.finish().filesize == 1740
    b = importer.BalancedBuilder(0)
    for leaf in leaves:
        b.push(leaf)
    root = b.finish()
    assert root.filesize == 1750 and len(b.blocks) == 3  # two level-1 nodes and the root


async def test_add_small_pieces_and_memoryviews(engine):
    data = data_of(1_000_000, 3)

    async def odd():
        i = 0
        sizes = [1, 7, 4096, 262144, 65536, 3]
        while i < len(data):
            n = sizes[i % len(sizes)]
            yield memoryview(data)[i : i + n]
            i += n

    async def gen():
        yield AddEntry("x", odd())

    res = await engine.add(gen(), AddOptions(cid_version=0))
    ref = await add_bytes(engine, data, cid_version=0)
    assert res.root == ref.root and await cat_all(engine, res.root) == data


async def test_directory_add_and_items(engine):
    res = await engine.add(
        entries(("d/a.txt", b"hello"), ("d/sub/b.bin", data_of(300_000)), ("d/empty", None), ("d/sub/c", b"")),
        AddOptions(cid_version=1),
    )
    paths = [i.path for i in res.items]
    assert paths[:3] == ["d/a.txt", "d/sub/b.bin", "d/sub/c"]
    assert set(paths[3:]) == {"d/empty", "d/sub", "d"} and paths[-1] == "d"
    assert res.root == res.items[-1].cid and res.size == res.items[-1].size
    sizes = {i.path: i.size for i in res.items}
    assert sizes["d/a.txt"] == 5  # raw leaf: cumulative DAG size == file size
    assert sizes["d"] > sizes["d/sub"] > 300_000
    r = await unixfs.resolve(engine.get_block, res.root, ["sub", "b.bin"])
    assert r.node.size == 300_000
    names = [e.name async for e in engine.ls(res.root)]
    assert names == ["a.txt", "empty", "sub"]
    empty = await unixfs.resolve(engine.get_block, res.root, ["empty"])
    assert empty.node.kind == "directory" and empty.node.block == b"\x0a\x02\x08\x01"
    with pytest.raises(InvalidNode):
        await cat_all(engine, res.root)


async def test_wrap_and_multiple_roots(engine):
    res = await engine.add(entries(("one.txt", b"1")), AddOptions(wrap=True))
    assert res.items[-1].path == "" and res.root == res.items[-1].cid
    assert [e.name async for e in engine.ls(res.root)] == ["one.txt"]
    # without wrap, several top-level files: the last item is the root, as Kubo
    res = await engine.add(entries(("a", b"1"), ("b", b"2")), AddOptions())
    assert [i.path for i in res.items] == ["a", "b"] and res.root == res.items[-1].cid
    # wrap with nothing in it: the empty directory
    res = await engine.add(entries(), AddOptions(wrap=True, cid_version=0))
    assert str(res.root) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


@pytest.mark.parametrize("bad", [[("../x", b"1")], [("a//b", b"1")], [("", b"1")], [("a", b"1"), ("a/b", b"2")], [("a", b"1"), ("a", b"2")]])
async def test_bad_paths(engine, bad):
    with pytest.raises(InvalidContent):
        await engine.add(entries(*bad), AddOptions())


async def test_add_stream_error_leaves_nothing_pinned(engine):
    async def broken():
        yield b"x" * 5_000_000
        raise ConnectionResetError("client went away")

    async def gen():
        yield AddEntry("f", broken())

    with pytest.raises(ConnectionResetError):
        await engine.add(gen(), AddOptions())
    assert [p async for p in engine.pins()] == []
    assert await asyncio.wait_for(engine.gc(), 5) > 0  # no write holds the store lock any more
    assert block_files(engine) == set()


# --- CAR import ---------------------------------------------------------------------------

async def make_car(tmp_path, data=None, cid_version=0):
    src = EmbeddedEngine(tmp_path / "src")
    data = data if data is not None else data_of(1_000_000, 9)
    res = await src.add(entries(("d/f.bin", data), ("d/g.txt", b"g")), AddOptions(cid_version=cid_version))
    car = await car_bytes(src, [res.root])
    await src.close()
    return res, car


async def test_import_car_roundtrip(engine, tmp_path):
    res, car = await make_car(tmp_path)
    roots = await engine.import_car(reader_of(car))
    assert roots == [res.root]
    assert await cat_all(engine, (await unixfs.resolve(engine.get_block, res.root, ["f.bin"])).node.cid) == data_of(1_000_000, 9)
    assert (res.root, "recursive") in [(p.cid, p.type) async for p in engine.pins()]
    assert not any(engine.staging.iterdir()) if engine.staging.exists() else True
    # importing again is fine (dedup)
    assert await engine.import_car(reader_of(car)) == [res.root]


async def test_import_car_root_already_local(engine, tmp_path):
    res, car = await make_car(tmp_path)
    await engine.import_car(reader_of(car))
    # a CAR naming a root we already hold completely, with no blocks in it
    assert await engine.import_car(reader_of(encode_header([res.root]))) == [res.root]


def _corrupt(car: bytes) -> bytes:
    b = bytearray(car)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


def _truncate(car: bytes) -> bytes:
    return car[: len(car) - 1000]


def _missing_root(car: bytes) -> bytes:
    return encode_header([CID.from_digest(b"not in this car", DAG_PB, 0)]) + car[len(encode_header([CID.from_digest(b"x", DAG_PB, 0)])) :]


def _no_roots(car: bytes) -> bytes:
    return encode_header([]) + car[len(encode_header([CID.from_digest(b"x", DAG_PB, 0)])) :]


def _drop_a_leaf(car: bytes) -> bytes:
    # remove the last block section (a leaf of f.bin): the DAG under the root is incomplete
    from storage.cid import decode_varint

    hlen, p = decode_varint(car, 0)
    pos = p + hlen
    sections = []
    while pos < len(car):
        n, q = decode_varint(car, pos)
        sections.append((pos, q + n))
        pos = q + n
    start, end = sections[-2]
    return car[:start] + car[end:]


def _garbage(car: bytes) -> bytes:
    return b"\x05hello world"


@pytest.mark.parametrize("mangle", [_corrupt, _truncate, _missing_root, _no_roots, _drop_a_leaf, _garbage])
async def test_bad_car_is_rejected_and_nothing_kept(engine, tmp_path, mangle):
    # something already in the store, which must stay exactly as it is
    keep = await add_bytes(engine, b"pre-existing", cid_version=1)
    before = block_files(engine)
    _res, car = await make_car(tmp_path)
    with pytest.raises(InvalidContent):
        await engine.import_car(reader_of(mangle(car)))
    assert block_files(engine) == before
    assert [p.cid async for p in engine.pins()] == [keep.root]
    assert not engine.staging.exists() or not any(engine.staging.iterdir())


async def test_car_with_same_root_header_size():
    # the header-swap helpers above assume equal header lengths for CIDv0 roots
    assert len(encode_header([CID.from_digest(b"a", DAG_PB, 0)])) == len(encode_header([CID.from_digest(b"b", DAG_PB, 0)]))


# --- pins and gc ------------------------------------------------------------------------------

async def test_pin_unpin_and_gc(engine):
    pinned = await add_bytes(engine, data_of(700_000, 1))
    loose = await add_bytes(engine, data_of(700_000, 2), pin=False)
    direct_cid = await engine.put_block(b"direct")
    stray = await engine.put_block(b"stray")
    await engine.pin(direct_cid, recursive=False)
    pins = {(p.cid, p.type) async for p in engine.pins()}
    assert pins == {(pinned.root, "recursive"), (direct_cid, "direct")}

    removed = await engine.gc()
    assert removed == 4 + 1  # 3 leaves + root of `loose`, and `stray`
    assert await cat_all(engine, pinned.root) == data_of(700_000, 1)
    assert await engine.has_block(direct_cid)
    assert not await engine.has_block(loose.root) and not await engine.has_block(stray)

    await engine.unpin(pinned.root)
    await engine.unpin(pinned.root)  # not an error
    assert await engine.gc() == 4
    assert block_files(engine) == {engine.store.path_for(direct_cid.multihash).name}


async def test_pin_missing_blocks_raises(engine):
    with pytest.raises(BlockNotFound):
        await engine.pin(CID.from_digest(b"absent", RAW))
    with pytest.raises(asyncio.TimeoutError):  # fetch=True: keeps trying until the caller gives up (as Kubo)
        await asyncio.wait_for(engine.pin(CID.from_digest(b"absent", RAW), fetch=True), 0.3)
    res = await add_bytes(engine, data_of(600_000), pin=False)
    leaf = (await engine.stat(res.root)).pb.links[1].cid
    os.unlink(engine.store.path_for(leaf.multihash))
    with pytest.raises(BlockNotFound) as exc:
        await engine.pin(res.root)
    assert exc.value.cid == leaf
    assert [p async for p in engine.pins()] == []
    await engine.pin(res.root, recursive=False)  # the root block itself is there
    assert [(p.cid, p.type) async for p in engine.pins()] == [(res.root, "direct")]


@pytest.mark.parametrize("pre_existing", [False, True])
async def test_gc_waits_for_an_add_in_progress(engine, pre_existing):
    """A gc that starts while an add streams waits for the add's pin, then keeps all of
    it (also when the add deduplicates against unpinned blocks the gc would take)."""
    data = data_of(6 * 1024 * 1024, 5)
    if pre_existing:
        await add_bytes(engine, data, pin=False)

    async def slow():
        async for piece in pieces(data, 262144, delay=0.01):
            yield piece

    async def gen():
        yield AddEntry("big", slow())

    add_task = asyncio.create_task(engine.add(gen(), AddOptions()))
    await asyncio.sleep(0.05)
    gc_task = asyncio.create_task(engine.gc())
    await asyncio.sleep(0.1)
    assert not gc_task.done() and not add_task.done()  # the gc waits for the write
    res = await add_task
    assert await gc_task == 0
    assert await cat_all(engine, res.root) == data
    assert await asyncio.wait_for(engine.gc(), 5) == 0  # no write holds the store lock any more


async def test_gc_in_another_process_waits_for_an_add_here(engine):
    """The lock is across processes: a `gc` run by another process on the same data dir
    (a second worker, the CLI) waits for this process's add."""
    data = data_of(4 * 1024 * 1024, 6)

    async def slow():
        async for piece in pieces(data, 262144, delay=0.03):
            yield piece

    async def gen():
        yield AddEntry("big", slow())

    add_task = asyncio.create_task(engine.add(gen(), AddOptions()))
    await asyncio.sleep(0.05)
    script = ("import asyncio, sys; from storage.embedded import EmbeddedEngine\n"
              "async def main():\n"
              "    e = EmbeddedEngine(sys.argv[1]); print(await e.gc()); await e.close()\n"
              "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(engine.data_dir),
                                                cwd=str(Path(__file__).resolve().parents[1]),
                                                stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.3)
    assert proc.returncode is None and not add_task.done()
    res = await add_task
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert int(out) == 0
    assert await cat_all(engine, res.root) == data


async def test_gc_removes_unpinned_add_after_it_ends(engine):
    res = await add_bytes(engine, data_of(600_000, 8), pin=False)
    assert await engine.has_block(res.root)
    assert await engine.gc() == 4
    assert block_files(engine) == set()


async def test_ready_and_network_stubs(engine, tmp_path):
    await engine.check_ready()
    assert await engine.addresses() == []
    await engine.connect("/ip4/127.0.0.1/tcp/4001/p2p/x")
    # data persists across instances (pins in sqlite, blocks on disk)
    res = await add_bytes(engine, b"persist")
    await engine.close()
    again = EmbeddedEngine(tmp_path / "node")
    await again.start()
    assert [p.cid async for p in again.pins()] == [res.root]
    assert await cat_all(again, res.root) == b"persist"
    await again.close()


async def test_blockstore_io_is_off_the_loop(engine, monkeypatch):
    """Every write and every read of a block bigger than serving.SMALL_READ (add/cat/
    get/gc) runs in a worker thread. Small blocks may be read on the loop: a page-cache
    read of a few KiB costs less than the hop (measured: cold small-file requests
    ~30% faster, ~30% less CPU each)."""
    import builtins
    import threading

    from storage.embedded import serving

    loop_thread = threading.get_ident()
    root = str(engine.data_dir)
    touched = []
    real_os_open, real_open = os.open, builtins.open

    def size(path) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return -1

    def spy_os_open(path, flags, *a, **k):
        if str(path).startswith(root):
            touched.append((threading.get_ident(), "w" if flags & (os.O_WRONLY | os.O_RDWR) else "r", size(path)))
        return real_os_open(path, flags, *a, **k)

    def spy_open(path, *a, **k):
        if str(path).startswith(root):
            mode = a[0] if a else k.get("mode", "r")
            touched.append((threading.get_ident(), "r" if set(mode) <= set("rb") else "w", size(path)))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(builtins, "open", spy_open)
    res = await add_bytes(engine, data_of(1_000_000, 4), cid_version=0)
    assert await cat_all(engine, res.root) == data_of(1_000_000, 4)
    await engine.gc()
    assert len(touched) > 8
    on_loop = [(mode, n) for thread, mode, n in touched if thread == loop_thread]
    assert all(mode == "r" and 0 <= n <= serving.SMALL_READ for mode, n in on_loop), on_loop
    assert any(thread != loop_thread and n > serving.SMALL_READ for thread, _, n in touched)  # the leaves


async def test_non_canonical_dag_pb_is_refused(engine, tmp_path):
    from storage import dagpb

    child = await engine.put_block(b"child")
    link = dagpb.encode_node(dagpb.PBNode(links=[dagpb.PBLink(child, "x", 5)]))
    data = dagpb.encode_node(dagpb.PBNode(data=b"\x08\x01"))
    good = await engine.put_block(link + data, codec=DAG_PB)
    assert (await engine.stat(good)).kind == "directory"
    bad = data + link  # Data before Links
    with pytest.raises(InvalidContent):
        await engine.put_block(bad, codec=DAG_PB)
    bad_cid = CID.from_digest(bad, DAG_PB)
    with pytest.raises(InvalidContent):
        await engine.import_car(reader_of(encode_header([bad_cid]) + encode_block(bad_cid, bad)))
