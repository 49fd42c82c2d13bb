"""`hearth ens purge NAME`: forget the cached answer of an ENS name. Like `hearth gc`, asks the
running node that holds the data dir (DELETE /api/v1/operator/ens/{name}, with the data dir's
operator.key), or, when none runs, removes it from the data dir's metadata store."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from .config import Config


def add_parsers(sub, common) -> None:
    ens = sub.add_parser("ens", help="ENS names: forget cached answers (purge)")
    esub = ens.add_subparsers(dest="ens_command", required=True)
    purge = esub.add_parser("purge", help="forget a name's cached answer (the next request asks the chain)")
    purge.add_argument("name")
    purge.add_argument("--json", action="store_true", help="print JSON")
    common(purge)


def _offline(config: Config, name: str) -> dict:
    from naming.ens import EnsNameSystem, normalize
    from storage.metadata import MetadataStore

    async def go():
        store = MetadataStore(config.data_dir / "hearth.sqlite")
        try:
            await store.run(store.migrate)
            return {"name": normalize(name), "purged": await EnsNameSystem(config["ens"], store).purge(name)}
        finally:
            store.close()

    return asyncio.run(go())


def run(args, config: Config) -> int:
    from naming import InvalidName

    from .cli_ipns import _ask
    from .data_dir import DataDirBusy, DataDirLock

    try:
        try:
            lock = DataDirLock(config.data_dir).acquire()
        except DataDirBusy:
            out = _ask(config, "DELETE", "/api/v1/operator/ens/" + quote(args.name, safe=""))
        else:
            try:
                out = _offline(config, args.name)
            finally:
                lock.release()
    except InvalidName as exc:
        print(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{out['name']}: {'purged' if out['purged'] else 'nothing cached'}")
    return 0
