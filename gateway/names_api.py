"""The node's own IPNS keys and names, for bearer tokens:

    POST /api/v1/keys     {"name", "type"?: ed25519|rsa|secp256k1|ecdsa, "size"?: RSA bits}
                          -> 201 the key (its IPNS name in "id")
    GET  /api/v1/keys     the caller's keys, with what each has published
    POST /api/v1/names    {"key"?: "self" for the operator, "value": "/ipfs/{cid}[/path]" or
                          "/ipns/{name}[/path]", "lifetime"?: s, "ttl"?: s} -> 200 the new record
    GET  /api/v1/names    the caller's published names

Who may use which key: a token owns the keys it creates, and publishes only with
those (another token's key of the same name is a different key). The data dir's
operator.key (what the CLI sends to a running node) acts for the operator, owner
"@node": its keys, among them `self`, the node's peer key; with `?owner=NAME` it
acts on a token's keys (`hearth key list` shows every owner's). Anonymous callers
(`[auth] anonymous_uploads`) have no keys.
"""
from __future__ import annotations

import hmac

from aiohttp import web

from identity.keyring import KeyringError
from naming.ipns import store as db
from naming.ipns.keys import BadKey
from naming.ipns.keystore import Keystore, KeyExists, KeyNotFound, key_json

from .auth import ANONYMOUS, bearer_token, require_owner
from .errors import HTTPError, bad_request
from .json_body import BadJSON, parse_json
from .keys import IPNS, KEYSTORE, OPERATOR_KEY

MAX_BODY = 64 * 1024


async def caller(request: web.Request) -> str:
    """The owner the request acts for."""
    token = bearer_token(request)
    if token is not None and hmac.compare_digest(token.encode(), request.app[OPERATOR_KEY].encode()):
        owner = request.query.get("owner")
        return owner if owner else db.NODE_OWNER
    owner = await require_owner(request)
    if owner == ANONYMOUS and token is None:
        raise HTTPError(401, "unauthorized", "IPNS keys belong to tokens: a bearer token is required",
                        {"WWW-Authenticate": 'Bearer realm="hearth"'})
    return owner


async def _body(request: web.Request) -> dict:
    body = await request.read()
    try:
        data = parse_json(body, max_bytes=MAX_BODY)
    except BadJSON as exc:
        raise HTTPError(exc.status, "invalid_json" if exc.status == 400 else "too_large", exc.message) from None
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object", "invalid_json")
    return data


def _check_fields(data: dict, allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(sorted(unknown))}", "invalid_parameter")


def _int_field(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer number of seconds", "invalid_parameter")
    return value


def _key_failure(exc: Exception) -> HTTPError:
    return HTTPError(500, "key_unavailable", f"the key cannot be used: {exc}")


async def create_key(request: web.Request) -> web.Response:
    owner = await caller(request)
    data = await _body(request)
    _check_fields(data, {"name", "type", "size"})
    name, key_type = data.get("name"), data.get("type", "ed25519")
    if not isinstance(name, str) or not isinstance(key_type, str):
        raise bad_request("name (and type, if given) must be strings", "invalid_parameter")
    size = _int_field(data, "size") or 2048
    try:
        row = await request.app[KEYSTORE].generate(owner, name, key_type, size)
    except KeyExists as exc:
        raise HTTPError(409, "key_exists", str(exc)) from None
    except (ValueError, BadKey) as exc:
        raise bad_request(str(exc), "invalid_parameter") from None
    return web.json_response(key_json(row), status=201)


async def list_keys(request: web.Request) -> web.Response:
    owner = await caller(request)
    everyone = bearer_token(request) == request.app[OPERATOR_KEY] and request.query.get("all") == "true"
    rows = await request.app[KEYSTORE].list(None if everyone else owner)
    out = []
    for row in rows:
        item = key_json(row)
        if everyone:
            item["owner"] = row["owner"]
        out.append(item)
    return web.json_response({"keys": out})


async def publish(request: web.Request) -> web.Response:
    owner = await caller(request)
    data = await _body(request)
    _check_fields(data, {"key", "value", "lifetime", "ttl"})
    key = data.get("key", db.SELF)
    value = data.get("value")
    if not isinstance(key, str) or not isinstance(value, str):
        raise bad_request("value (a content path) is required, and key must be a string", "invalid_parameter")
    keystore: Keystore = request.app[KEYSTORE]
    try:
        result = await keystore.publish(owner, key, value, _int_field(data, "lifetime"), _int_field(data, "ttl"))
    except KeyNotFound as exc:
        raise HTTPError(404, "key_not_found", str(exc)) from None
    except (KeyringError, BadKey) as exc:
        raise _key_failure(exc) from None
    except ValueError as exc:
        raise bad_request(str(exc), "invalid_parameter") from None
    request.app[IPNS].changed(result["name"])  # cached resolutions, in every worker
    return web.json_response(result)


async def list_names(request: web.Request) -> web.Response:
    owner = await caller(request)
    rows = await request.app[KEYSTORE].list(owner)
    names = []
    for row in rows:
        item = key_json(row)
        if "published" in item:
            names.append({"name": item["id"], "key": item["name"], **item["published"]})
    return web.json_response({"names": names})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/keys", create_key)
    app.router.add_get("/api/v1/keys", list_keys)
    app.router.add_post("/api/v1/names", publish)
    app.router.add_get("/api/v1/names", list_names)
