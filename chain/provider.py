"""Chain settings (`[chain]`) and connections.

    chain = await open_chain(config["chain"], config.data_dir)
    chain.w3 (AsyncWeb3), chain.chain_id, chain.genesis_hash ("0x..." of block 0), chain.dev,
    chain.account (eth-account LocalAccount), chain.contract (AnchorContract),
    chain.confirmations (0 on the dev chain), chain.max_fee_wei, chain.describe()
    await chain.close()

    w3 = await connect(["https://rpc.a", "https://rpc.b"])   # no key, no contract: verifiers

`rpc_url = "embedded"` (the default): web3's AsyncEthereumTesterProvider (py-evm) in this
process, an EPHEMERAL dev chain: its state lives in memory and is gone when the process stops
(a new genesis hash each start). A dev key is made in memory, funded from the tester's prefunded
accounts, and the Anchor contract deployed with it. Nothing about it is kept: proofs made on it
name its genesis hash, so they are recognisably stale after a restart.

Otherwise `rpc_url` is one http(s) URL or a list: each request goes to the URL in use, and on a
connection error, timeout or HTTP error status to the next one in order (a JSON-RPC error answer,
such as "nonce too low", is an answer, not a failure); after FAILBACK_S on a later URL the first
is tried again. A URL first used after start-up must report the same chain id, or it is skipped.
URLs are logged as scheme://host only (provider URLs often carry an API key in the path).

web3 and eth-tester are imported inside the functions: `import web3` costs a process ~50 MiB RSS
(measured: 13 -> 63 MiB), an eth-tester chain ~7 MiB more, eth-account alone ~29 MiB; server
workers that never touch the chain should not pay that. Importing chain.* loads none of them
(chain.merkle: pycryptodome, ~4 MiB).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from .contract import AnchorContract, ChainError, deploy_anchor

log = logging.getLogger("hearth.chain")

EMBEDDED = "embedded"
FAILBACK_S = 60.0
DEV_FUNDING_WEI = 1000 * 10**18


class RPCUnavailable(ConnectionError):
    """No configured RPC URL answered."""


def rpc_urls(value: str | list[str]) -> list[str]:
    """`[chain] rpc_url` as a list (the config validator already checked each entry)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def redact(url: str) -> str:
    """scheme://host[:port] of a URL: what the logs and errors may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<bad url>"


def _failover_provider_class():
    import aiohttp
    from web3 import AsyncHTTPProvider

    class FailoverHTTPProvider(AsyncHTTPProvider):
        """AsyncHTTPProvider over several URLs, tried in order on connection failure."""

        def __init__(self, urls: list[str], timeout: float):
            super().__init__(urls[0], request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
                             exception_retry_configuration=None)
            self.urls = list(urls)
            self.current = 0
            self.switched_at = 0.0
            self.expected_chain_id: int | None = None
            self.checked: set[int] = set()

        def __str__(self) -> str:
            return f"RPC connection {redact(self.urls[self.current])}"

        async def _post(self, i: int, request_data: bytes) -> bytes:
            return await self._request_session_manager.async_make_post_request(
                self.urls[i], request_data, **self.get_request_kwargs())

        async def _check_chain(self, i: int) -> None:
            raw = await self._post(i, self.encode_rpc_request("eth_chainId", []))
            got = int(self.decode_rpc_response(raw)["result"], 16)
            if got != self.expected_chain_id:
                raise ChainError(f"{redact(self.urls[i])} is chain {got}, not {self.expected_chain_id}")
            self.checked.add(i)

        async def _make_request(self, method, request_data: bytes) -> bytes:
            start = self.current
            if start and time.monotonic() - self.switched_at > FAILBACK_S:
                start = 0  # try the first URL again now and then
            failures = []
            for k in range(len(self.urls)):
                i = (start + k) % len(self.urls)
                try:
                    if self.expected_chain_id is not None and i not in self.checked:
                        await self._check_chain(i)
                    raw = await self._post(i, request_data)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ChainError, ValueError, KeyError) as exc:
                    reason = f"{type(exc).__name__}" + (f": {exc}" if isinstance(exc, ChainError) else "")
                    failures.append(f"{redact(self.urls[i])} ({reason})")
                    if len(self.urls) > 1:
                        log.warning("chain RPC %s failed (%s)%s", redact(self.urls[i]), reason,
                                    "; trying the next URL" if k + 1 < len(self.urls) else "")
                    continue
                if i != self.current:
                    log.warning("chain RPC: now using %s", redact(self.urls[i]))
                    self.current, self.switched_at = i, time.monotonic()
                    self.endpoint_uri = self.urls[i]
                return raw
            raise RPCUnavailable("no chain RPC answered: " + "; ".join(failures))

    return FailoverHTTPProvider


async def connect(urls: list[str] | str, timeout: float = 10, expected_chain_id: int = 0):
    """An AsyncWeb3 over the URL(s) with failover, its chain id checked (0 = any)."""
    from web3 import AsyncWeb3

    urls = rpc_urls(urls)
    if EMBEDDED in urls:
        raise ValueError('connect() takes RPC URLs; "embedded" is open_chain\'s')
    provider = _failover_provider_class()(urls, timeout)
    w3 = AsyncWeb3(provider)
    try:
        chain_id = int(await w3.eth.chain_id)
        if expected_chain_id and chain_id != expected_chain_id:
            raise ChainError(f"{redact(urls[provider.current])} is chain {chain_id}, "
                             f"not [chain] chain_id {expected_chain_id}")
    except BaseException:
        await provider.disconnect()
        raise
    provider.expected_chain_id = chain_id
    provider.checked.add(provider.current)
    return w3


@dataclass
class Chain:
    w3: Any
    chain_id: int
    genesis_hash: str
    dev: bool
    account: Any
    contract: AnchorContract
    confirmations: int
    max_fee_wei: int
    rpc: str = EMBEDDED  # redacted URL in use, or "embedded"
    _closers: list = field(default_factory=list, repr=False)

    def describe(self) -> dict[str, Any]:
        """What the API and proofs may say about this chain (nothing secret)."""
        return {"chain_id": self.chain_id, "genesis_hash": self.genesis_hash, "contract": self.contract.address,
                "dev": self.dev, "ephemeral": self.dev, "account": self.account.address, "rpc": self.rpc,
                "confirmations": self.confirmations}

    async def close(self) -> None:
        for close in self._closers:
            try:
                await close()
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        self._closers.clear()


async def _genesis_hash(w3) -> str:
    block = await w3.eth.get_block(0)
    return block["hash"].to_0x_hex()


async def open_chain(chain_cfg: Mapping[str, Any], data_dir: str | Path,
                     env: Mapping[str, str] | None = None) -> Chain:
    """Connect as [chain] says: the embedded dev chain, or the RPC URL(s) with the node's key and
    the configured Anchor contract. ChainError / KeystoreError / RPCUnavailable: one line each."""
    urls = rpc_urls(chain_cfg.get("rpc_url") or EMBEDDED)
    max_fee_wei = int(chain_cfg.get("max_fee_gwei", 100)) * 10**9
    if urls == [EMBEDDED]:
        return await _open_embedded(chain_cfg, max_fee_wei)
    from .keystore import load_node_account

    # before any network, so a bad passphrase fails fast; in a thread: scrypt holds the CPU ~0.7 s
    account = await asyncio.to_thread(load_node_account, chain_cfg, data_dir, env)
    w3 = await connect(urls, float(chain_cfg.get("rpc_timeout", 10)), int(chain_cfg.get("chain_id") or 0))
    try:
        chain_id = int(await w3.eth.chain_id)
        address = (chain_cfg.get("anchor_contract") or "").strip()
        if not address:
            raise ChainError("[chain] anchor_contract is empty: deploy the contract with `hearth anchor deploy` "
                             "and set it (only the embedded dev chain deploys its own)")
        contract = AnchorContract(w3, address, chain_id)
        if not await contract.code_matches():
            code = await w3.eth.get_code(contract.address)
            if not code:
                raise ChainError(f"no contract at [chain] anchor_contract {contract.address} on chain {chain_id}")
            log.warning("the code at %s is not this version's Anchor artifact; using it through the same ABI",
                        contract.address)
        genesis = await _genesis_hash(w3)
    except BaseException:
        await w3.provider.disconnect()
        raise
    provider = w3.provider
    chain = Chain(w3, chain_id, genesis, False, account, contract, int(chain_cfg.get("confirmations", 2)),
                  max_fee_wei, rpc=redact(provider.urls[provider.current]), _closers=[provider.disconnect])
    log.info("chain %s (genesis %s) via %s: Anchor contract %s, account %s, %d confirmations", chain_id,
             genesis[:10], chain.rpc, contract.address, account.address, chain.confirmations)
    return chain


async def _open_embedded(chain_cfg: Mapping[str, Any], max_fee_wei: int) -> Chain:
    from eth_account import Account
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import AsyncWeb3
    from web3.providers.eth_tester import AsyncEthereumTesterProvider

    if (chain_cfg.get("anchor_contract") or "").strip():
        raise ChainError('[chain] anchor_contract is set but rpc_url = "embedded": the dev chain is new at every '
                         'start and deploys its own contract; set anchor_contract = "" or give an rpc_url')
    provider = AsyncEthereumTesterProvider()
    # a random genesis extra_data: every dev chain has its own genesis hash, even two started in
    # the same second (eth-tester's genesis is otherwise a function of the clock's seconds), so a
    # proof from an earlier dev chain never matches a later one
    provider.ethereum_tester = EthereumTester(backend=PyEVMBackend(
        genesis_parameters=PyEVMBackend.generate_genesis_params({"extra_data": os.urandom(32)})))
    w3 = AsyncWeb3(provider)
    chain_id = int(await w3.eth.chain_id)
    expected = int(chain_cfg.get("chain_id") or 0)
    if expected and expected != chain_id:
        raise ChainError(f"[chain] chain_id {expected}, but the embedded dev chain is {chain_id}")
    account = Account.create()  # in memory only, as the chain itself
    funder = (await w3.eth.accounts)[0]
    tx = await w3.eth.send_transaction({"from": funder, "to": account.address, "value": DEV_FUNDING_WEI})
    await w3.eth.wait_for_transaction_receipt(tx)
    address = await deploy_anchor(w3, account)
    genesis = await _genesis_hash(w3)
    chain = Chain(w3, chain_id, genesis, True, account, AnchorContract(w3, address, chain_id), 0, max_fee_wei)
    log.warning("chain: EPHEMERAL dev chain in this process (rpc_url = \"embedded\", chain id %s, genesis %s): "
                "anchors on it vanish when the node stops and prove nothing to anyone else; set [chain] rpc_url "
                "to a real chain to anchor for real. Anchor contract %s, dev account %s",
                chain_id, genesis, address, account.address)
    return chain
