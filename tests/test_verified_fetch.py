"""A real HTTP-only IPFS client against a real `hearth serve`: npm @helia/verified-fetch on the
HTTP-only Helia stack (tests/js/verified_fetch.mjs), with the node as its only delegated router
and its only trustless gateway, fetches and verifies files by CID, by path in a directory and by
IPNS name; bytes served tampered make it fail. Node 22 and the npm packages come from
scripts/install-test-deps.sh (~/.cache/hearth/verified-fetch); without them this is skipped."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.support.node import NodeProcess, hearth

VF_DIR = Path(os.environ.get("HEARTH_VERIFIED_FETCH_DIR") or Path.home() / ".cache/hearth/verified-fetch")
NODE22 = VF_DIR / "node_modules" / ".bin" / "node"
CLIENT = Path(__file__).resolve().parent / "js" / "verified_fetch.mjs"


def _node22_missing() -> str | None:
    if not (VF_DIR / "node_modules" / "@helia" / "verified-fetch").is_dir() or not NODE22.exists():
        return f"needs Node 22 and npm @helia/verified-fetch in {VF_DIR} (scripts/install-test-deps.sh installs them)"
    try:
        version = subprocess.run([str(NODE22), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError as exc:
        return f"cannot run {NODE22}: {exc}"
    if not version.startswith("v") or int(version[1:].split(".")[0]) < 22:
        return f"{NODE22} is {version.strip() or 'broken'}, verified-fetch needs Node >= 22"
    return None


MISSING = _node22_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))

BIG = random.Random(8).randbytes(3 * 1024 * 1024)  # 13 blocks: a dag-pb root over 256 KiB raw leaves
SMALL = b"hello, verified fetch\n"  # one raw block
DEEP = random.Random(9).randbytes(600_000)
sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731


async def _upload(url: str, auth: dict) -> dict:
    async with aiohttp.ClientSession() as http:
        out = {}
        for key, data in (("big", BIG), ("small", SMALL)):
            async with http.post(f"{url}/api/v1/content?filename={key}.bin", data=data, headers=auth) as resp:
                assert resp.status == 201, await resp.text()
                out[key] = (await resp.json())["cid"]
        form = aiohttp.FormData(quote_fields=False)
        for name, data in (("site/index.html", b"<h1>site</h1>"), ("site/sub/deep.bin", DEEP)):
            form.add_field("file", data, filename=name, content_type="application/octet-stream")
        async with http.post(f"{url}/api/v1/content?wrap=true", data=form, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            out["dir"] = (await resp.json())["cid"]
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One node, announcing itself at its own loopback URL, with two files and a directory, and
    two IPNS names published by `hearth name publish`: `self` -> the big file, `site` -> the
    directory's `site` folder."""
    node = NodeProcess(tmp_path_factory.mktemp("vf") / "data")
    node.env["HEARTH_SERVER_PUBLIC_URL"] = node.url  # what /routing/v1/providers hands out
    node.start()
    try:
        cids = asyncio.run(_upload(node.url, node.auth))
        data_dir = ["--data-dir", str(node.data_dir)]
        out = hearth("name", "publish", "--json", f"/ipfs/{cids['big']}", *data_dir, env=node.env).stdout
        cids["name_big"] = json.loads(out)["name"]
        hearth("key", "gen", "site", *data_dir, env=node.env)
        out = hearth("name", "publish", "--json", "--key", "site", f"/ipfs/{cids['dir']}/site", *data_dir,
                     env=node.env).stdout
        cids["name_site"] = json.loads(out)["name"]
        assert cids["name_big"].startswith("k51") and cids["name_site"].startswith("k51"), cids
        yield node, cids
    finally:
        node.stop()


