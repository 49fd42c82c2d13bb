"""The `hearth` command line."""
from __future__ import annotations

import argparse
import logging
import sys

from .config import Config, ConfigError, load_config


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help="config file (default: $HEARTH_CONFIG, else built-in defaults)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (overrides [server] data_dir)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hearth", description="Hearth: a self-hosted node for the decentralized web.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node")
    _common(serve)
    serve.add_argument("--host", help="listen address (overrides [server] host)")
    serve.add_argument("--port", type=int, help="listen port (overrides [server] port)")
    token = sub.add_parser("token", help="manage API bearer tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--operator", action="store_true",
                        help="the token may also run gc and read the repo state (/api/v1/operator/...)")
    _common(create)
    lst = tsub.add_parser("list", help="list tokens (never their secrets)")
    _common(lst)
    revoke = tsub.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name")
    _common(revoke)
    gc = sub.add_parser("gc", help="remove blocks no pin protects (asks the running node, if there is one)")
    _common(gc)
    gc.add_argument("--json", action="store_true", help="print the result as JSON")
    repo = sub.add_parser("repo", help="the node's store")
    rsub = repo.add_subparsers(dest="repo_command", required=True)
    stat = rsub.add_parser("stat", help="size, blocks, pins, records, gc and reconciliation state")
    _common(stat)
    stat.add_argument("--json", action="store_true", help="print JSON")
    verify = rsub.add_parser("verify", help="check every block of every live record and pin request "
                                            "(present, and hashing to its CID); exit 1 if any is not")
    _common(verify)
    from .cli_ipns import add_parsers as add_ipns_parsers

    add_ipns_parsers(sub, _common)  # hearth key gen|list, hearth name publish
    from .cli_chain import add_parsers as add_chain_parsers

    add_chain_parsers(sub, _common)  # hearth key create|import|address (Ethereum key), hearth anchor ...
    from .cli_ens import add_parsers as add_ens_parsers

    add_ens_parsers(sub, _common)  # hearth ens purge NAME
    return parser


def _config(args) -> Config:
    config = load_config(args.config)
    if args.data_dir:
        config.set("server", "data_dir", args.data_dir)
    if getattr(args, "host", None):
        config.set("server", "host", args.host)
    if getattr(args, "port", None) is not None:
        config.set("server", "port", args.port)
    return config


def _store(config: Config):
    from storage.metadata import MetadataStore

    store = MetadataStore(config.data_dir / "hearth.sqlite")
    store.migrate()
    return store


