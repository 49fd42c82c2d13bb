"""Real ENS on a test chain (anvil): ENSRegistry (npm @ensdomains/ens@0.6.2) and PublicResolver
(npm @ensdomains/resolver@0.3.1), both from their npm artifacts (`npm pack`ed by
scripts/install-test-deps.sh into the chain tools dir: installing them would pull an ancient
solc), the project's own Universal Resolver (contracts/UniversalResolver.sol, chain/artifacts/)
put at the address web3 8 hard-codes with `anvil_setCode`, and a wildcard (ENSIP-10) resolver for
tests (contracts/test/TestWildcardResolver.sol).

    ens = EnsChain.deploy(anvil)
    ens.register("mysite.eth")                       # owned by the dev account, PublicResolver set
    ens.set_contenthash("mysite.eth", contenthash_ipfs(cid))
    ens.set_addr("mysite.eth", addr); ens.set_text("mysite.eth", "url", "https://...")
    ens.set_reverse(addr, "mysite.eth")              # addr's primary name (reverse record)
    ens.wildcard("wild.eth", addr, contenthash)      # every *.wild.eth answers through it
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

from storage.cid import CID, encode_varint
from tests.support.anvil import TOOLS

ROOT = Path(__file__).resolve().parents[2]
NPM_PACKS = {"ENSRegistry": ("ensdomains-ens-0.6.2.tgz", "package/build/contracts/ENSRegistry.json"),
             "PublicResolver": ("ensdomains-resolver-0.3.1.tgz", "package/build/contracts/PublicResolver.json")}
PACK_DIR = TOOLS / "ens-artifacts"
UNIVERSAL_RESOLVER_ADDR = "0xeEeEEEeE14D718C2B47D9923Deab1335E144EeEe"  # web3 8's ens.constants
ZERO = b"\0" * 32


def npm_artifact(name: str) -> dict:
    tgz, member = NPM_PACKS[name]
    path = PACK_DIR / tgz
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run scripts/install-test-deps.sh (npm pack of the ENS artifacts)")
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile(member))


def local_artifact(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def contenthash_ipfs(cid: CID | str) -> bytes:
    """EIP-1577: ipfs-ns (0xe3) + the binary CIDv1."""
    return encode_varint(0xE3) + CID.parse(str(cid)).v1().to_bytes()


def contenthash_ipns(key_cid: CID | str) -> bytes:
    """EIP-1577: ipns-ns (0xe5) + the binary libp2p-key CIDv1."""
    return encode_varint(0xE5) + CID.parse(str(key_cid)).v1().to_bytes()


class EnsChain:
    def __init__(self, anvil, w3, registry, resolver, universal, account):
        self.anvil, self.w3, self.registry, self.resolver, self.universal = anvil, w3, registry, resolver, universal
        self.account = account

    @classmethod
    def deploy(cls, anvil) -> "EnsChain":
        from web3 import HTTPProvider, Web3

        w3 = Web3(HTTPProvider(anvil.rpc_url))
        account = w3.eth.accounts[0]
        w3.eth.default_account = account

        def deploy(artifact, *args):
            bytecode = artifact.get("bytecode") or artifact["deployedBytecode"]
            contract = w3.eth.contract(abi=artifact["abi"], bytecode=bytecode)
            receipt = w3.eth.wait_for_transaction_receipt(contract.constructor(*args).transact())
            return w3.eth.contract(address=receipt.contractAddress, abi=artifact["abi"])

        registry = deploy(npm_artifact("ENSRegistry"))
        resolver = deploy(npm_artifact("PublicResolver"), registry.address)
        ur_artifact = local_artifact("chain/artifacts/UniversalResolver.json")
        ur = deploy(ur_artifact, registry.address)  # immutables (the registry) live in its runtime code
        code = w3.eth.get_code(ur.address)
        anvil.rpc("anvil_setCode", [UNIVERSAL_RESOLVER_ADDR, "0x" + bytes(code).hex()])
        universal = w3.eth.contract(address=UNIVERSAL_RESOLVER_ADDR, abi=ur_artifact["abi"])
        chain = cls(anvil, w3, registry, resolver, universal, account)
        chain._deploy = deploy
        chain.register("eth", resolver=None)
        chain.register("reverse", resolver=None)
        chain.register("addr.reverse", resolver=None)
        return chain

    # -- helpers -------------------------------------------------------------------------------
    def _wait(self, tx) -> None:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        assert receipt.status == 1, receipt

    @staticmethod
    def namehash(name: str) -> bytes:
        from ens.utils import normal_name_to_hash

        return bytes(normal_name_to_hash(name)) if name else ZERO

    def register(self, name: str, owner: str | None = None, resolver="public") -> None:
        """Give `name` (and any missing parent) to the dev account, with the PublicResolver
        (resolver="public"), a given resolver address, or none (resolver=None)."""
        from eth_utils import keccak

        labels = name.split(".")
        label, parent = labels[0], ".".join(labels[1:])
        if parent and self.registry.functions.owner(self.namehash(parent)).call() == "0x" + "0" * 40:
            self.register(parent, resolver=None)
        self._wait(self.registry.functions.setSubnodeOwner(self.namehash(parent), keccak(text=label),
                                                           self.account).transact())
        if resolver is not None:
            address = self.resolver.address if resolver == "public" else resolver
            self._wait(self.registry.functions.setResolver(self.namehash(name), address).transact())
        if owner is not None and owner != self.account:
            self._wait(self.registry.functions.setOwner(self.namehash(name), owner).transact())

    def set_resolver(self, name: str, address: str) -> None:
        self._wait(self.registry.functions.setResolver(self.namehash(name), address).transact())

    def set_addr(self, name: str, address: str, coin_type: int | None = None) -> None:
        node = self.namehash(name)
        if coin_type is None:
            self._wait(self.resolver.functions.setAddr(node, address).transact())
        else:  # ENSIP-9: the coin's own binary address format (bytes)
            value = bytes.fromhex(address[2:]) if isinstance(address, str) else address
            fn = self.resolver.get_function_by_signature("setAddr(bytes32,uint256,bytes)")
            self._wait(fn(node, coin_type, value).transact())

    def set_text(self, name: str, key: str, value: str) -> None:
        self._wait(self.resolver.functions.setText(self.namehash(name), key, value).transact())

    def set_contenthash(self, name: str, value: bytes) -> None:
        self._wait(self.resolver.functions.setContenthash(self.namehash(name), value).transact())

    def set_reverse(self, address: str, name: str) -> None:
        """`{address}.addr.reverse` -> name (the PublicResolver's name record)."""
        node_name = f"{address[2:].lower()}.addr.reverse"
        self.register(node_name)
        self._wait(self.resolver.functions.setName(self.namehash(node_name), name).transact())

    def wildcard(self, name: str, address: str | None = None, contenthash: bytes = b""):
        """Register `name` with a fresh TestWildcardResolver answering for it and every name under it."""
        contract = self._deploy(local_artifact("tests/support/artifacts/TestWildcardResolver.json"))
        if address:
            self._wait(contract.functions.setAddr(address).transact())
        if contenthash:
            self._wait(contract.functions.setContenthash(contenthash).transact())
        self.register(name, resolver=contract.address)
        return contract

    def offchain(self, name: str, urls: list[str]):
        """Register `name` with a fresh TestOffchainResolver (EIP-3668) pointing at gateway `urls`."""
        contract = self._deploy(local_artifact("tests/support/artifacts/TestOffchainResolver.json"))
        self._wait(contract.functions.setUrls(urls).transact())
        self.register(name, resolver=contract.address)
        return contract
