"""EIP-3668 CCIP-read done by Hearth (naming/ccip_read.py) through the guarded outbound client:
a test contract on anvil (tests/contracts/CcipTest.sol) reverts with OffchainLookup pointing at a
loopback aiohttp gateway. Followed when the test's configuration widens the guard, refused by
default (https only, no loopback/private), DNS rebinding, redirects, size and time limits, depth,
4xx vs 5xx, sender mismatch, raw revert data."""
from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from eth_abi import decode, encode
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3

import outbound.client as outbound_client
from naming.ccip_read import (
    CCIP_DEFAULTS,
    CcipGatewayError,
    CcipGatewaysFailed,
    CcipSenderMismatch,
    CcipTooDeep,
    ContractReverted,
    ccip_call,
    ccip_client,
    decode_offchain_lookup,
    lookup_from_error,
)

ARTIFACT = Path(__file__).parent / "contracts" / "CcipTest.json"
LOOPBACK_OK = {"ccip_allow_http": True, "ccip_allow_private": True}
QUERY = b"hello.eth"


def _sel(sig: str) -> bytes:
    return Web3.keccak(text=sig)[:4]


def lookup_data(query: bytes = QUERY) -> bytes:
    return _sel("lookup(bytes)") + encode(["bytes"], [query])


def lookup_as_data(sender: str, query: bytes = QUERY) -> bytes:
    return _sel("lookupAs(address,bytes)") + encode(["address", "bytes"], [sender, query])


def answer(result: bytes) -> tuple[bytes, int]:
    return tuple(decode(["bytes", "uint256"], result))


# --- fixtures -------------------------------------------------------------------------------------------
@pytest.fixture
async def chain(anvil):
    """The CcipTest contract deployed on a fresh anvil; .set_urls(list), .set_rounds(n)."""
    art = json.loads(ARTIFACT.read_text())
    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    acct = (await w3.eth.accounts)[0]
    tx = await w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"]).constructor().transact({"from": acct})
    receipt = await w3.eth.wait_for_transaction_receipt(tx)
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=art["abi"])

    async def send(fn):
        await w3.eth.wait_for_transaction_receipt(await fn.transact({"from": acct}))

    w3.contract = contract
    w3.address = receipt["contractAddress"]
    w3.set_urls = lambda urls: send(contract.functions.setUrls(urls))
    w3.set_rounds = lambda n: send(contract.functions.setRounds(n))
    yield w3
    await w3.provider.disconnect()


@pytest.fixture
async def gateway(aiohttp_server):
    """A loopback CCIP-read gateway: answers {"data": "ok:" + callData} and logs every request."""
    hits: list[tuple[str, str]] = []
    posts: list[dict] = []
    state: dict[str, str] = {}

    def ok(data_hex: str):
        return web.json_response({"data": "0x" + (b"ok:" + bytes.fromhex(data_hex[2:])).hex()})

    async def get(request):
        hits.append(("GET", request.path))
        return ok(request.match_info["data"])

    async def post(request):
        hits.append(("POST", request.path))
        doc = await request.json()
        posts.append(doc)
        return ok(doc["data"])

    async def status(request):
        hits.append(("GET", request.path))
        code = int(request.match_info["code"])
        return web.json_response({"message": f"gateway says {code}"}, status=code)

    async def big(request):
        hits.append(("GET", request.path))
        return web.json_response({"data": "0x" + "ab" * 100_000})

    async def slow(request):
        hits.append(("GET", request.path))
        await asyncio.sleep(5)
        return ok(request.match_info["data"])

    async def malformed(request):
        hits.append(("GET", request.path))
        return web.Response(text="not json")

    async def redirect(request):
        hits.append(("GET", request.path))
        raise web.HTTPFound(state["redirect_to"])

    app = web.Application()
    app.router.add_get("/g/{sender}/{data}", get)
    app.router.add_post("/post", post)
    app.router.add_get("/status/{code}/{sender}/{data}", status)
    app.router.add_get("/big/{sender}/{data}", big)
    app.router.add_get("/slow/{sender}/{data}", slow)
    app.router.add_get("/malformed/{sender}/{data}", malformed)
    app.router.add_get("/redirect/{sender}/{data}", redirect)
    server = await aiohttp_server(app)
    server.hits, server.posts, server.state = hits, posts, state
    server.base = f"http://127.0.0.1:{server.port}"
    server.url = lambda kind="g": f"{server.base}/{kind}/{{sender}}/{{data}}"
    return server