def cmd_token(args, config: Config) -> int:
    store = _store(config)
    try:
        if args.token_command == "create":
            try:
                token = store.create_token(args.name, "operator" if args.operator else "user")
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(token)
            print(f"token {args.name!r} created; it is shown only once", file=sys.stderr)
        elif args.token_command == "list":
            rows = store.list_tokens()
            if not rows:
                print("no tokens")
            for r in rows:
                state = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
                print(f"{r['name']}\t{r['scope']}\tcreated {r['created_at']}\tlast used {r['last_used_at'] or 'never'}\t{state}")
        elif args.token_command == "revoke":
            if not store.revoke_token(args.name):
                print(f"error: no active token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"token {args.name!r} revoked")
    finally:
        store.close()
    return 0


def _loop_factory(choice: str, log: logging.Logger):
    """uvloop: ~25% less CPU per small request than asyncio's loop, measured on the
    cold small-file pass (bench/bench_gateway.py --only small)."""
    if choice != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning('[server] event_loop = "uvloop" but uvloop is not installed: using asyncio\'s loop')
        return None
    return uvloop.new_event_loop


def cmd_serve(config: Config, args) -> int:
    import asyncio
    import math

    # the supervisor imports only what it needs: it stays a small process
    from .data_dir import DataDirBusy, DataDirLock, remove_api_file, write_api_file
    from .log_config import configure_logging
    from .workers import Supervisor, exit_with_supervisor, serve_argv, signal_ready, worker_count, worker_of

    server = config["server"]
    worker = worker_of()  # (index, count) when started by a supervisor
    if worker is not None:
        exit_with_supervisor()
    count = worker[1] if worker else worker_count(server["workers"])
    configure_logging(server["log_level"], f"w{worker[0]}" if worker else "")
    log = logging.getLogger("hearth")
    host, port = server["host"], server["port"]
    lock = None
    if worker is None:  # the process that owns the data dir: a lone server, or the supervisor
        try:
            lock = DataDirLock(config.data_dir).acquire()
        except DataDirBusy as exc:
            log.error("%s: stop it first, or give this node another --data-dir", exc)
            return 1
    local = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host

    def announce(bound: int) -> None:
        write_api_file(config.data_dir, f"http://{local}:{bound}")
        log.info("Hearth serving on http://%s:%s (engine=%s, data_dir=%s%s)", host, bound, config["storage"]["engine"],
                 config.data_dir, f", {count} workers" if count > 1 else "")

    try:
        if worker is None and count > 1:
            try:
                supervisor = Supervisor(serve_argv(args.config, config.data_dir), count, host, port,
                                        drain_seconds=30)
            except OSError as exc:
                log.error("cannot serve on %s:%s: %s", host, port, exc.strerror or exc)
                return 1
            code = supervisor.run(on_ready=announce)
            log.info("Hearth stopped")
            return code
        # one server process: the whole node, or one worker of several (limits shared out)
        from identity.keyring import KeyringError

        from .app import create_app
        from .server import Limits, fit_connections_to_fd_limit, serve

        for section, key in (("server", "max_connections"), ("storage", "max_concurrent_uploads")):
            config.set(section, key, math.ceil(config[section][key] / count))
        limits = Limits(header_timeout=server["header_timeout"], body_idle_timeout=server["body_idle_timeout"],
                        keepalive_timeout=server["keepalive_timeout"],
                        max_connections=fit_connections_to_fd_limit(
                            server["max_connections"], engine_fds=160 if config["storage"]["engine"] == "kubo" else 32))

        def listening(runner) -> None:
            # called once the socket listens, so the URL is live when it is announced
            if worker is not None:
                signal_ready()
            else:
                announce(runner.addresses[0][1] if runner.addresses else port)

        try:
            with asyncio.Runner(loop_factory=_loop_factory(server["event_loop"], log)) as runner:
                runner.run(serve(create_app(config, workers=count), host, port, limits, shutdown_timeout=30,
                                 on_listening=listening, reuse_port=worker is not None, worker=worker is not None))
        except OSError as exc:
            log.error("cannot serve on %s:%s: %s", host, port, exc.strerror or exc)
            return 1
        except KeyringError as exc:  # the node's sealed keys do not open: say why, no traceback
            log.error("%s; set HEARTH_KEY_PASSPHRASE or [server] key_passphrase_file to the passphrase that "
                      "sealed them", exc)
            return 1
        if worker is None:
            log.info("Hearth stopped")
        return 0
    finally:
        if lock is not None:
            remove_api_file(config.data_dir)
            lock.release()


# --- gc and repo: ask the running node, or work on the data dir directly ------------------
def _ask_node(config: Config, method: str, path: str) -> dict:
    """Call an operator endpoint of the node that owns the data dir."""
    import json
    import urllib.error
    import urllib.request

    from .data_dir import operator_key, read_api_file

    url = read_api_file(config.data_dir)
    if url is None:
        raise SystemExit(f"error: a node holds {config.data_dir} but has not written its address yet; retry")
    req = urllib.request.Request(url + path, method=method,
                                 headers={"Authorization": f"Bearer {operator_key(config.data_dir)}"})
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"error: the node answered {exc.code}: {exc.read().decode(errors='replace')[:500]}") from None
    except OSError as exc:
        raise SystemExit(f"error: cannot reach the node at {url}: {exc}") from None


def _offline(config: Config, work):
    """Run work(app) on an app that is set up but not serving (the data dir is ours)."""
    import asyncio

    from aiohttp import web

    from .app import create_app

    async def go():
        runner = web.AppRunner(create_app(config, background=False), handle_signals=False)
        await runner.setup()  # migrations, engine start, reconciliation
        try:
            return await work(runner.app)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def _with_node_or_offline(config: Config, method: str, path: str, work):
    from .data_dir import DataDirBusy, DataDirLock

    try:
        lock = DataDirLock(config.data_dir).acquire()
    except DataDirBusy:
        return _ask_node(config, method, path)
    try:
        return _offline(config, work)
    finally:
        lock.release()


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def cmd_gc(args, config: Config) -> int:
    import json

    from .keys import COLLECTOR

    async def work(app):
        return (await app[COLLECTOR].collect("operator")).as_json()

    result = _with_node_or_offline(config, "POST", "/api/v1/operator/gc", work)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"removed {result['removed_blocks']} blocks, freed {_size(result['freed_bytes'])} "
              f"({_size(result['size_before'])} -> {_size(result['size_after'])}) in {result['seconds']:.2f} s")
    return 0


