"""A local ENS to try the node's ENS support with (README "ENS names"): anvil with the real ENS
contracts (tests/support/ens.py: ENSRegistry and PublicResolver from npm, the project's Universal
Resolver), and names with a contenthash.

    .venv/bin/python bench/ens_demo.py up [--port 8545] &     # anvil + ENS; prints the node's settings
    .venv/bin/python bench/ens_demo.py set mysite.eth CID     # register mysite.eth, contenthash ipfs://CID

`up` prints `HEARTH_ENS_RPC_URL`, `HEARTH_ENS_REGISTRY` and `HEARTH_ENS_UNIVERSAL_RESOLVER` lines
(also written to --env-file, to source before `hearth serve`) and runs until stopped (Ctrl-C or
SIGTERM); `set` reads the chain's addresses from --state. Needs scripts/install-test-deps.sh.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.anvil import Anvil  # noqa: E402
from tests.support.ens import EnsChain, contenthash_ipfs, local_artifact, npm_artifact  # noqa: E402

STATE = "/tmp/hearth-ens-demo.json"
ENV_FILE = "/tmp/hearth-ens-demo.env"


def up(args) -> int:
    anvil = Anvil()
    anvil.port = args.port
    anvil.start()
    try:
        chain = EnsChain.deploy(anvil)
        # the Universal Resolver at an address of its own, named by [ens] universal_resolver
        ur = chain._deploy(local_artifact("chain/artifacts/UniversalResolver.json"), chain.registry.address)
        Path(args.state).write_text(json.dumps({"rpc_url": anvil.rpc_url, "registry": chain.registry.address,
                                                "resolver": chain.resolver.address, "universal_resolver": ur.address,
                                                "account": chain.account}))
        env = (f"HEARTH_ENS_RPC_URL={anvil.rpc_url}\nHEARTH_ENS_REGISTRY={chain.registry.address}\n"
               f"HEARTH_ENS_UNIVERSAL_RESOLVER={ur.address}\n")
        Path(args.env_file).write_text(env)
        print(env + f"(written to {args.env_file}; stop with Ctrl-C)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
    finally:
        anvil.cleanup()
    return 0


def set_name(args) -> int:
    from web3 import HTTPProvider, Web3

    state = json.loads(Path(args.state).read_text())
    w3 = Web3(HTTPProvider(state["rpc_url"]))
    w3.eth.default_account = state["account"]
    registry = w3.eth.contract(address=state["registry"], abi=npm_artifact("ENSRegistry")["abi"])
    resolver = w3.eth.contract(address=state["resolver"], abi=npm_artifact("PublicResolver")["abi"])
    chain = EnsChain(None, w3, registry, resolver, None, state["account"])
    chain.register(args.name)
    value = contenthash_ipfs(args.cid)
    chain.set_contenthash(args.name, value)
    print(f"{args.name}: resolver {resolver.address}, contenthash 0x{value.hex()} (ipfs://{args.cid})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state", default=STATE, help="the chain's addresses (written by up, read by set)")
    sub = p.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="start anvil with ENS deployed")
    u.add_argument("--port", type=int, default=8545)
    u.add_argument("--env-file", default=ENV_FILE)
    s = sub.add_parser("set", help="register NAME (PublicResolver) with contenthash ipfs://CID")
    s.add_argument("name")
    s.add_argument("cid")
    args = p.parse_args()
    return up(args) if args.command == "up" else set_name(args)


if __name__ == "__main__":
    sys.exit(main())