@pytest.fixture
async def clients():
    made = []

    def make(outbound=None, ens=None, resolver=None):
        c = ccip_client(outbound or {}, ens or {}, resolver=resolver)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


class FakeResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]):
        self.answers = answers

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in self.answers[host]]

    async def close(self):
        pass


# --- following lookups ---------------------------------------------------------------------------------------
async def test_lookup_followed_get_when_config_allows_loopback_http(chain, gateway, clients):
    await chain.set_urls([gateway.url()])
    result = await ccip_call(chain, chain.address, lookup_data(), clients(ens=LOOPBACK_OK))
    assert answer(result) == (b"ok:" + QUERY, 1)
    sender = chain.address.lower()
    assert gateway.hits == [("GET", f"/g/{sender}/0x{QUERY.hex()}")]  # lower-case 0x hex substituted


async def test_post_when_url_has_no_data_placeholder(chain, gateway, clients):
    await chain.set_urls([f"{gateway.base}/post"])
    result = await ccip_call(chain, chain.address, lookup_data(), clients(ens=LOOPBACK_OK))
    assert answer(result) == (b"ok:" + QUERY, 1)
    assert gateway.posts == [{"data": "0x" + QUERY.hex(), "sender": chain.address.lower()}]


async def test_outbound_section_widens_too(chain, gateway, clients):
    await chain.set_urls([gateway.url()])
    client = clients(outbound={"allow_http": True, "allow_private": True})
    assert answer(await ccip_call(chain, chain.address, lookup_data(), client))[1] == 1


async def test_refused_by_default_naming_the_reason(chain, gateway, clients):
    await chain.set_urls([gateway.url(), f"https://127.0.0.1:{gateway.port}/g/{{sender}}/{{data}}",
                          f"http://localhost:{gateway.port}/g/{{sender}}/{{data}}"])
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), clients())
    reasons = [why for _, why in exc.value.failures]
    assert "https only" in reasons[0] and "loopback address" in reasons[1] and "https only" in reasons[2]
    # http allowed, private not: loopback named, literal or by name
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), clients(ens={"ccip_allow_http": True}))
    reasons = [why for _, why in exc.value.failures]
    assert all("loopback address" in why and why.startswith("refused") for why in reasons), reasons
    assert "localhost resolves to" in reasons[2]
    assert gateway.hits == []  # nothing reached the gateway


