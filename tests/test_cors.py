"""CORS for the bearer-token API (/api/v1/..., /psa/...): preflights, headers on
every answer, never credentials; and a real browser uploading from another origin
(headless Chromium through playwright-core, skipped when they are not installed)."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from aiohttp import web

from tests.gateway_helpers import upload

PREFLIGHT = {"Origin": "http://dapp.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.mark.parametrize("path,methods", [
    ("/api/v1/content", {"GET", "HEAD", "POST"}),  # aiohttp answers HEAD wherever GET is routed
    ("/api/v1/content/bafkqaaa", {"GET", "HEAD", "DELETE"}),
    ("/psa/pins", {"GET", "HEAD", "POST"}),
    ("/psa/pins/some-id", {"GET", "HEAD", "POST", "DELETE"}),
])
async def test_preflight(node, path, methods):
    resp = await node.options(path, headers=PREFLIGHT)
    assert resp.status == 204, await resp.text()
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "*"
    assert set(m.strip() for m in h["Access-Control-Allow-Methods"].split(",")) == methods
    assert [x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")] == ["authorization", "content-type"]
    assert int(h["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in h


async def test_preflight_only_allows_known_headers(node):
    resp = await node.options("/api/v1/content", headers=dict(PREFLIGHT, **{
        "Access-Control-Request-Headers": "Authorization, X-Evil, Content-Type"}))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    # a plain OPTIONS (no preflight headers) is answered too, with Allow
    resp = await node.options("/psa/pins")
    assert resp.status == 204 and set(resp.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST", "OPTIONS"}


async def test_preflight_on_unknown_path_is_404(node):
    resp = await node.options("/api/v1/nothing-here", headers=PREFLIGHT)
    assert resp.status == 404


async def test_actual_responses_carry_cors(node):
    origin = {"Origin": "http://dapp.example"}
    rec = await upload(node, b"cors!", "c.txt")
    cases = [
        await node.get("/api/v1/content", headers=dict(node.auth, **origin)),                  # 200
        await node.get(f"/api/v1/content/{rec['cid']}", headers=dict(node.auth, **origin)),    # 200
        await node.get("/api/v1/content", headers=origin),                                     # 401
        await node.get("/api/v1/content?cursor=@@", headers=dict(node.auth, **origin)),        # 400
        await node.put("/api/v1/content", headers=dict(node.auth, **origin)),                  # 405
        await node.get("/psa/pins", headers=dict(node.auth, **origin)),                        # 200
        await node.get("/psa/pins", headers=origin),                                           # 401
        await node.get("/psa/pins/nope", headers=dict(node.auth, **origin)),                   # 404
        await node.post("/psa/pins", data=b"{", headers=dict(node.auth, **origin)),            # 400
    ]
    assert [r.status for r in cases] == [200, 200, 401, 400, 405, 200, 401, 404, 400]
    for resp in cases:
        assert resp.headers["Access-Control-Allow-Origin"] == "*", resp.url
        exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"retry-after", "www-authenticate", "location", "content-length"} <= exposed
        assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_ops_endpoints_have_no_cors_and_gateway_keeps_its_own(node):
    for path in ("/metrics", "/readyz", "/healthz", "/openapi.json"):
        resp = await node.get(path, headers={"Origin": "http://dapp.example"})
        assert "Access-Control-Allow-Origin" not in resp.headers, path
    rec = await upload(node, b"gw", "g.txt")
    resp = await node.get(f"/ipfs/{rec['cid']}")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    resp = await node.options(f"/ipfs/{rec['cid']}", headers=PREFLIGHT)
    assert resp.status == 200  # the gateway's own preflight handler


# --- a real browser -----------------------------------------------------------------------------------
def _playwright_dir() -> Path | None:
    for base in filter(None, [os.environ.get("HEARTH_PLAYWRIGHT_DIR"), str(Path.home() / ".cache/hearth/pwcore")]):
        if (Path(base) / "node_modules" / "playwright-core").is_dir():
            return Path(base)
    return None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

BROWSER_SCRIPT = r"""
const { chromium } = require('playwright-core');
(async () => {
  const [page_url, api, token] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    const page = await browser.newPage();
    await page.goto(page_url);
    const out = await page.evaluate(async ([api, token]) => {
      const auth = { Authorization: 'Bearer ' + token };
      const up = await fetch(api + '/api/v1/content?filename=from-browser.txt', {
        method: 'POST', headers: { ...auth, 'Content-Type': 'text/plain' }, body: 'hello from another origin' });
      const form = new FormData();
      form.append('file', new Blob(['tree file']), 'dir/in-tree.txt');
      const multi = await fetch(api + '/api/v1/content?wrap=true', { method: 'POST', headers: auth, body: form });
      const pin = await fetch(api + '/psa/pins', { method: 'POST',
        headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ cid: 'bafkqaaa', name: 'b' }) });
      const denied = await fetch(api + '/api/v1/content', { headers: { Authorization: 'Bearer wrong' } });
      const list = await fetch(api + '/api/v1/content', { headers: auth });
      return { origin: location.origin,
               up: [up.status, await up.json()], multi: [multi.status, await multi.json()],
               pin: [pin.status, await pin.json()],
               denied: [denied.status, await denied.json(), denied.headers.get('WWW-Authenticate')],
               list: [list.status, await list.json()] };
    }, [api, token]);
    console.log(JSON.stringify(out));
  } finally { await browser.close(); }
})().catch(e => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(CHROMIUM is None or _playwright_dir() is None or shutil.which("node") is None,
                    reason="needs Debian chromium, node, and npm playwright-core in ~/.cache/hearth/pwcore "
                           "(or HEARTH_PLAYWRIGHT_DIR)")
async def test_browser_dapp_uploads_from_another_origin(node, aiohttp_server, tmp_path):
    async def page(request):
        return web.Response(text="<!doctype html><title>dApp</title><p>a dApp</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    dapp = await aiohttp_server(app)
    api = f"http://{node.server.host}:{node.server.port}"
    script = tmp_path / "cors-check.cjs"
    script.write_text(BROWSER_SCRIPT)
    proc = await asyncio.create_subprocess_exec(
        "node", str(script), f"http://localhost:{dapp.port}/", api, node.token,
        env=dict(os.environ, CHROMIUM=CHROMIUM, NODE_PATH=str(_playwright_dir() / "node_modules")),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["origin"] != api  # really another origin
    assert result["up"][0] == 201 and result["up"][1]["name"] == "from-browser.txt", result
    assert result["multi"][0] == 201 and result["multi"][1]["name"] == "dir", result  # a browser's raw filename
    assert result["pin"][0] == 202 and result["pin"][1]["pin"]["cid"] == "bafkqaaa", result
    assert result["denied"][0] == 401 and result["denied"][1]["error"]["code"] == "unauthorized"
    assert result["denied"][2] == 'Bearer realm="hearth"'  # exposed to the page
    assert result["list"][0] == 200 and {r["name"] for r in result["list"][1]["results"]} == {"from-browser.txt", "dir"}
