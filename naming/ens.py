"""ENS (Ethereum Name Service) as a name system: `mysite.eth` -> its resolver -> its contenthash
(EIP-1577) -> `/ipfs/{cid}` or `/ipns/{key}`, served by the gateway like any other name.

* `handles(name)`: names ending in `.eth` (case-insensitive; the only TLD taken, so DNS names stay
  DNSLink's). Registered before DNSLink in the app's Resolver.
* Names are normalized with ENSIP-15 (web3's implementation): `TeSt.eth` -> `test.eth`,
  full-width letters folded, emoji kept; spaces, empty labels, disallowed characters, mixed
  scripts and whole-script confusables are InvalidName (400) saying why.
* Lookups go through the Universal Resolver (`resolve(dnsName, calldata)`, ENSIP-10 wildcards
  included): one `eth_call` per record, made with web3 8's `AsyncENS` (registry `[ens] registry`,
  default mainnet's; its Universal Resolver contract, `[ens] universal_resolver` replacing web3's
  fixed address; its reverse lookup). Contenthash, addresses and texts are encoded and decoded
  here, so an EIP-3668 OffchainLookup from the resolver is followed by naming/ccip_read.py (web3's
  own CCIP-read is off) for all of them.
* Contenthash: ipfs-ns (0xe3) -> `/ipfs/{cid}`, ipns-ns (0xe5) -> `/ipns/{k51...}` (resolved by
  the node's IPNS records) or, for an identity-hashed name, `/ipns/{dnslink name}`; swarm,
  arweave, onion, skynet... -> UnsupportedContenthash (422, protocol named). No resolver /
  no contenthash: two NameNotFound kinds (404, which one said).
* Cache: each name's answer (resolver, contenthash) is kept `cache_ttl_s` in memory and in the
  metadata store (`ens_cache`, survives restarts); an RPC failure serves the last good answer for
  up to `stale_s` more seconds, flagged stale (Resolution.stale), else NameUnavailable (502;
  504 on a timeout). No `[ens] rpc_url`: EnsNotConfigured (503 naming the setting).
* web3 is imported lazily: a worker that never sees an ENS name never loads it.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from storage.cid import CID, InvalidCID, LIBP2P_KEY, decode_varint

from .resolver import InvalidName, NameNotFound, NameUnavailable, NamingError, Resolution

log = logging.getLogger("hearth.ens")

TLDS = ("eth",)
MAX_NAME = 1024
MAX_ENTRIES = 4096
# EIP-1577 / multicodec namespaces
PROTOCOLS = {0xE3: "ipfs", 0xE5: "ipns", 0xE4: "swarm", 0x01BC: "onion", 0x01BD: "onion3", 0xB19910: "skynet",
             0xB29910: "arweave"}
CONTENTHASH_SELECTOR = bytes.fromhex("bc1c58d1")  # contenthash(bytes32)
ADDR_COIN_SELECTOR = bytes.fromhex("f1cb7e06")  # addr(bytes32,uint256)
ADDR_SELECTOR = bytes.fromhex("3b3b57de")  # addr(bytes32)
TEXT_SELECTOR = bytes.fromhex("59d1d43c")  # text(bytes32,string)
ETH_COIN = 60


class EnsNotConfigured(NameUnavailable):
    http = (503, "ens_not_configured")
    headers = {"Retry-After": "60"}


class EnsRpcTimeout(NameUnavailable):
    status = 504


class NoResolver(NameNotFound):
    """The name (and its parents) have no resolver in the registry."""


class NoContenthash(NameNotFound):
    """The name has a resolver, but no contenthash."""


class UnsupportedContenthash(NamingError):
    http = (422, "unsupported_contenthash")

    def __init__(self, message: str, protocol: str):
        super().__init__(message)
        self.protocol = protocol


def _selector(signature: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=signature)[:4]


@functools.lru_cache(maxsize=8192)
def normalize(name: str) -> str:
    """ENSIP-15 normalized form, or InvalidName saying why (memoized: ~1 ms per call otherwise, most of
    what a cached resolution would cost)."""
    if not name or len(name) > MAX_NAME:
        raise InvalidName(f"an ENS name is 1 to {MAX_NAME} characters")
    from ens.exceptions import InvalidName as Web3InvalidName
    from ens.utils import normalize_name

    try:
        normal = normalize_name(name[:-1] if name.endswith(".") else name)
    except Web3InvalidName as exc:
        raise InvalidName(f"{name[:200]!r} is not a valid ENS name (ENSIP-15): {exc}") from None
    if not normal or "." not in normal:
        raise InvalidName(f"{name[:200]!r} is not a valid ENS name: a name and a TLD are needed")
    return normal


@dataclass(frozen=True)
class Contenthash:
    protocol: str
    raw: bytes
    cid: str | None = None
    value: str | None = None  # the content path it points to, for ipfs/ipns
    uri: str | None = None

    def as_json(self) -> dict:
        return {"protocol": self.protocol, "cid": self.cid, "uri": self.uri, "raw": "0x" + self.raw.hex()}


def decode_contenthash(raw: bytes) -> Contenthash:
    """EIP-1577: a multicodec namespace, then the content's identifier (a binary CID for ipfs/ipns)."""
    try:
        code, pos = decode_varint(raw, 0)
    except (ValueError, IndexError):
        raise UnsupportedContenthash(f"malformed contenthash 0x{raw[:64].hex()}", "unknown") from None
    protocol = PROTOCOLS.get(code, f"0x{code:x}")
    if code not in (0xE3, 0xE5):
        return Contenthash(protocol, raw)
    try:
        cid = CID.from_bytes(raw[pos:])
    except (InvalidCID, ValueError, IndexError) as exc:
        raise UnsupportedContenthash(f"contenthash {protocol}-ns holds no valid CID: {exc}", protocol) from None
    if code == 0xE3:
        text = cid.v1().encode()
        return Contenthash("ipfs", raw, text, f"/ipfs/{text}", f"ipfs://{text}")
    name = _dnslink_name(cid)
    if name is not None:  # an identity multihash holding a domain (a DNSLink name), as ENS apps write them
        return Contenthash("ipns", raw, str(cid), f"/ipns/{name}", f"ipns://{name}")
    if cid.codec != LIBP2P_KEY:  # a peer ID written as a CID of another codec: its libp2p-key form
        cid = CID(1, LIBP2P_KEY, cid.multihash)
    text = cid.encode_base36()
    return Contenthash("ipns", raw, text, f"/ipns/{text}", f"ipns://{text}")