async def test_dns_rebinding_refused(chain, gateway, clients):
    """A public-looking name that resolves to 127.0.0.1 is refused when it resolves; the connector
    dials only the vetted answer, so a second (rebinding) answer has no way in."""
    await chain.set_urls([f"http://gateway.example.com:{gateway.port}/g/{{sender}}/{{data}}"])
    resolver = FakeResolver({"gateway.example.com": ["127.0.0.1"]})
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), clients(ens={"ccip_allow_http": True}, resolver=resolver))
    assert "gateway.example.com resolves to 127.0.0.1, a loopback address" in str(exc.value)
    mixed = FakeResolver({"gateway.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(CcipGatewaysFailed):
        await ccip_call(chain, chain.address, lookup_data(), clients(ens={"ccip_allow_http": True}, resolver=mixed))
    assert gateway.hits == []
    # the same name with private targets allowed: the connection goes to the vetted address
    ok = clients(ens=LOOPBACK_OK, resolver=FakeResolver({"gateway.example.com": ["127.0.0.1"]}))
    assert answer(await ccip_call(chain, chain.address, lookup_data(), ok))[1] == 1


async def test_redirects_rechecked_each_hop(chain, gateway, clients, monkeypatch):
    """The gateway's own address is let through as if public (only 127.0.0.1, by patching the
    policy for this test); its redirects to private and link-local targets are refused."""
    real = outbound_client.address_refusal
    monkeypatch.setattr(outbound_client, "address_refusal",
                        lambda a, allow_private=False: None if str(a) == "127.0.0.1" else real(a, allow_private=allow_private))
    client = clients(ens={"ccip_allow_http": True})
    await chain.set_urls([gateway.url("redirect")])
    data_path = f"{chain.address.lower()}/0x{QUERY.hex()}"
    gateway.state["redirect_to"] = f"/g/{data_path}"  # same (allowed) host: followed
    assert answer(await ccip_call(chain, chain.address, lookup_data(), client))[0] == b"ok:" + QUERY
    for target, why in ((f"http://169.254.169.254/g/{data_path}", "link-local"),
                        (f"http://10.0.0.1:{gateway.port}/g/{data_path}", "private address"),
                        (f"http://127.0.0.2:{gateway.port}/g/{data_path}", "loopback address"),
                        (f"file:///etc/passwd", "only http(s)")):
        gateway.state["redirect_to"] = target
        with pytest.raises(CcipGatewaysFailed) as exc:
            await ccip_call(chain, chain.address, lookup_data(), client)
        assert why in str(exc.value)
    gateway.state["redirect_to"] = f"/redirect/{data_path}"  # a loop: bounded
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)
    assert "redirects" in str(exc.value)


async def test_oversized_and_slow_answers_cut_off(chain, gateway, clients):
    client = clients(ens=dict(LOOPBACK_OK, ccip_max_response_bytes=4096, ccip_timeout=0.5))
    await chain.set_urls([gateway.url("big")])
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)
    assert "OutboundTooLarge" in str(exc.value)
    await chain.set_urls([gateway.url("slow")])
    started = asyncio.get_running_loop().time()
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)
    assert "OutboundTimeout" in str(exc.value)
    assert asyncio.get_running_loop().time() - started < 2.5
    # a slow first gateway, then a good one: the lookup still completes
    await chain.set_urls([gateway.url("slow"), gateway.url()])
    assert answer(await ccip_call(chain, chain.address, lookup_data(), client))[1] == 1


async def test_depth_limit(chain, gateway, clients):
    client = clients(ens=LOOPBACK_OK)
    await chain.set_urls([gateway.url()])
    await chain.set_rounds(3)  # the callback looks up again twice
    data, made = answer(await ccip_call(chain, chain.address, lookup_data(), client))
    assert made == 3 and data == b"ok:" + QUERY + bytes([2])  # the last lookup's callData: query + round
    assert len(gateway.hits) == 3
    with pytest.raises(CcipTooDeep):
        await ccip_call(chain, chain.address, lookup_data(), client, max_depth=2)
    await chain.set_rounds(5)
    with pytest.raises(CcipTooDeep) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)  # default: 4
    assert "more than 4" in str(exc.value)
    assert CCIP_DEFAULTS["ccip_max_depth"] == 4


async def test_4xx_stops_5xx_tries_next(chain, gateway, clients):
    client = clients(ens=LOOPBACK_OK)
    await chain.set_urls([gateway.url("status/500"), gateway.url("status/503"), gateway.url("malformed"),
                          gateway.url()])
    assert answer(await ccip_call(chain, chain.address, lookup_data(), client))[1] == 1
    assert [p.split("/")[1:3] for _, p in gateway.hits] == [["status", "500"], ["status", "503"],
                                                             ["malformed", chain.address.lower()],
                                                             ["g", chain.address.lower()]]
    gateway.hits.clear()
    await chain.set_urls([gateway.url("status/404"), gateway.url()])
    with pytest.raises(CcipGatewayError) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)
    assert exc.value.status == 404 and "gateway says 404" in str(exc.value)
    assert len(gateway.hits) == 1  # the second gateway was never asked
    await chain.set_urls([gateway.url("status/500")])
    with pytest.raises(CcipGatewaysFailed) as exc:
        await ccip_call(chain, chain.address, lookup_data(), client)
    assert "HTTP 500" in str(exc.value)