async def fetch(router: str, resource: str, timeout_ms: int = 20000) -> dict:
    """Run the client; its JSON result (status, headers, size, sha256, the URLs it asked)."""
    proc = await asyncio.create_subprocess_exec(
        str(NODE22), str(CLIENT), router, resource, str(timeout_ms),
        env=dict(os.environ, HEARTH_VERIFIED_FETCH_DIR=str(VF_DIR)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout_ms / 1000 + 30)
    lines = out.decode().strip().splitlines()
    assert lines, f"client exited {proc.returncode} without a result: {err.decode()[-3000:]}"
    result = json.loads(lines[-1])
    result["exit"] = proc.returncode
    assert not result["refused"], f"the client tried to leave loopback: {result['refused']}"
    return result


def assert_verified(result: dict, node: NodeProcess, body: bytes) -> None:
    assert result["exit"] == 0 and result["status"] == 200, result
    assert (result["size"], result["sha256"]) == (len(body), sha(body)), result
    urls = [r["url"] for r in result["requests"]]
    # only the node, and blocks only through the trustless gateway (raw blocks, verified by the
    # client), found through the node's Routing V1 providers answer
    assert all(u.startswith(node.url + "/") for u in urls), urls
    assert any(u.startswith(f"{node.url}/routing/v1/providers/") for u in urls), urls
    blocks = [r for r in result["requests"] if r["url"].startswith(f"{node.url}/ipfs/")]
    assert blocks and all(r["url"].endswith("?format=raw") and r["accept"] == "application/vnd.ipld.raw"
                          for r in blocks), blocks


@pytest.mark.parametrize("which", ["big", "small"])
async def test_file_by_cid(served, which):
    node, cids = served
    result = await fetch(node.url, f"ipfs://{cids[which]}")
    assert_verified(result, node, BIG if which == "big" else SMALL)
    if which == "big":  # every block of the file, each asked for once
        blocks = [r["url"] for r in result["requests"] if "/ipfs/" in r["url"]]
        assert len(blocks) == len(set(blocks)) == 13, blocks
    assert result["headers"]["x-ipfs-roots"] == cids[which]


async def test_path_in_directory(served):
    node, cids = served
    result, index = await asyncio.gather(fetch(node.url, f"ipfs://{cids['dir']}/site/sub/deep.bin"),
                                         fetch(node.url, f"ipfs://{cids['dir']}/site/"))
    assert_verified(result, node, DEEP)
    assert_verified(index, node, b"<h1>site</h1>")
    assert index["headers"]["content-type"].startswith("text/html")


async def test_by_ipns_name(served):
    node, cids = served
    big, deep = await asyncio.gather(fetch(node.url, f"ipns://{cids['name_big']}"),
                                     fetch(node.url, f"ipns://{cids['name_site']}/sub/deep.bin"))
    assert_verified(big, node, BIG)
    assert_verified(deep, node, DEEP)
    for result in (big, deep):  # the record came from the node's Routing V1 IPNS endpoint
        assert any(r["url"].startswith(f"{node.url}/routing/v1/ipns/") and
                   r["accept"] == "application/vnd.ipfs.ipns-record" for r in result["requests"]), result
    assert big["headers"]["x-ipfs-roots"] == cids["big"]
    assert "immutable" not in big["headers"]["cache-control"]


async def test_tampered_bytes_are_refused(served, aiohttp_server):
    """A proxy in front of the node: the client's router and, by rewriting the node's address in
    the providers answer, its gateway. Passing bytes through, the fetch verifies; flipping one
    bit of each raw block, the client must refuse them and never answer 200 with them."""
    node, cids = served
    state = {"tamper": False, "blocks": 0}

    async def proxy(request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession() as http:
            async with http.request(request.method, node.url + request.path_qs,
                                    headers={k: v for k, v in request.headers.items() if k.lower() == "accept"}) as up:
                body = await up.read()
                headers = {k: v for k, v in up.headers.items() if k.lower() in ("content-type", "cache-control", "etag")}
        if request.path.startswith("/routing/v1/providers/"):
            body = body.replace(f"/tcp/{node.port}/http".encode(), f"/tcp/{server.port}/http".encode())
        elif request.path.startswith("/ipfs/") and up.status == 200 and request.query.get("format") == "raw":
            state["blocks"] += 1
            if state["tamper"]:
                body = body[:-1] + bytes([body[-1] ^ 1])
        return web.Response(status=up.status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    server = await aiohttp_server(app, host="127.0.0.1")
    router = f"http://127.0.0.1:{server.port}"

    result = await fetch(router, f"ipfs://{cids['small']}")  # the proxy itself is faithful
    assert result["exit"] == 0 and result["status"] == 200 and result["sha256"] == sha(SMALL), result
    assert state["blocks"] == 1

    state["tamper"] = True
    for cid in (cids["small"], cids["big"]):
        result = await fetch(router, f"ipfs://{cid}", timeout_ms=8000)
        # verified-fetch answers 502 Bad Gateway: no gateway gave a block that hashes to its CID
        assert result["exit"] == 0 and result["status"] == 502, result
        assert result["sha256"] not in (sha(SMALL), sha(BIG)), result
    assert state["blocks"] >= 3