def _dnslink_name(cid: CID) -> str | None:
    """The domain an identity-hashed ipns-ns CID spells out, or None (an Ed25519 key is identity-hashed
    too, but its bytes are a protobuf, never a printable name with a dot)."""
    if cid.hash_code != 0x00:
        return None
    digest = cid.digest
    if not digest.isascii() or not all(0x21 <= b < 0x7F for b in digest) or b"." not in digest:
        return None
    return digest.decode().lower()


@dataclass
class Answer:
    """What is cached per name."""

    name: str
    resolver: str | None
    contenthash: bytes | None
    fetched_at: float  # wall clock (survives restarts)

    def to_json(self) -> str:
        return json.dumps({"resolver": self.resolver,
                           "contenthash": None if self.contenthash is None else self.contenthash.hex()})

    @classmethod
    def from_row(cls, name: str, text: str, fetched_at: float) -> "Answer":
        data = json.loads(text)
        ch = data.get("contenthash")
        return cls(name, data.get("resolver"), None if ch is None else bytes.fromhex(ch), fetched_at)


class EnsNameSystem:
    name = "ens"
    caches_answers = True

    def __init__(self, settings: dict, store=None, outbound: dict | None = None, generation=None,
                 defer_when_off: bool = False):
        urls = settings.get("rpc_url") or []
        self.rpc_urls = [urls] if isinstance(urls, str) else list(urls)
        self.rpc_urls = [u for u in self.rpc_urls if u]
        self.registry = settings.get("registry") or ""
        self.universal_resolver = settings.get("universal_resolver") or ""
        self.cache_ttl = float(settings.get("cache_ttl_s", 300))
        self.stale_s = float(settings.get("stale_s", 3600))
        self.rpc_timeout = float(settings.get("rpc_timeout", 10))
        self.settings = settings
        self.outbound = outbound  # [outbound]: the guard of EIP-3668 gateway requests (naming/ccip_read.py)
        self.store = store
        # a counter every worker of the node maps (gateway/shared_slot.py): bumped by a purge, it
        # empties every worker's memory of answers
        self.generation = generation
        self._seen = generation.value if generation is not None else 0
        # no rpc_url and `[dns] resolvers` has an "eth." server (eth.limo's DoH...): leave .eth to DNSLink
        self.defer_when_off = defer_when_off and not self.rpc_urls
        self._memory: dict[str, Answer] = {}
        self._inflight: dict[str, asyncio.Future] = {}
        self._clients: list | None = None
        self.counts = {"hits": 0, "misses": 0, "rpc_calls": 0, "rpc_failures": 0, "stale": 0}

    # -- the NameSystem interface ----------------------------------------------------------------
    def handles(self, name: str) -> bool:
        if not name or len(name) > MAX_NAME or self.defer_when_off:
            return False
        text = name[:-1] if name.endswith(".") else name
        return text.rpartition(".")[2].lower() in TLDS and "." in text

    async def resolve(self, name: str) -> Resolution:
        normal = normalize(name)
        answer, stale = await self.answer(normal)
        if answer.resolver is None:
            raise NoResolver(f"ENS name {normal!r} has no resolver")
        if not answer.contenthash:
            raise NoContenthash(f"ENS name {normal!r} has a resolver ({answer.resolver}) but no contenthash")
        ch = decode_contenthash(answer.contenthash)
        if ch.value is None:
            raise UnsupportedContenthash(f"ENS name {normal!r} points to {ch.protocol} content "
                                         f"(contenthash 0x{ch.raw[:40].hex()}), which this node does not serve "
                                         "(supported: ipfs, ipns)", ch.protocol)
        left = answer.fetched_at + self.cache_ttl - time.time()
        ttl = max(1.0, left) if not stale else 1.0
        return Resolution(ch.value, ttl, "ens", stale=stale)

    async def close(self) -> None:
        for ns in self._clients or []:
            try:
                await ns.w3.provider.disconnect()
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        self._clients = None

    # -- cache ----------------------------------------------------------------------------------
    async def answer(self, normal: str) -> tuple[Answer, bool]:
        """(the name's answer, whether it is stale)."""
        now = time.time()
        if self.generation is not None and self.generation.value != self._seen:  # a purge somewhere
            self._seen = self.generation.value
            self._memory.clear()
        cached = self._memory.get(normal)
        if cached is None and self.store is not None:
            cached = await self._load(normal)
        if cached is not None and now - cached.fetched_at < self.cache_ttl:
            self.counts["hits"] += 1
            return cached, False
        self.counts["misses"] += 1
        try:
            fresh = await self._shared_fetch(normal)
        except NameUnavailable as exc:
            if isinstance(exc, EnsNotConfigured):
                raise
            if cached is not None and now - cached.fetched_at < self.cache_ttl + self.stale_s:
                self.counts["stale"] += 1
                log.warning("ENS %s: serving the answer of %.0f s ago (stale): %s", normal, now - cached.fetched_at,
                            exc)
                return cached, True
            raise
        return fresh, False

    async def _shared_fetch(self, normal: str) -> Answer:
        future = self._inflight.get(normal)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[normal] = future
        try:
            answer = await self._fetch(normal)
            future.set_result(answer)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._inflight[normal]
        if len(self._memory) >= MAX_ENTRIES:
            self._memory.clear()
        self._memory[normal] = answer
        if self.store is not None:
            await self._save(answer)
        return answer

    async def _load(self, normal: str) -> Answer | None:
        def load():
            row = self.store.db.execute("SELECT answer, fetched_at FROM ens_cache WHERE name = ?", [normal]).fetchone()
            return None if row is None else Answer.from_row(normal, row[0], row[1])

        answer = await self.store.run(load)
        if answer is not None:
            self._memory[normal] = answer
        return answer

    async def _save(self, answer: Answer) -> None:
        def save():
            self.store.db.execute("INSERT OR REPLACE INTO ens_cache (name, answer, fetched_at) VALUES (?, ?, ?)",
                                  [answer.name, answer.to_json(), answer.fetched_at])

        await self.store.run(save)

    async def purge(self, name: str) -> bool:
        """Forget a name's cached answer (memory and store); whether anything was there."""
        normal = normalize(name)
        found = self._memory.pop(normal, None) is not None
        if self.generation is not None:
            self.generation.update(lambda n: n + 1)
            self._seen = self.generation.value
        if self.store is not None:
            def delete():
                return self.store.db.execute("DELETE FROM ens_cache WHERE name = ?", [normal]).rowcount

            found = bool(await self.store.run(delete)) or found
        return found

    def cached(self, normal: str) -> Answer | None:
        return self._memory.get(normal)

    # -- RPC ------------------------------------------------------------------------------------
    def _ens_clients(self) -> list:
        if not self.rpc_urls:
            raise EnsNotConfigured("ENS is not configured on this node: set [ens] rpc_url (an Ethereum JSON-RPC "
                                   "URL, or HEARTH_ENS_RPC_URL) to resolve .eth names")
        if self._clients is None:
            from ens import AsyncENS
            from web3 import AsyncHTTPProvider, AsyncWeb3

            from ens import abis

            clients = []
            for url in self.rpc_urls:
                # cache_allowed_requests: eth_chainId once, not before every eth_call
                w3 = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": self.rpc_timeout},
                                                 cache_allowed_requests=True))
                # web3's own CCIP-read is off: an OffchainLookup comes back as an error, and Hearth
                # performs it through its guarded client (naming/ccip_read.py)
                w3.provider.global_ccip_read_enabled = False
                ns = AsyncENS.from_web3(w3, addr=self.registry or None)
                if self.universal_resolver:
                    ns._universal_resolver = w3.eth.contract(abi=abis.UNIVERSAL_RESOLVER,
                                                             address=w3.to_checksum_address(self.universal_resolver))
                clients.append(ns)
            self._clients = clients
        return self._clients

    async def call(self, what: str, fn):
        """fn(AsyncENS) on each RPC URL in turn until one answers; NameUnavailable if none does."""
        from web3.exceptions import ContractLogicError

        last: BaseException | None = None
        timeout = False
        for ns in self._ens_clients():
            self.counts["rpc_calls"] += 1
            try:
                return await asyncio.wait_for(fn(ns), self.rpc_timeout)
            except (ContractLogicError, NamingError):
                raise
            except asyncio.TimeoutError as exc:
                timeout, last = True, exc
            except Exception as exc:  # noqa: BLE001 - a connection refused, a bad answer...: try the next URL
                last = exc
            self.counts["rpc_failures"] += 1
        cls = EnsRpcTimeout if timeout else NameUnavailable
        raise cls(f"ENS lookup ({what}) failed on every [ens] rpc_url: {type(last).__name__}: {str(last)[:200]}")

    async def _universal(self, ns, normal: str, calldata: bytes) -> tuple[bytes | None, str | None]:
        """(the resolver's answer, the resolver) through the Universal Resolver; (None, None): no resolver."""
        from ens.utils import dns_encode_name
        from web3.exceptions import ContractLogicError

        try:
            result, resolver = await ns._universal_resolver.caller.resolve(dns_encode_name(normal), calldata)
        except ContractLogicError as exc:
            data = _revert_data(exc)
            if data[:4] in (_selector("ResolverNotFound(bytes)"), _selector("ResolverWildcardNotSupported(bytes)")):
                return None, None
            if data[:4] == bytes.fromhex("556f1830"):
                return await self._offchain(ns, normal, calldata, data)
            # the resolver itself failed (no such record, a broken resolver): no answer from it
            resolver = await self._find_resolver(ns, normal)
            return b"", resolver
        return bytes(result), resolver

    async def _offchain(self, ns, normal: str, calldata: bytes, revert: bytes):
        """EIP-3668: the resolver wants an offchain lookup (naming/ccip_read.py, guarded client)."""
        try:
            from . import ccip_read
        except ImportError:
            raise NameUnavailable(f"ENS name {normal!r} needs an offchain lookup (EIP-3668), "
                                  "which this node cannot do yet") from None
        from ens.utils import dns_encode_name

        resolver = await self._find_resolver(ns, normal)
        w3 = ns.w3
        client = ccip_read.ccip_client(self.outbound, self.settings)
        data = _selector("resolve(bytes,bytes)") + w3.codec.encode(["bytes", "bytes"],
                                                                  [dns_encode_name(normal), calldata])
        try:
            out = await ccip_read.ccip_call(w3, resolver, data, client,
                                            max_depth=int(self.settings.get("ccip_max_depth", 4)))
        except ccip_read.CcipReadError as exc:
            raise NameUnavailable(f"offchain lookup (EIP-3668) for {normal!r} failed: {exc}") from None
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                await close()
        return bytes(w3.codec.decode(["bytes"], bytes(out))[0]), resolver

    async def _find_resolver(self, ns, normal: str) -> str | None:
        from ens.utils import dns_encode_name

        resolver, _node, _offset = await ns._universal_resolver.caller.findResolver(dns_encode_name(normal))
        return None if int(resolver, 16) == 0 else resolver

    async def _fetch(self, normal: str) -> Answer:
        from ens.utils import normal_name_to_hash

        node = bytes(normal_name_to_hash(normal))

        async def contenthash(ns):
            result, resolver = await self._universal(ns, normal, CONTENTHASH_SELECTOR + node)
            if resolver is None:
                return Answer(normal, None, None, time.time())
            raw = bytes(ns.w3.codec.decode(["bytes"], result)[0]) if result else b""
            return Answer(normal, resolver, raw or None, time.time())

        return await self.call("contenthash", contenthash)

    # -- records for the API --------------------------------------------------------------------
    async def address(self, normal: str, coin_type: int = ETH_COIN) -> str | None:
        """Through the Universal Resolver as the contenthash (so offchain resolvers answer too):
        ETH by `addr(bytes32)`, other coins by `addr(bytes32,uint256)` (ENSIP-9/11)."""
        from ens.utils import normal_name_to_hash

        if coin_type == ETH_COIN:
            node = bytes(normal_name_to_hash(normal))

            async def eth(ns):
                result, _resolver = await self._universal(ns, normal, ADDR_SELECTOR + node)
                if not result:
                    return None
                from eth_utils import to_checksum_address

                value = ns.w3.codec.decode(["address"], result)[0]
                return None if int(value, 16) == 0 else to_checksum_address(value)

            return await self.call("addr", eth)

        node = bytes(normal_name_to_hash(normal))

        async def addr(ns):
            calldata = ADDR_COIN_SELECTOR + ns.w3.codec.encode(["bytes32", "uint256"], [node, coin_type])
            result, resolver = await self._universal(ns, normal, calldata)
            if not result:
                return None
            raw = bytes(ns.w3.codec.decode(["bytes"], result)[0])
            if not raw:
                return None
            if len(raw) == 20:  # an EVM address (ENSIP-11 chains)
                from eth_utils import to_checksum_address

                return to_checksum_address(raw)
            return "0x" + raw.hex()  # other coins: their binary address format (ENSIP-9), as hex

        return await self.call(f"addr({coin_type})", addr)

    async def text(self, normal: str, key: str) -> str | None:
        from ens.utils import normal_name_to_hash

        node = bytes(normal_name_to_hash(normal))

        async def text(ns):
            calldata = TEXT_SELECTOR + ns.w3.codec.encode(["bytes32", "string"], [node, key])
            result, _resolver = await self._universal(ns, normal, calldata)
            if not result:
                return None
            return ns.w3.codec.decode(["string"], result)[0] or None

        return await self.call(f"text({key})", text)

    async def reverse(self, address: str) -> dict:
        """The primary name of an address, accepted only if it resolves forward to the same address."""
        from eth_utils import is_address, to_checksum_address
        from ens.utils import address_to_reverse_domain

        if not is_address(address):
            raise InvalidName(f"{address[:100]!r} is not an Ethereum address (0x and 40 hex digits)")
        address = to_checksum_address(address)
        claimed = await self.call("name", lambda ns: ns._resolve(address_to_reverse_domain(address), "name"))
        forward = None
        if claimed:
            try:
                forward = await self.address(normalize(claimed))
            except InvalidName:
                forward = None
        verified = bool(claimed) and forward == address
        return {"address": address, "name": claimed if verified else None, "claimed": claimed or None,
                "forward_address": forward, "verified": verified}


def _revert_data(exc: BaseException) -> bytes:
    data = getattr(exc, "data", None)
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""