async def test_sender_mismatch_refused(chain, gateway, clients):
    await chain.set_urls([gateway.url()])
    other = "0x000000000000000000000000000000000000dEaD"
    with pytest.raises(CcipSenderMismatch) as exc:
        await ccip_call(chain, chain.address, lookup_as_data(other), clients(ens=LOOPBACK_OK))
    assert "0x000000000000000000000000000000000000dead" in str(exc.value)
    assert gateway.hits == []
    # naming itself as sender is fine
    assert answer(await ccip_call(chain, chain.address, lookup_as_data(chain.address), clients(ens=LOOPBACK_OK)))[1] == 1


async def test_raw_revert_data_and_web3_exception(chain, gateway, clients, anvil):
    """The lookup is read from web3's OffchainLookup exception and from raw revert data (a call
    function of one's own, here raw JSON-RPC, raising ContractReverted)."""
    from web3.exceptions import OffchainLookup as Web3OffchainLookup

    await chain.set_urls([gateway.url()])
    with pytest.raises(Web3OffchainLookup) as exc:
        await chain.eth.call({"to": chain.address, "data": lookup_data()}, ccip_read_enabled=False)
    from_web3 = lookup_from_error(exc.value)
    from_raw = decode_offchain_lookup(exc.value.data)
    assert from_web3 == from_raw
    assert (from_raw.sender, from_raw.urls, from_raw.call_data) == (chain.address.lower(), (gateway.url(),), QUERY)
    assert decode_offchain_lookup(b"\x08\xc3\x79\xa0" + b"\x00" * 64) is None  # Error(string): not a lookup

    async def raw_call(to: str, data: bytes) -> bytes:
        def rpc():
            try:
                return anvil.rpc("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
            except RuntimeError as err:  # anvil's error object, with the revert data
                return err
        out = await asyncio.to_thread(rpc)
        if isinstance(out, RuntimeError):
            text = str(out)
            raise ContractReverted(bytes.fromhex(text.split("'data': '0x", 1)[1].split("'", 1)[0]))
        return bytes.fromhex(out[2:])

    result = await ccip_call(None, chain.address, lookup_data(), clients(ens=LOOPBACK_OK), call=raw_call)
    assert answer(result) == (b"ok:" + QUERY, 1)
    # a revert that is not a lookup propagates unchanged
    bad = _sel("callback(bytes,bytes)") + encode(["bytes", "bytes"], [b"x", b"not abi"])
    with pytest.raises(Exception) as exc:
        await ccip_call(chain, chain.address, bad, clients(ens=LOOPBACK_OK))
    assert not isinstance(exc.value, (CcipGatewaysFailed, CcipSenderMismatch))


def test_client_settings():
    strict = ccip_client({}, {})
    assert (strict.allow_http, strict.allow_private) == (False, False)
    assert strict.timeout == CCIP_DEFAULTS["ccip_timeout"] and strict.max_response_bytes == 1024 * 1024
    loose = ccip_client({"timeout": 3, "max_response_bytes": 100}, LOOPBACK_OK)
    assert (loose.allow_http, loose.allow_private, loose.timeout, loose.max_response_bytes) == (True, True, 3.0, 100)
    assert ccip_client({"allow_private": True}, {}).allow_private


def test_artifact_matches_a_fresh_compile(tmp_path):
    from tests.support.anvil import TOOLS

    if not shutil.which("node") or not (TOOLS / "node_modules/solc").exists():
        pytest.skip("solc-js not installed (scripts/install-test-deps.sh)")
    out = tmp_path / "CcipTest.json"
    subprocess.run(["node", str(ARTIFACT.parent / "compile.js"), "--out", str(out)], check=True,
                   capture_output=True, timeout=60)
    assert json.loads(out.read_text()) == json.loads(ARTIFACT.read_text())
