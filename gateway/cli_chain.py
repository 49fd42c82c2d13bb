"""`hearth key create|import|address` (the node's ETHEREUM key, beside `hearth key gen|list` for
IPNS keys) and `hearth anchor deploy`.

Adding `hearth anchor <cmd>` elsewhere (the anchoring service's `verify`, `status`): write
`add_anchor_parsers(anchor_sub, common)` in gateway/cli_anchor.py; `add_parsers` below calls it
with the `anchor` subparsers object (also left in ANCHOR_SUBPARSERS) and `common` (adds --config
and --data-dir). Each parser you add sets `p.set_defaults(anchor_handler=fn)` with
`fn(args, config) -> int` (the exit code); `run` calls it. Nothing else to touch.

Secrets: the passphrase comes from $HEARTH_CHAIN_PASSPHRASE or [chain] passphrase_file (or a
prompt, on a terminal); a private key to import comes from stdin. Neither is printed, logged or
put in an error message.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from .config import Config

KEY_COMMANDS = ("create", "import", "address")
ANCHOR_SUBPARSERS = None  # the `hearth anchor` subparsers object, once add_parsers ran
SOURCE_PASSPHRASE_ENV = "HEARTH_CHAIN_IMPORT_PASSPHRASE"


def _subparsers_of(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public handle on a parser's subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("parser has no subcommands")


def add_parsers(sub, common) -> None:
    """Add the Ethereum key subcommands to the existing `hearth key` parser (made by
    cli_ipns.add_parsers, which must run first) and the `hearth anchor` parser."""
    global ANCHOR_SUBPARSERS
    key_parser = sub.choices["key"]
    key_help = "the node's keys: IPNS keys (gen, list; as `ipfs key`) and its Ethereum key (create, import, address)"
    key_parser.description = key_help
    for choice in sub._choices_actions:
        if choice.dest == "key":
            choice.help = key_help
    ksub = _subparsers_of(key_parser)
    create = ksub.add_parser("create", help="create the node's Ethereum key (anchoring): a keystore v3 file, "
                                            "sealed with $HEARTH_CHAIN_PASSPHRASE or [chain] passphrase_file; "
                                            "prints its address")
    common(create)
    imp = ksub.add_parser("import", help="import the node's Ethereum key: a hex private key on stdin, or "
                                         "--from another keystore v3 file; prints its address")
    imp.add_argument("--from", dest="source", metavar="KEYSTORE",
                     help=f"a keystore v3 file (its passphrase: --from-passphrase-file, ${SOURCE_PASSPHRASE_ENV}, "
                          "else the node's passphrase)")
    imp.add_argument("--from-passphrase-file", metavar="FILE", help="first line: the --from keystore's passphrase")
    common(imp)
    addr = ksub.add_parser("address", help="print the node's Ethereum address (from its keystore; no passphrase)")
    common(addr)
    for p in (create, imp):
        p.add_argument("--force", action="store_true", help="replace an existing key file (the old key is lost "
                                                            "unless you kept a copy)")

    anchor = sub.add_parser("anchor", help="on-chain anchoring of stored CIDs (Anchor contract, proofs)")
    asub = anchor.add_subparsers(dest="anchor_command", required=True)
    deploy = asub.add_parser("deploy", help="deploy the Anchor contract with the node's Ethereum key to [chain] "
                                            "rpc_url and print its address")
    deploy.add_argument("--rpc", metavar="URL", help="this RPC URL instead of [chain] rpc_url")
    deploy.set_defaults(anchor_handler=cmd_anchor_deploy)
    common(deploy)
    ANCHOR_SUBPARSERS = asub
    try:
        from .cli_anchor import add_anchor_parsers
    except ImportError:
        pass
    else:
        add_anchor_parsers(asub, common)


def handles(args) -> bool:
    """True if `run` is the command for these parsed arguments."""
    return args.command == "anchor" or (args.command == "key" and getattr(args, "key_command", None) in KEY_COMMANDS)


def _passphrase(config: Config, confirm: bool = False) -> str:
    from chain.keystore import KeystoreError, read_passphrase

    try:
        return read_passphrase(config["chain"])
    except KeystoreError:
        if not sys.stdin.isatty() or not sys.stderr.isatty():
            raise
    first = getpass.getpass("passphrase for the node's Ethereum key: ")
    if confirm and getpass.getpass("again: ") != first:
        raise SystemExit("error: the passphrases differ")
    return first


def _private_key_from_stdin() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("private key (hex, not echoed): ")
    return sys.stdin.read(4096)


def cmd_key(args, config: Config) -> int:
    from chain import keystore

    path = keystore.keystore_path(config["chain"], config.data_dir)
    if args.key_command == "address":
        print(keystore.read_address(path))
        return 0
    if path.exists() and not args.force:
        raise keystore.KeystoreError(f"{path} already exists (address {keystore.read_address(path)}); "
                                     "--force replaces it")
    if args.key_command == "create":
        address = keystore.create_key(path, _passphrase(config, confirm=True), overwrite=args.force)
    elif args.source:
        if args.from_passphrase_file:
            source_pass = keystore.read_passphrase({"passphrase_file": args.from_passphrase_file}, env={})
        else:
            source_pass = os.environ.get(SOURCE_PASSPHRASE_ENV) or _passphrase(config)
        address = keystore.import_keystore(path, args.source, source_pass, _passphrase(config), overwrite=args.force)
    else:
        address = keystore.import_private_key(path, _private_key_from_stdin(), _passphrase(config, confirm=True),
                                              overwrite=args.force)
    print(address)
    print(f"the node's Ethereum key is sealed in {path} (keystore v3)", file=sys.stderr)
    return 0


def cmd_anchor_deploy(args, config: Config) -> int:
    from chain.contract import deploy_anchor, load_artifact
    from chain.keystore import load_node_account
    from chain.provider import EMBEDDED, connect, redact, rpc_urls

    chain_cfg = config["chain"]
    urls = [args.rpc] if args.rpc else rpc_urls(chain_cfg["rpc_url"])
    if urls == [EMBEDDED]:
        print('error: [chain] rpc_url is "embedded": the in-process dev chain deploys its own contract at each start; '
              "give --rpc URL or set [chain] rpc_url", file=sys.stderr)
        return 1
    account = load_node_account(chain_cfg, config.data_dir)

    async def go():
        w3 = await connect(urls, chain_cfg["rpc_timeout"], chain_cfg["chain_id"])
        try:
            chain_id = await w3.eth.chain_id
            address = await deploy_anchor(w3, account, chain_cfg["max_fee_gwei"] * 10**9)
            return chain_id, address, redact(w3.provider.urls[w3.provider.current])
        finally:
            await w3.provider.disconnect()

    chain_id, address, via = asyncio.run(go())
    print(address)
    print(f"Anchor ({load_artifact()['compiler']['version']}) deployed on chain {chain_id} via {via} by "
          f"{account.address}; set [chain] anchor_contract = \"{address}\"", file=sys.stderr)
    return 0


def run(args, config: Config) -> int:
    from chain.contract import ChainError
    from chain.keystore import KeystoreError
    from chain.provider import RPCUnavailable

    try:
        if args.command == "key":
            return cmd_key(args, config)
        return args.anchor_handler(args, config)
    except (KeystoreError, ChainError, RPCUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
