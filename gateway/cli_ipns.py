"""`hearth key gen|list` and `hearth name publish`, as Kubo's `ipfs key` and `ipfs name
publish`. Like `hearth gc`, they ask the running node that holds the data dir (with
the data dir's operator.key: the operator's keys, owner "@node") or, when none
runs, work on the data dir themselves."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys

from .config import Config

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def duration(text: str) -> int:
    """Seconds, from a Go duration ("48h", "1h30m", "90s") or a plain number of seconds."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 48h, 1h30m, 90s, or seconds)")
    return int(total)


def add_parsers(sub, common) -> None:
    key = sub.add_parser("key", help="the node's IPNS keys (as `ipfs key`)")
    ksub = key.add_subparsers(dest="key_command", required=True)
    gen = ksub.add_parser("gen", help="make a key and print its IPNS name")
    gen.add_argument("name")
    gen.add_argument("--type", default="ed25519", choices=["ed25519", "rsa", "secp256k1", "ecdsa"])
    gen.add_argument("--size", type=int, default=2048, help="RSA key size in bits (2048-8192)")
    gen.add_argument("--owner", help="make it for this token's name (default: the operator's keys)")
    common(gen)
    lst = ksub.add_parser("list", help="list keys: IPNS name, key name, type, owner, what it has published")
    lst.add_argument("--json", action="store_true", help="print JSON")
    common(lst)
    name = sub.add_parser("name", help="IPNS names (as `ipfs name`)")
    nsub = name.add_subparsers(dest="name_command", required=True)
    pub = nsub.add_parser("publish", help="publish a content path under a key's IPNS name")
    pub.add_argument("path", help="/ipfs/{cid}[/path], /ipns/{name}[/path], or a CID")
    pub.add_argument("--key", default="self", help="the key to publish with (default: self, the node's peer key)")
    pub.add_argument("--owner", help="a token's key rather than the operator's")
    pub.add_argument("--lifetime", type=duration, help="how long the record is valid (default: [ipns] lifetime, 48h)")
    pub.add_argument("--ttl", type=duration, help="how long resolvers may cache it (default: [ipns] ttl, 5m)")
    pub.add_argument("--json", action="store_true", help="print JSON")
    common(pub)


def _ask(config: Config, method: str, path: str, body: dict | None = None) -> dict:
    import urllib.error
    import urllib.request

    from .data_dir import operator_key, read_api_file

    url = read_api_file(config.data_dir)
    if url is None:
        raise SystemExit(f"error: a node holds {config.data_dir} but has not written its address yet; retry")
    headers = {"Authorization": f"Bearer {operator_key(config.data_dir)}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            text = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            pass
        raise SystemExit(f"error: {text[:500]}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot reach the node at {url}: {exc}") from None


def _offline(config: Config, work):
    """Run work(keystore) on the data dir (no node runs): the store and the keyring only."""
    from identity.keyring import keyring_for
    from naming.ipns.keystore import Keystore
    from storage.metadata import MetadataStore

    from .peer_id import peer_seed

    async def go():
        store = MetadataStore(config.data_dir / "hearth.sqlite")
        try:
            await store.run(store.migrate)
            keyring = keyring_for(config)
            keystore = Keystore(store, keyring, lambda: peer_seed(config.data_dir, keyring),
                                lifetime=config["ipns"]["lifetime"], ttl=config["ipns"]["ttl"])
            return await work(keystore)
        finally:
            store.close()

    return asyncio.run(go())


def _node_or_offline(config: Config, method: str, path: str, body: dict | None, work):
    from .data_dir import DataDirBusy, DataDirLock

    try:
        lock = DataDirLock(config.data_dir).acquire()
    except DataDirBusy:
        return _ask(config, method, path, body)
    try:
        return _offline(config, work)
    finally:
        lock.release()


def _query(owner: str | None, **extra) -> str:
    from urllib.parse import urlencode

    params = {k: v for k, v in dict(extra, owner=owner).items() if v}
    return ("?" + urlencode(params)) if params else ""


def run(args, config: Config) -> int:
    from identity.keyring import KeyringError
    from naming.ipns import store as db
    from naming.ipns.keystore import KeyExists, KeyNotFound, key_json

    try:
        if args.command == "key" and args.key_command == "gen":
            async def gen(keystore):
                return key_json(await keystore.generate(args.owner or db.NODE_OWNER, args.name, args.type, args.size))

            out = _node_or_offline(config, "POST", "/api/v1/keys" + _query(args.owner),
                                   {"name": args.name, "type": args.type, "size": args.size}, gen)
            print(out["id"])
            return 0
        if args.command == "key":  # list
            async def lst(keystore):
                return {"keys": [dict(key_json(r), owner=r["owner"]) for r in await keystore.list(None)]}

            out = _node_or_offline(config, "GET", "/api/v1/keys?all=true", None, lst)
            if args.json:
                print(json.dumps(out["keys"], indent=2))
                return 0
            for k in out["keys"]:
                pub = k.get("published")
                state = f"{pub['value']} (sequence {pub['sequence']}, valid until {pub['validity']})" if pub else "-"
                print(f"{k['id']}\t{k['name']}\t{k['type']}\t{k['owner']}\t{state}")
            return 0

        async def publish(keystore):
            return await keystore.publish(args.owner or db.NODE_OWNER, args.key, args.path, args.lifetime, args.ttl)

        body = {"key": args.key, "value": args.path}
        for field in ("lifetime", "ttl"):
            if getattr(args, field) is not None:
                body[field] = getattr(args, field)
        out = _node_or_offline(config, "POST", "/api/v1/names" + _query(args.owner), body, publish)
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"Published to {out['name']}: {out['value']}")
        return 0
    except (KeyExists, KeyNotFound, KeyringError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
