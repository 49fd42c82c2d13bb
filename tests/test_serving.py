"""Serving speed without losing integrity: `[storage] verify_on_read` both ways,
the background scrubber, zero-copy (sendfile) file serving on the embedded
engine, and multi-range requests (multipart/byteranges) on both engines."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re

import aiohttp
import pytest

from gateway import app as app_module
from gateway.app import create_app
from gateway.config import ConfigError
from gateway.ipfs import byteranges, unixfs_file
from gateway.keys import SCRUBBER, STORE
from storage import dagpb, unixfs
from storage.cid import CID, RAW
from storage.embedded import CorruptBlock, EmbeddedEngine
from storage.embedded import serving
from storage.embedded.blockstore import Blockstore
from storage.embedded.scrubber import Scrubber
from storage.engine import AddEntry, AddOptions, BlockNotFound
from tests.conftest import make_config
from tests.gateway_helpers import upload, upload_tree

pytestmark = pytest.mark.timeout(180)

CHUNK = 262144


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


BIG = data_of(5 * CHUNK + 12345, seed=7)  # six leaves, the last one short


async def add_bytes(engine, data: bytes, **opts):
    async def chunks():
        for i in range(0, len(data), 100_003):
            yield data[i : i + 100_003]

    async def gen():
        yield AddEntry("f.bin", chunks())

    return await engine.add(gen(), AddOptions(**opts))


def corrupt_file(path, at: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture
def sendfile_calls(monkeypatch):
    """The byte counts of the sendfile calls made (os.sendfile, which loop.sendfile uses
    too): the gateway sends a segment in one call, or several if the socket fills up."""
    calls = []
    original = os.sendfile

    def spy(out_fd, in_fd, offset, count, *args, **kw):
        n = original(out_fd, in_fd, offset, count, *args, **kw)
        calls.append(n)
        return n

    monkeypatch.setattr(os, "sendfile", spy)
    return calls


# --- verify_on_read -----------------------------------------------------------------

def test_verify_on_read_config():
    from gateway.config import load_config

    assert load_config(None, env={})["storage"]["verify_on_read"] == "never"
    assert load_config(None, env={"HEARTH_STORAGE_VERIFY_ON_READ": "always"})["storage"]["verify_on_read"] == "always"
    with pytest.raises(ConfigError, match="verify_on_read"):
        load_config(None, env={"HEARTH_STORAGE_VERIFY_ON_READ": "sometimes"})
    with pytest.raises(ValueError):
        EmbeddedEngine("/tmp/unused-hearth-engine", verify_on_read="sometimes")


@pytest.mark.parametrize("mode", ["always", "never"])
async def test_engine_reads_verify_or_not(tmp_path, mode):
    engine = EmbeddedEngine(tmp_path / "node", verify_on_read=mode)
    await engine.start()
    try:
        small = await engine.put_block(b"a small block")  # read on the event loop
        res = await add_bytes(engine, data_of(300_000), cid_version=1)
        big = (await engine.stat(res.root)).pb.links[0].cid  # a 256 KiB leaf: read in a thread
        for cid in (small, big):
            path = engine.store.path_for(cid.multihash)
            corrupt_file(path, at=3)
            if mode == "always":
                with pytest.raises(CorruptBlock):
                    await engine.get_block(cid)
                assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
                with pytest.raises(BlockNotFound):
                    await engine.get_block(cid)
            else:
                data = await engine.get_block(cid)  # not re-hashed: the damaged bytes, as stored
                assert data == path.read_bytes() and not cid.verify(data)
    finally:
        await engine.close()


async def test_make_engine_passes_verify_on_read(tmp_path):
    from gateway.metrics import Metrics

    for mode in ("never", "always"):
        config = make_config(tmp_path / mode, storage__verify_on_read=mode)
        engine = app_module.make_engine(config, Metrics())
        assert engine.verify_reads is (mode == "always")
        assert (engine.file_segments(unixfs.Node(CID.from_digest(b"x"), b"x", "file", 1), 0, 1) is None) is (mode == "always")
        await engine.close()


async def test_always_keeps_the_verified_path_in_the_gateway(node_factory, sendfile_calls):
    node = await node_factory("embedded", storage__verify_on_read="always")
    rec = await upload(node, BIG, "big.bin")
    resp = await node.get(f"/ipfs/{rec['cid']}")
    assert resp.status == 200 and await resp.read() == BIG
    assert sendfile_calls == []  # streamed through the engine's verified cat()
    engine = node.app[app_module.ENGINE]
    first = (await engine.stat(CID.parse(rec["cid"]))).pb.links[0].cid
    corrupt_file(engine.store.path_for(first.multihash))
    node.app[app_module.CACHE].clear()
    resp = await node.get(f"/ipfs/{rec['cid']}")
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "storage_error"


async def test_repo_verify_still_hashes_everything(node_factory):
    """verify_content hashes every block it reads, whatever the engine does (here the
    node's default, never: the engine itself hands out the damaged bytes)."""
    from storage.verify import verify_content

    node = await node_factory("embedded")
    engine = node.app[app_module.ENGINE]
    damaged = []
    for cid_version in (0, 1):
        rec = await upload(node, data_of(3 * CHUNK, seed=cid_version), f"f{cid_version}.bin", cid_version=cid_version)
        leaf = (await engine.stat(CID.parse(rec["cid"]))).pb.links[1].cid
        corrupt_file(engine.store.path_for(leaf.multihash))
        assert not leaf.verify(await engine.get_block(leaf))  # not re-hashed on read
        damaged.append((rec["cid"], str(leaf)))
    report = await verify_content(node.app[STORE], engine)
    assert sorted(report.corrupt) == sorted(damaged) and not report.ok


async def test_repo_verify_cli_finds_corrupt_block_with_never(node_factory, tmp_path):
    """`hearth repo verify` on a node configured with verify_on_read = never."""
    import subprocess
    import sys

    node = await node_factory("embedded")
    rec = await upload(node, BIG, "big.bin", cid_version=0)
    engine = node.app[app_module.ENGINE]
    leaf = (await engine.stat(CID.parse(rec["cid"]))).pb.links[2].cid
    path = engine.store.path_for(leaf.multihash)
    corrupt_file(path)
    data_dir = node.config.data_dir
    env = dict(os.environ, HEARTH_STORAGE_VERIFY_ON_READ="never")
    out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "gateway.cli", "repo", "verify", "--data-dir",
                                                   str(data_dir)], env=env, capture_output=True, text=True,
                                  cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 corrupt" in out.stdout and str(leaf) in out.stdout
    assert not path.exists()  # moved aside, as before verify_on_read existed