def cmd_repo(args, config: Config) -> int:
    import asyncio
    import json

    if args.repo_command == "stat":
        from .operator_api import repo_state

        state = _with_node_or_offline(config, "GET", "/api/v1/operator/repo", repo_state)
        if args.json:
            print(json.dumps(state, indent=2))
            return 0
        gc, rec = state["gc"], state["reconciliation"]
        last = gc["last"]
        print(f"engine          {state['engine']}")
        print(f"size            {_size(state['size_bytes'])} ({state['size_bytes']} bytes)")
        print(f"blocks          {state['blocks']}")
        print(f"pins            {state['pins']}")
        print(f"content records {state['content_records']['live']} live, {state['content_records']['removed']} removed")
        print("pin requests    " + ", ".join(f"{n} {s}" for s, n in state["pin_requests"].items()))
        print(f"gc              threshold {_size(gc['threshold_bytes'])} ({gc['watermark_percent']}% of "
              f"{_size(gc['max_bytes'])}), every {gc['period_s']} s; " +
              (f"last: {last['reason']}, removed {last['removed_blocks']} blocks" if last else "not run yet"))
        missing = rec.get("counts", {}).get("missing", 0)
        print("reconciliation  " + (rec.get("state") or f"done: {missing} records with missing content"))
        scrub = state.get("scrub")
        if scrub:
            if scrub["state"] == "off":
                print("scrub           off ([storage] scrub_rate = 0)")
            else:
                last_pass = scrub["last_pass_completed_at"]
                print(f"scrub           {scrub['state']}, {_size(scrub['rate_bytes_per_s'])}/s, {scrub['passes']} passes"
                      + (f" (last ended {last_pass})" if last_pass else "")
                      + (f"; {scrub['corrupt_blocks']} corrupt blocks found since it started"
                         if scrub["state"] == "running" else ""))
            for item in scrub["corrupt"]:
                print(f"  corrupt block {item['cid']} (multihash {item['multihash']}), found {item['found_at']}")
        return 0

    from storage.engine import EngineError
    from storage.metadata import MetadataStore
    from storage.verify import verify_content

    from .app import make_engine
    from .metrics import Metrics

    async def verify():
        # local reads only (a missing block must be reported, not fetched), and no
        # engine.start(): it would clear the staging and temp files of a live node
        config.set("gateway", "serve", "local")
        # and every block hashed as it is read, damaged ones moved aside as the read path
        # did before verify_on_read existed (verify_content hashes them itself too)
        config.set("storage", "verify_on_read", "always")
        store = MetadataStore(config.data_dir / "hearth.sqlite")
        engine = make_engine(config, Metrics())
        try:
            await store.run(store.migrate)
            return await verify_content(store, engine)
        finally:
            await engine.close()
            store.close()

    try:
        report = asyncio.run(verify())
    except EngineError as exc:
        print(f"error: storage engine unavailable: {exc}", file=sys.stderr)
        return 2
    for what, items in (("missing", report.missing), ("corrupt", report.corrupt), ("unreadable", report.unreadable)):
        for root, detail in items:
            print(f"{what}: {root} (block {detail})")
    print(f"checked {report.records} content records and {report.pin_requests} pin requests: {report.roots} roots, "
          f"{report.blocks} blocks; {len(report.missing)} missing, {len(report.corrupt)} corrupt, "
          f"{len(report.unreadable)} unreadable")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        return cmd_token(args, config)
    if args.command == "gc":
        return cmd_gc(args, config)
    if args.command == "repo":
        return cmd_repo(args, config)
    from .cli_chain import handles as chain_handles

    if chain_handles(args):
        from .cli_chain import run as run_chain

        return run_chain(args, config)
    if args.command == "ens":
        from .cli_ens import run as run_ens

        return run_ens(args, config)
    if args.command in ("key", "name"):
        from .cli_ipns import run as run_ipns

        return run_ipns(args, config)
    return cmd_serve(config, args)


if __name__ == "__main__":
    sys.exit(main())
