"""The node's own IPNS keys end to end: `hearth key gen|list` and `hearth name publish`
on a data dir no node holds and through a running node; the authenticated
`POST /api/v1/names`; private keys sealed at rest (identity/keyring.py) and what a
wrong passphrase gets; the republisher, which signs a record again before its EOL,
in the leader process only."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

from gateway.app import create_app
from gateway.keys import LEADERSHIP, REPUBLISHER, STORE
from identity.keyring import Keyring
from naming.ipns import record as records
from naming.ipns.keys import IpnsName, PrivateKey
from naming.ipns.keystore import purpose
from storage.cid import CID
from tests.conftest import make_config
from tests.gateway_helpers import upload
from tests.support.kubo import free_port
from tests.support.node import HEARTH, ROOT, NodeProcess, hearth

IPNS = "application/vnd.ipfs.ipns-record"


def identity_cid(data: bytes) -> str:
    """A CID that carries its bytes: any node serves it without having stored it."""
    return str(CID.from_bytes(b"\x01\x55\x00" + bytes([len(data)]) + data))


def env(**extra) -> dict:
    out = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_") or k == "HEARTH_IPFS_BIN"}
    return dict(out, **extra)


def db_rows(data: Path, sql: str, args=()) -> list:
    with sqlite3.connect(data / "hearth.sqlite") as db:
        return db.execute(sql, args).fetchall()


def stored_record(data: Path, name: str) -> records.Record:
    [(raw,)] = db_rows(data, "SELECT record FROM ipns_records WHERE name = ?", [name])
    return records.verify(raw, IpnsName.parse(name))


def http(url: str, headers: dict | None = None, method: str = "GET", body: bytes | None = None):
    req = urllib.request.Request(url, headers=headers or {}, method=method, data=body)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# --- the CLI ------------------------------------------------------------------------------------
def test_cli_on_the_data_dir_without_a_node(tmp_path):
    data = tmp_path / "data"
    e = env()
    blog = hearth("key", "gen", "blog", "--data-dir", str(data), env=e).stdout.strip()
    web = hearth("key", "gen", "web", "--type", "rsa", "--data-dir", str(data), env=e).stdout.strip()
    assert blog.startswith("k51") and web.startswith("k2k4r8")  # an RSA name is a hash of the key
    dup = hearth("key", "gen", "blog", "--data-dir", str(data), env=e, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    bad = hearth("key", "gen", "self", "--data-dir", str(data), env=e, check=False)
    assert bad.returncode == 1 and "not 'self'" in bad.stderr

    listing = hearth("key", "list", "--data-dir", str(data), env=e).stdout.splitlines()
    rows = {line.split("\t")[1]: line.split("\t") for line in listing}
    assert set(rows) == {"self", "blog", "web"}
    assert rows["blog"] == [blog, "blog", "ed25519", "@node", "-"]
    assert rows["web"][:3] == [web, "web", "rsa"]
    self_name = rows["self"][0]
    assert IpnsName.parse(self_name).peer_id.startswith("12D3KooW")  # the node's peer ID, as Kubo's `self`

    one, two = identity_cid(b"first"), identity_cid(b"second")
    out = hearth("name", "publish", "--key", "blog", f"/ipfs/{one}", "--data-dir", str(data), env=e).stdout
    assert out.strip() == f"Published to {blog}: /ipfs/{one}"
    rec = stored_record(data, blog)
    assert (rec.value_text, rec.sequence, rec.ttl_seconds) == (f"/ipfs/{one}", 0, 300)  # [ipns] ttl: 5 min
    assert 48 * 3600 - 60 < rec.seconds_left() <= 48 * 3600  # [ipns] lifetime: 48 h
    # the same value again: the same sequence, a new EOL (as Kubo); a new value: the next one
    hearth("name", "publish", "--key", "blog", f"/ipfs/{one}", "--lifetime", "1h", "--data-dir", str(data), env=e)
    assert stored_record(data, blog).sequence == 0 and stored_record(data, blog).seconds_left() <= 3600
    out = hearth("name", "publish", "--key", "blog", two, "--ttl", "90s", "--json", "--data-dir", str(data),
                 env=e).stdout
    published = json.loads(out)
    assert published["value"] == f"/ipfs/{two}" and published["sequence"] == 1 and published["ttl"] == 90
    out = hearth("name", "publish", f"/ipfs/{one}", "--data-dir", str(data), env=e).stdout  # self
    assert out.strip() == f"Published to {self_name}: /ipfs/{one}"

    keys = {k["name"]: k for k in json.loads(hearth("key", "list", "--json", "--data-dir", str(data), env=e).stdout)}
    assert keys["blog"]["published"]["value"] == f"/ipfs/{two}" and keys["blog"]["published"]["sequence"] == 1
    assert "published" not in keys["web"]
    for args, message in ((["--key", "nope", f"/ipfs/{one}"], "no key named 'nope'"),
                          (["--key", "blog", "/ipfs/not-a-cid"], "not a valid CID"),
                          (["--key", "blog", "hello"], "neither a content path nor a CID")):
        out = hearth("name", "publish", *args, "--data-dir", str(data), env=e, check=False)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)

    # a node started on the data dir serves what was published while it was not running
    node = NodeProcess(data, env=e).start()
    try:
        status, headers, body = http(f"{node.url}/ipns/{blog}")
        assert (status, body) == (200, b"second") and headers["Cache-Control"] == "public, max-age=90"
        status, _, raw = http(f"{node.url}/routing/v1/ipns/{blog}", {"Accept": IPNS})
        assert status == 200 and records.verify(raw, IpnsName.parse(blog)).sequence == 1
        assert http(f"{node.url}/ipns/{self_name}")[:3:2] == (200, b"first")
    finally:
        node.stop()


def test_cli_through_a_running_node(tmp_path):
    """With a node running, the CLI asks it (the data dir's operator.key), in any of its
    workers; a new value is served at once by every worker (cached resolutions dropped)."""
    data = tmp_path / "data"
    node = NodeProcess(data, env=env(HEARTH_SERVER_WORKERS="2")).start()
    try:
        e = node.env
        site = hearth("key", "gen", "site", "--data-dir", str(data), env=e).stdout.strip()
        listing = hearth("key", "list", "--data-dir", str(data), env=e).stdout
        assert f"{site}\tsite\ted25519\t@node\t-" in listing.splitlines()
        one, two = identity_cid(b"one"), identity_cid(b"two")
        out = hearth("name", "publish", "--key", "site", f"/ipfs/{one}", "--data-dir", str(data), env=e).stdout
        assert out.strip() == f"Published to {site}: /ipfs/{one}"
        for _ in range(6):  # spread over the workers: each resolves and caches it
            assert http(f"{node.url}/ipns/{site}")[2] == b"one"
        hearth("name", "publish", "--key", "site", f"/ipfs/{two}", "--data-dir", str(data), env=e)
        for _ in range(6):
            assert http(f"{node.url}/ipns/{site}")[2] == b"two"
        listing = hearth("key", "list", "--data-dir", str(data), env=e).stdout
        assert f"{site}\tsite\ted25519\t@node\t/ipfs/{two} (sequence 1, valid until" in listing
        # a token's keys are its own: the operator's `site` is not one of them
        status, _, body = http(f"{node.url}/api/v1/names", {**node.auth, "Content-Type": "application/json"},
                               "POST", json.dumps({"key": "site", "value": f"/ipfs/{one}"}).encode())
        assert status == 404 and json.loads(body)["error"]["code"] == "key_not_found"
    finally:
        node.stop()


# --- the API ------------------------------------------------------------------------------------
async def test_names_api_needs_a_token(node_factory):
    node = await node_factory("embedded")
    file = await upload(node, b"by the api", "a.txt")
    value = f"/ipfs/{file['cid']}"
    for headers in ({}, {"Authorization": "Bearer nope"}):
        for method, path, body in (("POST", "/api/v1/names", {"key": "self", "value": value}),
                                   ("GET", "/api/v1/names", None), ("POST", "/api/v1/keys", {"name": "k"}),
                                   ("GET", "/api/v1/keys", None)):
            resp = await node.request(method, path, json=body, headers=headers)
            assert resp.status == 401, (method, path, headers)
            assert (await resp.json())["error"]["code"] == "unauthorized"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")

    # a token publishes with keys it made, not the node's `self`
    resp = await node.post("/api/v1/names", json={"value": value}, headers=node.auth)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "key_not_found"
    resp = await node.post("/api/v1/keys", json={"name": "blog"}, headers=node.auth)
    assert resp.status == 201
    key = await resp.json()
    assert key["name"] == "blog" and key["type"] == "ed25519" and key["id"].startswith("k51")
    assert (await node.post("/api/v1/keys", json={"name": "blog"}, headers=node.auth)).status == 409
    resp = await node.post("/api/v1/names", json={"key": "blog", "value": value, "lifetime": 600, "ttl": 30},
                           headers=node.auth)
    assert resp.status == 200, await resp.text()
    published = await resp.json()
    assert published["name"] == key["id"] and published["sequence"] == 0 and published["ttl"] == 30
    resp = await node.get(f"/ipns/{key['id']}")
    assert resp.status == 200 and await resp.read() == b"by the api"
    assert resp.headers["Cache-Control"] == "public, max-age=30"
    names = (await (await node.get("/api/v1/names", headers=node.auth)).json())["names"]
    assert [(n["name"], n["value"], n["sequence"]) for n in names] == [(key["id"], value, 0)]
    for body, code in (({"key": "blog", "value": "nope"}, "invalid_parameter"),
                       ({"key": "blog", "value": value, "lifetime": 0}, "invalid_parameter"),
                       ({"key": "blog", "value": value, "extra": 1}, "invalid_parameter"),
                       ({"key": "blog"}, "invalid_parameter")):
        resp = await node.post("/api/v1/names", json=body, headers=node.auth)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code, body
    # another token does not see or use this token's key
    store = node.app[STORE]
    other = {"Authorization": f"Bearer {await store.run(store.create_token, 'other')}"}
    resp = await node.post("/api/v1/names", json={"key": "blog", "value": value}, headers=other)
    assert resp.status == 404
    assert (await (await node.get("/api/v1/keys", headers=other)).json())["keys"] == []


# --- sealed at rest -----------------------------------------------------------------------------
def _secrets_of(proto: bytes) -> list[bytes]:
    """The raw private key material inside a libp2p PrivateKey protobuf."""
    data = proto[proto.index(b"\x12") + 1:]
    data = data[1:] if data[0] < 0x80 else data[2:] if data[1] < 0x80 else data[3:]  # the length varint
    return [proto, data, data[:32]]


def test_keys_are_sealed_at_rest(tmp_path):
    data = tmp_path / "data"
    e = env()
    for key_type in ("ed25519", "rsa", "secp256k1", "ecdsa"):
        hearth("key", "gen", f"k-{key_type}", "--type", key_type, "--data-dir", str(data), env=e)
    hearth("name", "publish", "--key", "k-ed25519", "/ipfs/bafkqaaa", "--data-dir", str(data), env=e)
    hearth("name", "publish", "/ipfs/bafkqaaa", "--data-dir", str(data), env=e)  # self: makes peer.key
    ring = Keyring.for_data_dir(data, env={})
    disk = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    rows = db_rows(data, "SELECT id, type, public_key, sealed_private FROM ipns_keys WHERE name != 'self'")
    assert len(rows) == 4
    for key_id, key_type, public, sealed in rows:
        doc = json.loads(sealed)
        assert doc["hearth_sealed"] == 1 and doc["aead"] == "AES-256-GCM" and doc["kdf"] == "hkdf-sha256"
        proto = ring.open(sealed, purpose(key_id))
        assert PrivateKey.from_proto(proto).public_key().to_proto() == public
        for secret in _secrets_of(proto):
            assert secret not in disk and base64.b64encode(secret) not in disk, key_type
        # a sealed key moved to another row does not open
        try:
            ring.open(sealed, purpose(key_id + 100))
            raise AssertionError("opened under another purpose")
        except Exception as exc:
            assert "wrong passphrase" in str(exc) or "cannot open" in str(exc)
    # the peer key (`self`) too: peer.key is sealed, 0600, its seed nowhere on disk
    peer = data / "peer.key"
    assert json.loads(peer.read_bytes())["hearth_sealed"] == 1
    seed = ring.open(peer.read_bytes(), "peer-key")
    assert len(seed) == 32 and seed not in disk
    for path in (peer, data / "keystore.passphrase"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_wrong_passphrase_cannot_open_the_keys(tmp_path):
    data = tmp_path / "data"
    right = env(HEARTH_KEY_PASSPHRASE="correct horse battery staple")
    name = hearth("key", "gen", "k", "--data-dir", str(data), env=right).stdout.strip()
    hearth("name", "publish", "--key", "k", "/ipfs/bafkqaaa", "--data-dir", str(data), env=right)
    hearth("name", "publish", "/ipfs/bafkqaaa", "--data-dir", str(data), env=right)  # self: makes peer.key
    assert not (data / "keystore.passphrase").exists()  # nothing generated: the operator gave one
    [(sealed,)] = db_rows(data, "SELECT sealed_private FROM ipns_keys WHERE name = 'k'")
    assert json.loads(sealed)["kdf"] == "scrypt"  # an operator's passphrase may be a human one

    wrong = env(HEARTH_KEY_PASSPHRASE="wrong")
    out = hearth("name", "publish", "--key", "k", "/ipfs/bafkqaab", "--data-dir", str(data), env=wrong, check=False)
    assert out.returncode == 1
    assert "wrong passphrase (from $HEARTH_KEY_PASSPHRASE)" in out.stderr and "Traceback" not in out.stderr
    assert stored_record(data, name).value_text == "/ipfs/bafkqaaa"  # nothing published
    # the passphrase from a file ([server] key_passphrase_file), right and wrong
    good_file, bad_file = tmp_path / "good.pass", tmp_path / "bad.pass"
    good_file.write_text("correct horse battery staple\n")
    bad_file.write_text("nope\n")
    hearth("name", "publish", "--key", "k", "/ipfs/bafkqaab", "--data-dir", str(data),
           env=env(HEARTH_SERVER_KEY_PASSPHRASE_FILE=str(good_file)))
    assert stored_record(data, name).value_text == "/ipfs/bafkqaab"
    out = hearth("name", "publish", "--key", "k", "/ipfs/bafkqaaa", "--data-dir", str(data),
                 env=env(HEARTH_SERVER_KEY_PASSPHRASE_FILE=str(bad_file)), check=False)
    assert out.returncode == 1 and f"wrong passphrase (from {bad_file})" in out.stderr
    # a node does not start with the wrong passphrase, and says why
    proc = subprocess.Popen([*HEARTH, "serve", "--port", str(free_port()), "--data-dir", str(data)], cwd=ROOT,
                            env=wrong, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # it started: the node and its workers
        proc.communicate()
        raise AssertionError("the node started with a wrong passphrase")
    assert proc.returncode != 0
    assert "wrong passphrase (from $HEARTH_KEY_PASSPHRASE)" in stderr, stderr[-2000:]


# --- the republisher ----------------------------------------------------------------------------
async def test_the_republisher_signs_again_before_the_eol(node_factory):
    node = await node_factory("embedded", ipns__republish_poll=1)
    assert node.app[LEADERSHIP].leader
    resp = await node.post("/api/v1/keys", json={"name": "short"}, headers=node.auth)
    name = (await resp.json())["id"]
    resp = await node.post("/api/v1/names", json={"key": "short", "value": "/ipfs/bafkqaaa", "lifetime": 3,
                                                  "ttl": 1}, headers=node.auth)
    assert resp.status == 200
    first = records.verify(await (await node.get(f"/routing/v1/ipns/{name}", headers={"Accept": IPNS})).read(),
                           IpnsName.parse(name))
    # the name never stops resolving, well past the first record's EOL
    seen = {first.raw}
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        resp = await node.get(f"/routing/v1/ipns/{name}", headers={"Accept": IPNS})
        assert resp.status == 200, "the record expired before it was signed again"
        seen.add(await resp.read())
        await asyncio.sleep(0.2)
    assert len(seen) >= 3  # signed again every 1.5 s (half of the 3 s lifetime)
    latest = records.verify(max(seen, key=lambda raw: records.verify(raw, IpnsName.parse(name),
                                                                   now_ns=0).eol_ns), IpnsName.parse(name))
    # as Kubo's republisher: the same value and sequence, a later EOL
    assert (latest.value, latest.sequence, latest.ttl_ns) == (first.value, first.sequence, first.ttl_ns)
    assert latest.eol_ns > first.eol_ns and first.eol_ns < time.time_ns()
    assert node.app[REPUBLISHER].republished >= 2
    store = node.app[STORE]
    row = await store.run(lambda s: s.db.execute("SELECT source FROM ipns_records WHERE name = ?",
                                                 [name]).fetchone(), store)
    assert row[0] == "republish"


async def test_the_republisher_runs_in_the_leader_only(aiohttp_client, tmp_path):
    """Two processes' apps on one data dir (as two workers): one leads and republishes,
    including what the other published; the other never does."""
    config = make_config(tmp_path, storage__engine="embedded", ipns__republish_poll=1)
    apps = [create_app(config, workers=2), create_app(config, workers=2)]
    clients = [await aiohttp_client(app) for app in apps]
    leader = [app[LEADERSHIP].leader for app in apps]
    assert sorted(leader) == [False, True]
    lead, follow = (apps[0], apps[1]) if leader[0] else (apps[1], apps[0])
    lead_client, follow_client = (clients[0], clients[1]) if leader[0] else (clients[1], clients[0])
    assert lead[REPUBLISHER]._task is not None and follow[REPUBLISHER]._task is None
    store = follow[STORE]
    auth = {"Authorization": f"Bearer {await store.run(store.create_token, 'w')}"}
    name = (await (await follow_client.post("/api/v1/keys", json={"name": "k"}, headers=auth)).json())["id"]
    resp = await follow_client.post("/api/v1/names", json={"key": "k", "value": "/ipfs/bafkqaaa", "lifetime": 2},
                                    headers=auth)
    assert resp.status == 200
    first = await (await lead_client.get(f"/routing/v1/ipns/{name}", headers={"Accept": IPNS})).read()
    await asyncio.sleep(3.0)
    resp = await follow_client.get(f"/routing/v1/ipns/{name}", headers={"Accept": IPNS})
    assert resp.status == 200 and await resp.read() != first
    assert lead[REPUBLISHER].republished >= 1 and lead[REPUBLISHER].runs >= 2
    assert follow[REPUBLISHER].runs == 0 and follow[REPUBLISHER].republished == 0
