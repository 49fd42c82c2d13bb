"""POST/GET/DELETE /api/v1/content against a real Kubo: CIDs equal `ipfs add`."""
from __future__ import annotations

import os
import subprocess

import aiohttp
import pytest

from tests.gateway_helpers import upload, upload_tree


def only_hash(kubo, tmp_path, data: bytes, *flags) -> str:
    p = tmp_path / f"f{len(list(tmp_path.iterdir()))}"
    p.write_bytes(data)
    return kubo.add_only_hash(str(p), *flags)


@pytest.mark.parametrize("size", [0, 1, 262144, 262145, 1024 * 1024 + 7])
async def test_cid_matches_ipfs_add(node, kubo, tmp_path, size):
    data = os.urandom(size)
    v1 = await upload(node, data, "f.bin")
    assert v1["cid"] == only_hash(kubo, tmp_path, data, "--cid-version=1")
    assert v1["size"] == size and v1["pinned"] is True and v1["name"] == "f.bin"
    v0 = await upload(node, data, "f.bin", cid_version=0)
    assert v0["cid"] == only_hash(kubo, tmp_path, data)
    assert v0["cid"].startswith("Qm")


async def test_multipart_single_and_wrap(node, kubo, tmp_path):
    form = aiohttp.FormData()
    form.add_field("file", b"abc", filename="a.txt")
    resp = await node.post("/api/v1/content", data=form, headers=node.auth)
    body = await resp.json()
    assert resp.status == 201 and body["name"] == "a.txt"
    assert body["cid"] == only_hash(kubo, tmp_path, b"abc", "--cid-version=1")
    form = aiohttp.FormData()
    form.add_field("file", b"abc", filename="a.txt")
    resp = await node.post("/api/v1/content?wrap=true", data=form, headers=node.auth)
    wrapped = await resp.json()
    d = tmp_path / "w"
    d.mkdir()
    (d / "a.txt").write_bytes(b"abc")
    assert wrapped["cid"] == kubo.add_only_hash(str(d / "a.txt"), "--cid-version=1", "-w")


async def test_directory_tree_matches_ipfs_add_r(node, kubo, tmp_path):
    files = {"root/a.txt": b"a", "root/sub/b.txt": b"bb" * 1000, "root/sub/deeper/c.bin": os.urandom(300000),
             "root/z.txt": b"z"}
    rec = await upload_tree(node, files)
    d = tmp_path / "tree"
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    expected = kubo.add_only_hash(str(d / "root"), "-r", "--cid-version=1", "-w")
    assert rec["cid"] == expected