# --- the scrubber --------------------------------------------------------------------

async def _wait(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def _store_with_blocks(root, n: int) -> tuple[Blockstore, list[bytes]]:
    store = Blockstore(root)
    mhs = []
    for i in range(n):
        data = data_of(1000 + i, seed=i)
        cid = CID.from_digest(data)
        store.put(cid.multihash, data)
        mhs.append(cid.multihash)
    return store, mhs


async def test_scrubber_finds_quarantines_and_reports(tmp_path, caplog):
    store, mhs = _store_with_blocks(tmp_path / "blocks", 50)
    bad = store.path_for(mhs[17])
    corrupt_file(bad)
    found = []
    scrubber = Scrubber(store, tmp_path / "scrub.json", 50 * 1024**2, on_corrupt=found.append, pass_pause=0.05)
    await scrubber.start()
    try:
        await _wait(lambda: scrubber.passes >= 1)
    finally:
        await scrubber.stop()
    assert scrubber.corrupt_total == 1 and len(found) == 1
    assert not bad.exists() and bad.with_name(bad.name + ".corrupt").exists()
    status = scrubber.status()
    assert status["corrupt_blocks"] == 1 and status["checked_blocks"] >= 49
    item = status["corrupt"][0]
    assert item["cid"] == str(CID(1, RAW, mhs[17])) and CID.parse(item["multihash"]).multihash == mhs[17]
    assert any(r.levelno == logging.ERROR and item["cid"] in r.getMessage() for r in caplog.records)
    assert store.usage()[0] == 49  # quarantined blocks no longer count


async def test_scrubber_rate_and_resume(tmp_path):
    store, mhs = _store_with_blocks(tmp_path / "blocks", 40)
    order = sorted(p.name[:-5] for p in (tmp_path / "blocks").rglob("*.data"))
    order.sort(key=lambda k: (k[-3:-1], k))
    state = tmp_path / "scrub.json"
    # a rate so low that one batch is about one block: stop it early
    scrubber = Scrubber(store, state, 8000, pass_pause=0.05)
    await scrubber.start()
    await _wait(lambda: scrubber.checked_blocks >= 3)
    await scrubber.stop()
    checked = scrubber.checked_blocks
    assert checked < 40  # the rate holds it back
    saved = json.loads(state.read_text())
    assert saved["position"] == order[checked - 1]
    # a new scrubber (a restart) carries on after the saved position
    again = Scrubber(store, state, 10**9, pass_pause=10)
    seen = []
    while True:
        item = again._walk.next()
        if item is None:
            break
        seen.append(item[0])
    assert seen == order[checked:]
    assert again._walk.next()[0] == order[0]  # and the next pass starts over


def test_scrub_walk_resumes_anywhere(tmp_path):
    """The walk's order is stable, and resuming after any block gives exactly the rest
    (blocks spread over many shard directories)."""
    from storage.embedded.scrubber import _Walk

    store, _ = _store_with_blocks(tmp_path / "blocks", 400)
    walk, order = _Walk(store.root, None), []
    while (item := walk.next()) is not None:
        order.append(item[0])
    assert len(order) == len(set(order)) == 400
    assert len({k[-3:-1] for k in order}) > 100
    for cut in range(0, 400, 7):
        walk, rest = _Walk(store.root, order[cut]), []
        while (item := walk.next()) is not None:
            rest.append(item[0])
        assert rest == order[cut + 1:], cut


async def test_scrubber_off(tmp_path):
    store, _ = _store_with_blocks(tmp_path / "blocks", 2)
    off = Scrubber(store, tmp_path / "scrub.json", 0)
    await off.start()
    assert off._task is None and off.status()["state"] == "off"
    await off.stop()


async def test_scrubber_in_the_node(node_factory):
    """A block corrupted on disk is found within a second or two at a high rate, moved
    aside, reported on /readyz, /metrics and the operator API, and the gateway answers
    for that content with an error, never with the damaged bytes."""
    node = await node_factory("embedded", storage__scrub_rate=512 * 1024**2)
    small = await upload(node, b"scrub me, please\n" * 10, "s.txt")
    big = await upload(node, BIG, "big.bin", cid_version=0)
    # both served once: the small one now sits in the response cache
    assert await (await node.get(f"/ipfs/{small['cid']}")).read() == b"scrub me, please\n" * 10
    assert await (await node.get(f"/ipfs/{big['cid']}")).read() == BIG
    engine = node.app[app_module.ENGINE]
    small_path = engine.store.path_for(CID.parse(small["cid"]).multihash)
    leaf = (await engine.stat(CID.parse(big["cid"]))).pb.links[3].cid
    leaf_path = engine.store.path_for(leaf.multihash)
    corrupt_file(small_path, at=2)
    corrupt_file(leaf_path, at=5000)
    scrubber = node.app[SCRUBBER]
    started = asyncio.get_running_loop().time()
    await _wait(lambda: scrubber.corrupt_total >= 2, timeout=10)
    assert asyncio.get_running_loop().time() - started < 5  # within a second or two (slack for a busy machine)
    assert not small_path.exists() and not leaf_path.exists()

    ready = await (await node.get("/readyz")).json()
    scrub = ready["details"]["scrub"]
    assert scrub["state"] == "running" and scrub["corrupt_blocks"] == 2
    listed = {item["multihash"] for item in scrub["corrupt"]}
    assert listed == {CID(0, 0x70, CID.parse(small["cid"]).multihash).encode(), CID(0, 0x70, leaf.multihash).encode()}
    text = await (await node.get("/metrics")).text()
    assert "hearth_scrub_corrupt_blocks_total 2" in text
    assert re.search(r"^hearth_scrub_checked_blocks_total [1-9]", text, re.M)
    repo = await (await node.get("/api/v1/operator/repo", headers={"Authorization": f"Bearer {_operator_key(node)}"})).json()
    assert repo["scrub"]["corrupt_blocks"] == 2

    resp = await node.get(f"/ipfs/{small['cid']}")  # not from the cache any more
    assert resp.status == 404
    resp = await node.get(f"/ipfs/{big['cid']}")
    assert resp.status == 200  # committed with the first leaf: the missing one cuts the body short
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    resp = await node.get(f"/ipfs/{big['cid']}", headers={"Range": f"bytes={3 * CHUNK}-{3 * CHUNK + 99}"})
    assert resp.status == 404  # the first piece is the quarantined leaf: a proper error
    # uploading the content again heals it
    await upload(node, BIG, "big.bin", cid_version=0)
    assert await (await node.get(f"/ipfs/{big['cid']}")).read() == BIG


def _operator_key(node) -> str:
    from gateway.keys import OPERATOR_KEY

    return node.app[OPERATOR_KEY]


# --- zero-copy serving ---------------------------------------------------------------

RANGES = [
    (0, CHUNK),                       # exactly the first leaf
    (CHUNK - 1, CHUNK + 1),           # across a leaf boundary
    (CHUNK, 2 * CHUNK),               # exactly the second leaf
    (1000, 1100),                     # inside a leaf
    (3 * CHUNK + 17, 5 * CHUNK + 5),  # several leaves, partial at both ends, into the short last leaf
    (len(BIG) - 1, len(BIG)),         # the last byte
    (0, len(BIG)),                    # all of it, as a range
]


@pytest.mark.parametrize("cid_version", [0, 1])
async def test_sendfile_whole_and_ranges(node_factory, sendfile_calls, cid_version):
    node = await node_factory("embedded")
    rec = await upload(node, BIG, "big.bin", cid_version=cid_version)
    assert rec["cid"].startswith("Qm" if cid_version == 0 else "bafy")
    resp = await node.get(f"/ipfs/{rec['cid']}")
    assert resp.status == 200 and await resp.read() == BIG
    assert resp.headers["Content-Length"] == str(len(BIG))
    assert len(sendfile_calls) >= 6 and sum(sendfile_calls) == len(BIG)  # every byte of the six leaves, no copy
    for start, end in RANGES:
        sendfile_calls.clear()
        resp = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": f"bytes={start}-{end - 1}"})
        assert resp.status == 206
        assert await resp.read() == BIG[start:end], (start, end)
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(BIG)}"
        assert sum(sendfile_calls) == end - start
    # suffix range
    resp = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=-300000"})
    assert resp.status == 206 and await resp.read() == BIG[-300000:]
    head = await node.head(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=5-9"})
    assert head.status == 206 and head.headers["Content-Length"] == "5" and await head.read() == b""


async def test_sendfile_matches_the_stream_path_and_kubo_engine(node_factory, monkeypatch):
    """The same bytes and headers from sendfile (direct, and through loop.sendfile),
    from the copy fallback, from the verified stream path, and from the Kubo engine."""
    emb = await node_factory("embedded")
    always = await node_factory("embedded", storage__verify_on_read="always")
    kubo = await node_factory("kubo")
    files = {"d/big.bin": BIG, "d/page.html": b"<!doctype html><p>hi</p>" + data_of(600_000, 3)}
    answers = []
    original_init = unixfs_file._Body.__init__

    def no_direct(self, *args):  # as on a transport without a plain socket: loop.sendfile
        original_init(self, *args)
        self.close()

    for which, client in (("sendfile", emb), ("always", always), ("kubo", kubo), ("loop", emb), ("copy", emb)):
        if which == "loop":
            monkeypatch.setattr(unixfs_file._Body, "__init__", no_direct)
        if which == "copy":
            monkeypatch.setattr(unixfs_file, "SENDFILE", False)
        got = []
        for cid_version in (0, 1):
            root = (await upload_tree(client, files, cid_version=cid_version))["cid"]
            for path in ("d/big.bin", "d/page.html"):
                for headers in ({}, {"Range": "bytes=262100-262200"}, {"Range": "bytes=10-20,300000-300010"}):
                    r = await client.get(f"/ipfs/{root}/{path}", headers=headers)
                    got.append((r.status, {k: v for k, v in r.headers.items() if k not in ("Date", "Server")},
                                await r.read()))
        answers.append(got)
    assert answers[0] == answers[1] == answers[2] == answers[3] == answers[4]


async def test_empty_and_single_block_files(node_factory, sendfile_calls):
    node = await node_factory("embedded")
    for cid_version in (0, 1):
        for data in (b"", data_of(CHUNK, 1), data_of(CHUNK + 1, 2)):
            rec = await upload(node, data, "f.bin", cid_version=cid_version)
            resp = await node.get(f"/ipfs/{rec['cid']}")
            assert resp.status == 200 and await resp.read() == data, (cid_version, len(data))
            assert resp.headers["Content-Length"] == str(len(data))
            if data:
                resp = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": f"bytes={len(data) - 3}-"})
                assert resp.status == 206 and await resp.read() == data[-3:]
            else:
                resp = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": "bytes=0-"})
                assert resp.status == 416 and resp.headers["Content-Range"] == "bytes */0"


async def test_two_level_file(node_factory, sendfile_calls):
    """More than 174 leaves: intermediate nodes are read, leaves sent."""
    data = data_of(175 * CHUNK + 99, 5)
    node = await node_factory("embedded")
    rec = await upload(node, data, "two.bin", cid_version=0)
    resp = await node.get(f"/ipfs/{rec['cid']}")
    assert await resp.read() == data
    assert len(sendfile_calls) >= 176 and sum(sendfile_calls) == len(data)
    start, end = 173 * CHUNK + 5, 175 * CHUNK + 50  # across the first intermediate node's end
    resp = await node.get(f"/ipfs/{rec['cid']}", headers={"Range": f"bytes={start}-{end - 1}"})
    assert resp.status == 206 and await resp.read() == data[start:end]


@pytest.fixture
async def hamt_node(aiohttp_client, tmp_path):
    config = make_config(tmp_path)
    engine = EmbeddedEngine(config.data_dir, hamt_threshold=1024, verify_on_read="never")
    app = create_app(config, engine=engine)
    client = await aiohttp_client(app)
    store = app[STORE]
    client.auth = {"Authorization": f"Bearer {await store.run(store.create_token, 'tester')}"}
    return client


async def test_hamt_directory_unaffected(hamt_node, sendfile_calls):
    files = {f"dir/file-{i:03d}.txt": f"file {i}\n".encode() for i in range(60)} | {"dir/big.bin": BIG}
    root = (await upload_tree(hamt_node, files))["cid"]
    engine = hamt_node.app[app_module.ENGINE]
    dir_cid = [l.cid for l in (await engine.stat(CID.parse(root))).pb.links if l.name == "dir"][0]
    assert (await engine.stat(dir_cid)).kind == "hamt"
    listing = await hamt_node.get(f"/ipfs/{root}/dir/")
    assert listing.status == 200 and "file-042.txt" in await listing.text()
    assert await (await hamt_node.get(f"/ipfs/{root}/dir/file-042.txt")).read() == b"file 42\n"
    assert await (await hamt_node.get(f"/ipfs/{root}/dir/big.bin")).read() == BIG
    assert sum(sendfile_calls) == len(BIG)


async def test_unusual_leaf_layout_falls_back(tmp_path):
    """A leaf whose envelope is not the plain one is read whole, checked, and sliced."""
    engine = EmbeddedEngine(tmp_path / "node", verify_on_read="never")
    try:
        # a dag-pb leaf with Data before Type (valid UnixFS, unusual field order)
        payload = data_of(5000, 9)
        odd = dagpb._bytes_field(2, payload) + b"\x08\x02" + b"\x18" + dagpb.encode_varint(len(payload))
        leaf_block = dagpb.encode_node(dagpb.PBNode(data=odd))
        leaf = await engine.put_block(leaf_block, codec=0x70)
        plain = await engine.put_block(dagpb.file_leaf_node(b"plain bytes"), codec=0x70)
        root_fs = dagpb.UnixFSData(dagpb.FILE, filesize=len(payload) + 11, blocksizes=[len(payload), 11])
        root_block = dagpb.encode_node(dagpb.PBNode(links=[dagpb.PBLink(leaf, "", len(leaf_block)),
                                                           dagpb.PBLink(plain, "", 50)],
                                                    data=dagpb.encode_unixfs(root_fs)))
        root = await engine.put_block(root_block, codec=0x70)
        node = await engine.stat(root)
        pieces = []
        async for seg in engine.file_segments(node, 0, node.size):
            pieces.append(seg.data if seg.data is not None else os.pread(seg.file.fileno(), seg.length, seg.offset))
            kinds = "data" if seg.data is not None else "file"
            pieces[-1] = (kinds, pieces[-1])
        assert [k for k, _ in pieces] == ["data", "file"]
        assert b"".join(p for _, p in pieces) == payload + b"plain bytes"
        # the odd leaf, damaged: its verified read catches it
        corrupt_file(engine.store.path_for(leaf.multihash), at=len(leaf_block) - 3)
        with pytest.raises(CorruptBlock):
            async for _ in engine.file_segments(node, 0, node.size):
                pass
    finally:
        await engine.close()


async def test_torn_leaf_is_caught_by_its_size(tmp_path):
    """A raw leaf cut short on disk (a torn write) is not sent short: its size gives it
    away, the hash check confirms it, it is moved aside."""
    engine = EmbeddedEngine(tmp_path / "node", verify_on_read="never")
    try:
        res = await add_bytes(engine, BIG, cid_version=1)
        node = await engine.stat(res.root)
        leaf = node.pb.links[2].cid
        path = engine.store.path_for(leaf.multihash)
        path.write_bytes(path.read_bytes()[:1000])
        with pytest.raises(CorruptBlock):
            async for _ in engine.file_segments(node, 0, node.size):
                pass
        assert not path.exists()
    finally:
        await engine.close()


async def test_damaged_intermediate_node_is_caught(tmp_path):
    """An intermediate node that no longer decodes is checked against its hash:
    CorruptBlock (moved aside), not "invalid content"."""
    engine = EmbeddedEngine(tmp_path / "node", verify_on_read="never")
    try:
        a, b = data_of(1000, 1), data_of(500, 2)
        la, lb = await engine.put_block(a), await engine.put_block(b)
        mid_fs = dagpb.UnixFSData(dagpb.FILE, filesize=1500, blocksizes=[1000, 500])
        mid_block = dagpb.encode_node(dagpb.PBNode(links=[dagpb.PBLink(la, "", 1000), dagpb.PBLink(lb, "", 500)],
                                                   data=dagpb.encode_unixfs(mid_fs)))
        mid = await engine.put_block(mid_block, codec=0x70)
        tail = await engine.put_block(b"tail")
        root_fs = dagpb.UnixFSData(dagpb.FILE, filesize=1504, blocksizes=[1500, 4])
        root = await engine.put_block(dagpb.encode_node(dagpb.PBNode(
            links=[dagpb.PBLink(mid, "", len(mid_block)), dagpb.PBLink(tail, "", 4)],
            data=dagpb.encode_unixfs(root_fs))), codec=0x70)
        node = await engine.stat(root)
        got = b""
        async for seg in engine.file_segments(node, 0, node.size):
            got += seg.data if seg.data is not None else os.pread(seg.file.fileno(), seg.length, seg.offset)
        assert got == a + b + b"tail"
        path = engine.store.path_for(mid.multihash)
        path.write_bytes(mid_block[:40])  # torn
        with pytest.raises(CorruptBlock):
            async for _ in engine.file_segments(node, 0, node.size):
                pass
        assert not path.exists()
    finally:
        await engine.close()


def test_leaf_span():
    block = dagpb.file_leaf_node(b"x" * CHUNK)
    off, n = serving.leaf_span(block[: serving.HEAD_READ], len(block))
    assert n == CHUNK and block[off : off + n] == b"x" * CHUNK
    assert serving.leaf_span(block[:64], len(block) + 1) is None  # trailing bytes
    assert serving.leaf_span(block[:3], len(block)) is None  # truncated head
    assert serving.leaf_span(b"\x12\x03abc", 5) is None  # links first
    assert serving.leaf_span(b"", 0) is None
    sym = dagpb.encode_node(dagpb.PBNode(data=dagpb.encode_unixfs(dagpb.UnixFSData(dagpb.SYMLINK, b"target"))))
    assert serving.leaf_span(sym, len(sym)) is None


async def test_disconnect_mid_sendfile_is_quiet(node_factory, caplog):
    from tests.test_quiet_logs import assert_quiet, requests_seen, wait_for

    node = await node_factory("embedded")
    rec = await upload(node, data_of(24 * 1024 * 1024, 4), "big.bin", cid_version=0)
    caplog.set_level(logging.DEBUG)
    for cancel in (False, True):
        node.server.runner.server.handler_cancellation = cancel
        before = requests_seen(node, "/ipfs/{cid}", "GET")
        reader, writer = await asyncio.open_connection(node.server.host, node.server.port)
        writer.write(f"GET /ipfs/{rec['cid']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        got = await reader.read(65536)
        assert b"200 OK" in got
        writer.transport.abort()
        await wait_for(lambda: requests_seen(node, "/ipfs/{cid}", "GET") > before)
        await asyncio.sleep(0.1)
    assert_quiet(caplog)
    # and the node still serves
    assert (await node.get("/healthz")).status == 200


async def test_small_blocks_read_on_the_loop(tmp_path, monkeypatch):
    engine = EmbeddedEngine(tmp_path / "node", verify_on_read="never")
    hops = []
    real = asyncio.to_thread

    async def counting(fn, *a, **kw):
        hops.append(getattr(fn, "__name__", fn))
        return await real(fn, *a, **kw)

    try:
        small = await engine.put_block(b"s" * 4096)
        res = await add_bytes(engine, data_of(300_000), cid_version=1)
        leaf = (await engine.stat(res.root)).pb.links[0].cid
        monkeypatch.setattr(asyncio, "to_thread", counting)
        assert await engine.get_block(small) == b"s" * 4096
        assert hops == []
        await engine.get_block(leaf)
        assert hops == ["get"]
    finally:
        monkeypatch.undo()
        await engine.close()


# --- multi-range ----------------------------------------------------------------------

def parse_multipart(content_type: str, body: bytes) -> list[tuple[dict, bytes]]:
    m = re.fullmatch(r"multipart/byteranges; boundary=(\S+)", content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    assert body.startswith(delim + b"\r\n") and body.endswith(b"\r\n" + delim + b"--\r\n")
    parts = []
    for chunk in body[len(delim) + 2 : -(len(delim) + 6)].split(b"\r\n" + delim + b"\r\n"):
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        parts.append((headers, data))
    return parts


def multi_cases(n: int) -> list:
    """(Range header, expected): a list of (start, end) parts, None for the whole body
    (200), or "416"."""
    cases = [
        ("bytes=0-9,20-29", [(0, 10), (20, 30)]),
        (f"bytes={n - 20}-{n - 10},-5", [(n - 20, n - 9), (n - 5, n)]),
        ("bytes=100-199,0-9", [(100, 200), (0, 10)]),  # in the order asked
        ("bytes=0-9, 5-14", [(0, 10), (5, 15)]),  # overlapping, still less than the file
        ("bytes=0-,5-9", None),  # more bytes than the file: the whole file, 200
        (f"bytes={n + 5}-,5-9", [(5, 10)]),  # one left: a plain single-range 206
        (f"bytes={n}-,{n + 100}-", "416"),
        ("bytes=0-9,x", None),  # malformed: ignored, 200
        ("bytes=0-9,,20-29", [(0, 10), (20, 30)]),  # empty elements skipped
    ]
    if n > 4 * CHUNK:  # across leaf boundaries
        cases.append((f"bytes={CHUNK - 4}-{CHUNK + 5},{3 * CHUNK}-{3 * CHUNK},-{n - 4 * CHUNK + 1}",
                      [(CHUNK - 4, CHUNK + 6), (3 * CHUNK, 3 * CHUNK + 1), (4 * CHUNK - 1, n)]))
    return cases


@pytest.fixture(params=["kubo", "embedded"])
async def gw(request, node_factory):
    client = await node_factory(request.param)
    client.engine_name = request.param
    return client


@pytest.mark.parametrize("small", [False, True], ids=["multi-block", "inline"])
async def test_multi_range(gw, small):
    data = BIG if not small else data_of(600, 1)
    rec = await upload(gw, data, "f.txt")
    ctype = (await gw.head(f"/ipfs/{rec['cid']}")).headers["Content-Type"]  # sniffed: no name in the path
    for value, want in multi_cases(len(data)):
        for method in ("HEAD", "GET"):
            resp = await gw.request(method, f"/ipfs/{rec['cid']}", headers={"Range": value})
            body = await resp.read()
            if want == "416":
                assert resp.status == 416 and resp.headers["Content-Range"] == f"bytes */{len(data)}"
                continue
            if want is None:
                assert resp.status == 200, value
                assert resp.headers["Content-Length"] == str(len(data))
                assert body == (data if method == "GET" else b"")
                continue
            assert resp.status == 206, (value, resp.status)
            if len(want) == 1:
                (s, e), = want
                assert resp.headers["Content-Range"] == f"bytes {s}-{e - 1}/{len(data)}"
                assert body == (data[s:e] if method == "GET" else b"")
                continue
            assert "Content-Range" not in resp.headers
            assert resp.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
            if method == "HEAD":
                assert body == b""
                head_length = resp.headers["Content-Length"]
                continue
            assert resp.headers["Content-Length"] == str(len(body)) == head_length
            parts = parse_multipart(resp.headers["Content-Type"], body)
            assert [(h["Content-Range"], d) for h, d in parts] == [
                (f"bytes {s}-{e - 1}/{len(data)}", data[s:e]) for s, e in want]
            assert all(h["Content-Type"] == ctype for h, _ in parts)
            assert list(parts[0][0]) == ["Content-Range", "Content-Type"]


async def test_multi_range_same_on_both_engines_and_like_kubo(node_factory, kubo):
    """Byte-identical multi-range answers from both engines; each part carries what
    Kubo's own gateway answers for that range alone (Kubo itself answers several
    ranges with the first one only, which the conformance suite also accepts)."""
    k = await node_factory("kubo")
    e = await node_factory("embedded")
    ranges = "bytes=100-199,262100-262300,-77"
    for cid_version in (0, 1):
        a = await upload(k, BIG, "big.bin", cid_version=cid_version)
        b = await upload(e, BIG, "big.bin", cid_version=cid_version)
        assert a["cid"] == b["cid"]
        r1 = await k.get(f"/ipfs/{a['cid']}", headers={"Range": ranges})
        r2 = await e.get(f"/ipfs/{a['cid']}", headers={"Range": ranges})
        b1, b2 = await r1.read(), await r2.read()
        assert r1.status == r2.status == 206 and b1 == b2
        h1 = {k_: v for k_, v in r1.headers.items() if k_ not in ("Date", "Server")}
        h2 = {k_: v for k_, v in r2.headers.items() if k_ not in ("Date", "Server")}
        assert h1 == h2
        parts = parse_multipart(r1.headers["Content-Type"], b1)
        async with aiohttp.ClientSession() as session:
            for spec, (headers, data) in zip(ranges[len("bytes="):].split(","), parts):
                async with session.get(f"{kubo.gateway_url}/ipfs/{a['cid']}", headers={"Range": f"bytes={spec}"}) as t:
                    assert t.status == 206
                    assert headers["Content-Range"] == t.headers["Content-Range"]
                    assert headers["Content-Type"] == t.headers["Content-Type"]
                    assert data == await t.read()
            # Kubo's own answer to the multi-range request: the first range only
            async with session.get(f"{kubo.gateway_url}/ipfs/{a['cid']}", headers={"Range": ranges}) as t:
                assert t.status == 206 and await t.read() == parts[0][1]


def test_plan_shapes():
    p = byteranges.plan(None, 10, "text/plain", '"x"')
    assert p.whole and p.headers == {"Content-Length": "10"}
    p = byteranges.plan("bytes=0-3,6-", 10, "text/plain", '"x"')
    body = byteranges.assemble(b"0123456789", p)
    assert int(p.headers["Content-Length"]) == len(body)
    assert parse_multipart(p.headers["Content-Type"], body) == [
        ({"Content-Range": "bytes 0-3/10", "Content-Type": "text/plain"}, b"0123"),
        ({"Content-Range": "bytes 6-9/10", "Content-Type": "text/plain"}, b"6789")]
    # deterministic, and different for another request
    assert byteranges.plan("bytes=0-3,6-", 10, "text/plain", '"x"').headers == p.headers
    assert byteranges.plan("bytes=0-3,5-", 10, "text/plain", '"x"').headers["Content-Type"] != p.headers["Content-Type"]
    with pytest.raises(Exception) as exc:
        byteranges.plan("bytes=10-,20-", 10, "text/plain", '"x"')
    assert exc.value.status == 416
