"""The `hearth` command line."""
from __future__ import annotations

import argparse
import logging
import sys

from aiohttp import web

from storage.metadata import MetadataStore

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
    _common(create)
    lst = tsub.add_parser("list", help="list tokens (never their secrets)")
    _common(lst)
    revoke = tsub.add_parser("revoke", help="revoke a token")
    revoke.add_argument("name")
    _common(revoke)
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


def _store(config: Config) -> MetadataStore:
    store = MetadataStore(config.data_dir / "hearth.sqlite")
    store.migrate()
    return store


def cmd_token(args, config: Config) -> int:
    store = _store(config)
    try:
        if args.token_command == "create":
            try:
                token = store.create_token(args.name)
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
                print(f"{r['name']}\tcreated {r['created_at']}\tlast used {r['last_used_at'] or 'never'}\t{state}")
        elif args.token_command == "revoke":
            if not store.revoke_token(args.name):
                print(f"error: no active token named {args.name!r}", file=sys.stderr)
                return 1
            print(f"token {args.name!r} revoked")
    finally:
        store.close()
    return 0


def cmd_serve(config: Config) -> int:
    from .app import create_app

    logging.basicConfig(level=config["server"]["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("hearth")
    app = create_app(config)
    host, port = config["server"]["host"], config["server"]["port"]

    def announce(_banner: str) -> None:
        # run_app calls this once the socket is listening, so the URL is live when logged
        log.info("Hearth serving on http://%s:%s (engine=%s, data_dir=%s)", host, port,
                 config["storage"]["engine"], config.data_dir)
    # run_app stops accepting on SIGINT/SIGTERM and gives in-flight requests
    # shutdown_timeout seconds to finish; an upload cut short is never recorded.
    web.run_app(app, host=host, port=port, print=announce, shutdown_timeout=30, access_log=None,
                handle_signals=True)
    log.info("Hearth stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        return cmd_token(args, config)
    return cmd_serve(config)


if __name__ == "__main__":
    sys.exit(main())