async def test_records_v0_v1_same_and_pagination(node):
    first = await upload(node, b"same bytes", "x", cid_version=0)
    from storage.cid import CID
    v1 = CID.parse(first["cid"]).v1().encode()
    resp = await node.get(f"/api/v1/content/{v1}", headers=node.auth)
    assert resp.status == 200 and (await resp.json())["cid"] == first["cid"]
    for i in range(5):
        await upload(node, f"item {i}".encode(), f"i{i}.txt")
    seen, cursor = [], None
    while True:
        url = "/api/v1/content?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await node.get(url, headers=node.auth)).json()
        seen += [r["name"] for r in page["results"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["i4.txt", "i3.txt", "i2.txt", "i1.txt", "i0.txt", "x"]


async def test_delete_unpins_and_keeps_record(node, kubo):
    rec = await upload(node, os.urandom(1000), "gone.bin")
    assert rec["cid"] in kubo.ipfs("pin", "ls", "--type=recursive")
    resp = await node.delete(f"/api/v1/content/{rec['cid']}", headers=node.auth)
    body = await resp.json()
    assert resp.status == 200 and body["pinned"] is False and "removed_at" in body
    assert rec["cid"] not in kubo.ipfs("pin", "ls", "--type=recursive")
    again = await (await node.get(f"/api/v1/content/{rec['cid']}", headers=node.auth)).json()
    assert again["pinned"] is False


async def test_auth_required(node):
    for method, url in [("POST", "/api/v1/content"), ("GET", "/api/v1/content"),
                        ("GET", "/api/v1/content/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
                        ("DELETE", "/api/v1/content/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            resp = await node.request(method, url, data=b"x", headers=headers)
            assert resp.status == 401, (method, url, headers)
            body = await resp.json()
            assert body["error"]["code"] == "unauthorized"
            assert "Bearer" in resp.headers["WWW-Authenticate"]


async def test_anonymous_uploads(node_factory):
    client = await node_factory("kubo", auth__anonymous_uploads=True)
    resp = await client.post("/api/v1/content?filename=a", data=b"anon")
    assert resp.status == 201


async def test_too_large_nothing_kept(node_factory, kubo):
    client = await node_factory("kubo", storage__max_upload_bytes=1000)
    data = os.urandom(5000)
    resp = await client.post("/api/v1/content?filename=big", data=data, headers=client.auth)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "too_large"

    async def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(5):
            yield os.urandom(1000)

    resp = await client.post("/api/v1/content?filename=big", data=chunks(), headers=client.auth)
    assert resp.status == 413
    page = await (await client.get("/api/v1/content", headers=client.auth)).json()
    assert page["results"] == []
    assert str(len(data)) not in kubo.ipfs("pin", "ls", "--type=recursive")


@pytest.mark.parametrize("query", ["cid_version=2", "cid_version=x", "wrap=maybe", "bogus=1", "raw_leaves=perhaps"])
async def test_bad_options(node, query):
    resp = await node.post(f"/api/v1/content?{query}", data=b"x", headers=node.auth)
    assert resp.status == 400
    assert "message" in (await resp.json())["error"]


async def test_bad_multipart(node):
    headers = dict(node.auth, **{"Content-Type": "multipart/form-data; boundary=XYZ"})
    resp = await node.post("/api/v1/content", data=b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc", headers=headers)
    assert resp.status == 400
    resp = await node.post("/api/v1/content", data=b"garbage without boundary", headers=headers)
    assert resp.status == 400
    form = aiohttp.FormData()
    form.add_field("other", b"abc", filename="a.txt")
    resp = await node.post("/api/v1/content", data=form, headers=node.auth)
    assert resp.status == 400
    form = aiohttp.FormData(quote_fields=False)  # the name as is: the node never percent-decodes it
    form.add_field("file", b"abc", filename="../escape.txt")
    resp = await node.post("/api/v1/content?wrap=true", data=form, headers=node.auth)
    assert resp.status == 400
    form = aiohttp.FormData()
    form.add_field("file", b"a", filename="a.txt")
    form.add_field("file", b"b", filename="b.txt")
    resp = await node.post("/api/v1/content", data=form, headers=node.auth)
    assert resp.status == 400 and "wrap" in (await resp.json())["error"]["message"]
    page = await (await node.get("/api/v1/content", headers=node.auth)).json()
    assert page["results"] == []


@pytest.mark.parametrize("url,status", [("/api/v1/content/nope", 400), ("/api/v1/content?limit=0", 400),
                                        ("/api/v1/content?limit=abc", 400), ("/api/v1/content?cursor=@@", 400),
                                        ("/api/v1/content/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", 404)])
async def test_bad_reads(node, url, status):
    resp = await node.get(url, headers=node.auth)
    assert resp.status == status
    resp = await node.delete("/api/v1/content/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", headers=node.auth)
    assert resp.status == 404


def _car_of(kubo, tmp_path, data: bytes) -> tuple[str, bytes]:
    p = tmp_path / "carsrc.bin"
    p.write_bytes(data)
    cid = kubo.ipfs("add", "-Q", "--pin=false", "--cid-version=1", str(p)).strip()
    out = subprocess.run([kubo.bin, "dag", "export", cid], env=kubo.env, capture_output=True, check=True).stdout
    return cid, out


async def test_car_upload(node, kubo, tmp_path):
    data = os.urandom(700_000)
    cid, car = _car_of(kubo, tmp_path, data)
    resp = await node.post("/api/v1/content", data=car, headers=dict(node.auth, **{"Content-Type": "application/vnd.ipld.car"}))
    body = await resp.json()
    assert resp.status == 201, body
    assert body["cid"] == cid and body["roots"] == [cid] and body["size"] == len(data)
    assert cid in kubo.ipfs("pin", "ls", "--type=recursive")
    got = await node.get(f"/ipfs/{cid}")
    assert await got.read() == data


async def test_bad_car_upload_keeps_nothing(node, kubo, tmp_path):
    from storage.car import encode_block, encode_header
    from storage.cid import CID, RAW
    headers = dict(node.auth, **{"Content-Type": "application/vnd.ipld.car"})
    data = os.urandom(10_000)
    good = CID.from_digest(data, RAW)
    corrupt = encode_header([good]) + encode_block(good, data[:-1] + bytes([data[-1] ^ 1]))
    truncated = encode_header([good]) + encode_block(good, data)[:-100]
    other = os.urandom(100)
    missing_root = encode_header([good]) + encode_block(CID.from_digest(other, RAW), other)
    for body, word in [(corrupt, "does not match"), (truncated, "truncated"), (missing_root, "incomplete"),
                       (b"", "empty"), (b"\x05garbage", "header")]:
        resp = await node.post("/api/v1/content", data=body, headers=headers)
        err = await resp.json()
        assert resp.status == 400, err
        assert word in err["error"]["message"], err
    assert str(good) not in kubo.ipfs("pin", "ls", "--type=recursive")
    assert kubo.ipfs("block", "stat", "--offline", str(good), check=False) == ""
    page = await (await node.get("/api/v1/content", headers=node.auth)).json()
    assert page["results"] == []


async def test_car_upload_embedded_engine(node_factory, kubo, tmp_path):
    """The same CAR upload contract on the embedded engine: a Kubo-made CAR imports and
    serves the same bytes; bad CARs are 400 and leave nothing behind."""
    client = await node_factory("embedded")
    data = os.urandom(600_000)
    cid, car = _car_of(kubo, tmp_path, data)
    headers = dict(client.auth, **{"Content-Type": "application/vnd.ipld.car"})
    resp = await client.post("/api/v1/content", data=car, headers=headers)
    body = await resp.json()
    assert resp.status == 201 and body["cid"] == cid and body["size"] == len(data)
    assert await (await client.get(f"/ipfs/{cid}")).read() == data
    blocks_dir = client.config.data_dir / "blocks"
    before = sorted(p.name for p in blocks_dir.rglob("*") if p.is_file())
    bad = bytearray(car)
    bad[-1] ^= 1
    for body in (bytes(bad), car[:-100]):
        resp = await client.post("/api/v1/content", data=body, headers=headers)
        assert resp.status == 400
    assert sorted(p.name for p in blocks_dir.rglob("*") if p.is_file()) == before
    page = await (await client.get("/api/v1/content", headers=client.auth)).json()
    assert [r["cid"] for r in page["results"]] == [cid]
