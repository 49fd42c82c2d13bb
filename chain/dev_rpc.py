"""A read-only JSON-RPC endpoint on loopback for the embedded dev chain.

The embedded chain (chain/provider.py) lives in the leader process's memory. Other server
workers (POST /api/v1/anchors/verify) and `hearth anchor verify --rpc URL` reach it here: the
leader serves it on 127.0.0.1 (a free port) and writes its URL in the anchor_chain row. Only
the methods a verifier uses are answered; nothing can send a transaction through it.
"""
from __future__ import annotations

import json
import logging

from aiohttp import web

log = logging.getLogger("hearth.anchor")

READ_METHODS = frozenset({
    "eth_chainId", "net_version", "eth_blockNumber", "eth_getBlockByNumber", "eth_getBlockByHash", "eth_call",
    "eth_getCode", "eth_getLogs", "eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_getBalance",
    "eth_getTransactionCount", "web3_clientVersion",
})


class DevRPC:
    def __init__(self, w3):
        self.w3 = w3
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
        calls = body if isinstance(body, list) else [body]
        out = [await self._one(c) for c in calls[:100]]
        return web.json_response(out if isinstance(body, list) else out[0])

    async def _one(self, call) -> dict:
        rid = call.get("id") if isinstance(call, dict) else None
        method = call.get("method") if isinstance(call, dict) else None
        if method not in READ_METHODS:
            return {"jsonrpc": "2.0", "id": rid,
                    "error": {"code": -32601, "message": f"{method!r} is not served (read-only dev chain endpoint)"}}
        try:
            # through web3's middleware, which turns RPC parameters into what eth-tester takes
            resp = await self.w3.manager._coro_make_request(method, call.get("params") or [])  # noqa: SLF001
        except Exception as exc:  # noqa: BLE001
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32000, "message": str(exc)[:300]}}
        if "error" in resp:
            return {"jsonrpc": "2.0", "id": rid, "error": _rpcify(resp["error"])}
        return {"jsonrpc": "2.0", "id": rid, "result": _rpcify(resp.get("result"))}

    async def start(self) -> str:
        app = web.Application(client_max_size=1024**2)
        app.router.add_post("/", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp has no public accessor
        self.url = f"http://127.0.0.1:{port}"
        log.info("the embedded dev chain answers read-only JSON-RPC at %s", self.url)
        return self.url

    async def stop(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.cleanup()


def _rpcify(value):
    """eth-tester's results as JSON-RPC wants them: integers as hex quantities, bytes as 0x hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _rpcify(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rpcify(v) for v in value]
    return value

