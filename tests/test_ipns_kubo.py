"""IPNS side by side with a real Kubo (tests/support/kubo.py): records made by Kubo
(`ipfs name publish --allow-offline`) PUT into Hearth, resolved and returned
byte-identical; records made by Hearth (`hearth name publish`, POST /api/v1/names)
verified (`ipfs name inspect --verify`), stored (`ipfs routing put`) and resolved by
Kubo; the refusals (tampered, expired, oversized, replayed-older) on Kubo's records;
`?format=ipns-record` and the legacy-name redirect compared with Kubo's gateway; and
the Kubo engine asking Kubo for a name Hearth does not have.

Kubo here runs `ipfs daemon --offline`: its routing system is then the repo's
datastore, so `name publish --allow-offline` and `routing put --allow-offline` keep
records that its gateway and `name resolve` answer from. (`ipfs routing get` and
`ipfs name get` refuse to run offline, "this action must be run in online mode", and
the session's online daemon has Routing.Type "none", which keeps no record at all:
records are exported from Kubo's gateway, `/routing/v1/ipns/{name}`, the same bytes.)
"""
from __future__ import annotations

import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from naming.ipns import record as records
from naming.ipns.keys import IpnsName, PrivateKey
from naming.ipns.record import F_DATA, NS, _field
from tests.gateway_helpers import upload
from tests.support.kubo import KuboDaemon
from tests.support.node import hearth

IPNS = "application/vnd.ipfs.ipns-record"
PUT = {"Content-Type": IPNS}
GET = {"Accept": IPNS}


class OfflineKubo(KuboDaemon):
    """A Kubo daemon started with --offline (see the module docstring)."""

    def start(self, timeout: float = 60) -> "OfflineKubo":
        self.init()
        log = open(Path(self.repo) / "daemon.log", "ab")
        self.proc = subprocess.Popen([self.bin, "daemon", "--offline"], env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kubo exited: {(Path(self.repo) / 'daemon.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(urllib.request.Request(self.api_url + "/api/v0/version", method="POST"),
                                       timeout=1).read()
                urllib.request.urlopen(self.gateway_url + "/ipfs/bafkqaaa", timeout=1).read()
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Kubo did not become ready")


@pytest.fixture(scope="module")
def kubo_ipns():
    daemon = OfflineKubo().start()
    yield daemon
    daemon.cleanup()


_counter = iter(range(10**6))


def kubo_key(kubo, key_type: str) -> tuple[str, str]:
    """(key name, IPNS name) of a new Kubo key. Kubo 0.42 makes ed25519 and rsa keys
    (`ipfs key gen --type=secp256k1`: "unrecognized key type"); a secp256k1 key is made
    by Hearth and imported (`ipfs key import --allow-any-key-type`), Kubo signs with it."""
    label = f"k{key_type}{next(_counter)}"
    if key_type in ("ed25519", "rsa"):
        name = kubo.ipfs("key", "gen", f"--type={key_type}", label).strip()
    else:
        gen = subprocess.run([kubo.bin, "key", "gen", f"--type={key_type}", label], env=kubo.env,
                             capture_output=True, text=True)
        assert gen.returncode != 0 and "unrecognized key type" in gen.stderr  # if Kubo learns to, use it
        private = PrivateKey.generate(key_type)
        path = Path(kubo.repo) / f"{label}.key"
        path.write_bytes(private.to_proto())
        name = kubo.ipfs("key", "import", "--allow-any-key-type", label, str(path)).strip()
        path.unlink()
        assert name == str(private.public_key().name())
    return label, name


def kubo_publish(kubo, label: str, value: str, *flags: str) -> None:
    kubo.ipfs("name", "publish", "--allow-offline", "--resolve=false", f"--key={label}", *flags, value)


def kubo_record(kubo, name: str) -> bytes:
    """The record Kubo has for the name, from its gateway's Routing V1 API."""
    req = urllib.request.Request(f"{kubo.gateway_url}/routing/v1/ipns/{name}", headers=GET)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def kubo_verify(kubo, name: str, raw: bytes) -> str:
    out = kubo.ipfs("name", "inspect", "--verify", name, input=raw)
    assert "Valid: true" in out, out
    return out


def kubo_put(kubo, name: str, raw: bytes, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess:
    path = tmp_path / f"{name}-{next(_counter)}.ipns-record"
    path.write_bytes(raw)
    out = subprocess.run([kubo.bin, "routing", "put", "--allow-offline", f"/ipns/{name}", str(path)], env=kubo.env,
                         capture_output=True, text=True)
    if check:
        assert out.returncode == 0, out.stderr
    return out


async def kubo_gateway(url: str, headers: dict | None = None):
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers or {}, allow_redirects=False) as resp:
            return resp.status, resp.headers.copy(), await resp.read()


async def put(node, name, raw, headers=PUT):
    return await node.put(f"/routing/v1/ipns/{name}", data=raw, headers=headers)


async def refused(node, name, raw, rule):
    resp = await put(node, name, raw)
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == f"ipns_{rule}", (rule, body)
    assert f"rule: {rule}" in body["error"]["message"]
    return body


# --- Kubo's records in Hearth -------------------------------------------------------------------
@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "secp256k1"])
async def test_kubo_records_put_into_hearth(node_factory, kubo_ipns, key_type):
    node = await node_factory("embedded")
    file = await upload(node, f"published by kubo with {key_type}".encode(), "k.txt")
    label, name = kubo_key(kubo_ipns, key_type)
    kubo_publish(kubo_ipns, label, f"/ipfs/{file['cid']}", "--ttl=2m")
    raw = kubo_record(kubo_ipns, name)
    kubo_verify(kubo_ipns, name, raw)
    rec = records.verify(raw, IpnsName.parse(name))
    assert rec.has_v1 and (rec.public_key is not None) == (key_type == "rsa")  # Kubo's default: V1+V2

    resp = await put(node, name, raw)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"Name": name, "Sequence": 0, "Outcome": "stored"}
    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert resp.status == 200 and await resp.read() == raw  # byte-identical
    resp = await node.get(f"/ipns/{name}")
    assert resp.status == 200 and await resp.read() == f"published by kubo with {key_type}".encode()
    assert resp.headers["Cache-Control"] == "public, max-age=120"  # Kubo's --ttl
    assert resp.headers["X-Ipfs-Path"] == f"/ipns/{name}"

    # Kubo publishes again (a new value: sequence 1); Hearth takes it, then never the older one
    other = await upload(node, b"second value", "k2.txt")
    kubo_publish(kubo_ipns, label, f"/ipfs/{other['cid']}")
    newer = kubo_record(kubo_ipns, name)
    assert records.verify(newer, IpnsName.parse(name)).sequence == 1
    assert (await put(node, name, newer)).status == 200
    assert await (await node.get(f"/ipns/{name}")).read() == b"second value"
    await refused(node, name, raw, "sequence")
    assert await (await node.get(f"/routing/v1/ipns/{name}", headers=GET)).read() == newer


def kubo_refusal(kubo, name: str, raw: bytes) -> str:
    """Why Kubo's `ipfs name inspect --verify` finds the record invalid."""
    out = subprocess.run([kubo.bin, "name", "inspect", "--verify", name], input=raw, env=kubo.env,
                         capture_output=True, text=False)
    text, err = out.stdout.decode(), out.stderr.decode()
    if out.returncode != 0:
        return err.strip()
    assert "Valid:  false" in text, text
    return text.split("Reason:", 1)[1].splitlines()[0].strip()


async def test_kubo_refusals_match_hearths(node_factory, kubo_ipns, tmp_path):
    """Tampered, expired, oversized and replayed-older Kubo records: Hearth refuses each
    with 400 naming the rule; Kubo finds each invalid for the same reason. (Kubo's
    `ipfs routing put` exits 0 and prints its peer ID for every one of them; it just
    does not keep them: its stored record stays as it was.)"""
    node = await node_factory("embedded")
    label, name = kubo_key(kubo_ipns, "ed25519")
    kubo_publish(kubo_ipns, label, "/ipfs/bafkqaaa")
    first = kubo_record(kubo_ipns, name)  # sequence 0
    assert (await put(node, name, first)).status == 200

    async def both_refuse(target, raw, rule, kubo_reason):
        await refused(node, target, raw, rule)
        assert kubo_reason in kubo_refusal(kubo_ipns, target, raw), rule
        kubo_put(kubo_ipns, target, raw, tmp_path)  # "succeeds"...
        if target == name:
            assert kubo_record(kubo_ipns, name) == first, rule  # ...and keeps nothing

    # tampered: one byte of the signed CBOR data
    fields = records._parse_protobuf(first)
    data = bytearray(fields[F_DATA])
    data[data.index(b"bafkqaaa")] ^= 1
    await both_refuse(name, first.replace(fields[F_DATA], bytes(data)), "signature", "signature verification failed")
    # V1 fields that disagree with the signed V2 data: the protobuf's value, not data's
    v1_lies = first.replace(b"/ipfs/bafkqaaa", b"/ipfs/bafkqaab", 1)
    assert v1_lies != first and records._parse_protobuf(v1_lies)[F_DATA] == fields[F_DATA]
    await both_refuse(name, v1_lies, "v1_mismatch", 'field "Value" did not match between protobuf and CBOR')
    # oversized: grown past 10 KiB with an unknown field (which protobuf parsers skip)
    await both_refuse(name, first + _field(20, b"\0" * 10 * 1024), "size", "record exceeds allowed size limit")
    # another name's record
    _, other_name = kubo_key(kubo_ipns, "ed25519")
    await both_refuse(other_name, first, "signature", "signature verification failed")
    # expired: a record with a 1 s lifetime, a second later
    exp_label, exp_name = kubo_key(kubo_ipns, "ed25519")
    kubo_publish(kubo_ipns, exp_label, "/ipfs/bafkqaaa", "--lifetime=1s")
    expiring = kubo_record(kubo_ipns, exp_name)
    time.sleep(1.2)
    await both_refuse(exp_name, expiring, "expired", "record is expired")

    # replayed older: Kubo's sequence 1, then its sequence 0 again
    kubo_publish(kubo_ipns, label, "/ipfs/bafkqaab")
    second = kubo_record(kubo_ipns, name)
    assert (await put(node, name, second)).status == 200
    await refused(node, name, first, "sequence")
    kubo_put(kubo_ipns, name, first, tmp_path)
    assert kubo_record(kubo_ipns, name) == second  # Kubo keeps its newer record too
    assert await (await node.get(f"/routing/v1/ipns/{name}", headers=GET)).read() == second
    # and in the right order, the newer one replaces the older one
    fresh = await node_factory("embedded")
    assert (await put(fresh, name, first)).status == 200
    assert (await put(fresh, name, second)).status == 200
    assert await (await fresh.get(f"/routing/v1/ipns/{name}", headers=GET)).read() == second


# --- Hearth's records in Kubo -------------------------------------------------------------------
def kubo_resolves(kubo, name: str, value: str) -> None:
    assert kubo.ipfs("name", "resolve", name).strip() == value


@pytest.mark.parametrize("key_type", ["ed25519", "rsa", "secp256k1", "ecdsa"])
async def test_api_published_records_accepted_by_kubo(node_factory, kubo_ipns, tmp_path, key_type):
    node = await node_factory("embedded")
    file = await upload(node, b"published by hearth", "h.txt")
    resp = await node.post("/api/v1/keys", json={"name": "site", "type": key_type}, headers=node.auth)
    assert resp.status == 201, await resp.text()
    name = (await resp.json())["id"]
    value = f"/ipfs/{file['cid']}"
    resp = await node.post("/api/v1/names", json={"key": "site", "value": value, "ttl": 90}, headers=node.auth)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["name"] == name
    raw = await (await node.get(f"/routing/v1/ipns/{name}", headers=GET)).read()
    out = kubo_verify(kubo_ipns, name, raw)
    assert f'Value:          "{value}"' in out and "Sequence:       0" in out and "TTL:            1m30s" in out
    assert "Signature Type: V1+V2" in out
    kubo_put(kubo_ipns, name, raw, tmp_path)
    kubo_resolves(kubo_ipns, name, value)
    assert kubo_record(kubo_ipns, name) == raw  # Kubo keeps Hearth's bytes as they are

    # a new value: sequence 1, and Kubo takes it over the first
    resp = await node.post("/api/v1/names", json={"key": "site", "value": "/ipfs/bafkqaaa"}, headers=node.auth)
    assert (await resp.json())["sequence"] == 1
    raw2 = await (await node.get(f"/routing/v1/ipns/{name}", headers=GET)).read()
    kubo_put(kubo_ipns, name, raw2, tmp_path)
    kubo_resolves(kubo_ipns, name, "/ipfs/bafkqaaa")


def test_cli_published_records_accepted_by_kubo(tmp_path, kubo_ipns):
    """`hearth key gen` and `hearth name publish` on a data dir no node holds; the
    records they keep are accepted, verified and resolved by Kubo."""
    data = tmp_path / "data"
    cid = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
    name = hearth("key", "gen", "blog", "--type", "rsa", "--data-dir", str(data)).stdout.strip()
    out = hearth("name", "publish", "--key", "blog", "--ttl", "1m", f"/ipfs/{cid}", "--data-dir", str(data)).stdout
    assert out.strip() == f"Published to {name}: /ipfs/{cid}"
    out = hearth("name", "publish", f"/ipfs/{cid}/x", "--data-dir", str(data)).stdout  # self: the peer key
    self_name = out.split()[2].rstrip(":")
    with sqlite3.connect(data / "hearth.sqlite") as db:
        rows = dict(db.execute("SELECT name, record FROM ipns_records").fetchall())
    assert set(rows) == {name, self_name}
    for n, value in ((name, f"/ipfs/{cid}"), (self_name, f"/ipfs/{cid}/x")):
        kubo_verify(kubo_ipns, n, rows[n])
        kubo_put(kubo_ipns, n, rows[n], tmp_path)
        kubo_resolves(kubo_ipns, n, value)
    # the self name is the node's peer ID, as Kubo's `self`
    assert IpnsName.parse(self_name).peer_id.startswith("12D3KooW")


# --- the gateway, compared with Kubo's ----------------------------------------------------------
async def test_ipns_record_responses_match_kubo(node_factory, kubo_ipns):
    node = await node_factory("embedded")
    label, name = kubo_key(kubo_ipns, "ed25519")
    kubo_publish(kubo_ipns, label, "/ipfs/bafkqaaa", "--ttl=3m")
    raw = kubo_record(kubo_ipns, name)
    assert (await put(node, name, raw)).status == 200
    for query, headers in (("?format=ipns-record", {}), ("", GET)):
        k_status, k_headers, k_body = await kubo_gateway(f"{kubo_ipns.gateway_url}/ipns/{name}{query}", headers)
        resp = await node.get(f"/ipns/{name}{query}", headers=headers)
        body = await resp.read()
        assert (resp.status, body) == (k_status, k_body) == (200, raw), query
        for header in ("Content-Type", "Cache-Control", "X-Ipfs-Path", "X-Content-Type-Options"):
            assert resp.headers[header] == k_headers[header], (query, header)
        assert resp.headers["Content-Disposition"] == k_headers["Content-Disposition"], query
        assert resp.headers.get("Content-Location") == k_headers.get("Content-Location"), query
    # a record for a name neither has
    unknown = str(PrivateKey.generate().public_key().name())
    k_status, _, _ = await kubo_gateway(f"{kubo_ipns.gateway_url}/ipns/{unknown}?format=ipns-record")
    resp = await node.get(f"/ipns/{unknown}?format=ipns-record")
    assert (resp.status, k_status) == (404, 500)  # Kubo answers 500 "could not resolve name"


async def test_legacy_name_redirect_matches_kubo(node_factory, kubo_ipns):
    node = await node_factory("embedded")
    for key_type in ("ed25519", "rsa"):
        label, name = kubo_key(kubo_ipns, key_type)
        kubo_publish(kubo_ipns, label, "/ipfs/bafkqaaa")
        assert (await put(node, name, kubo_record(kubo_ipns, name))).status == 200
        legacy = IpnsName.parse(name).peer_id
        assert legacy.startswith("12D3KooW" if key_type == "ed25519" else "Qm")
        for tail in ("", "/a/b?filename=x.txt", "?format=ipns-record"):
            k_status, k_headers, _ = await kubo_gateway(f"{kubo_ipns.gateway_url}/ipns/{legacy}{tail}")
            resp = await node.get(f"/ipns/{legacy}{tail}", allow_redirects=False)
            assert resp.headers["Location"] == k_headers["Location"] == f"/ipns/{name}{tail}"
            assert resp.status == k_status == 302  # boxo answers Found


# --- the Kubo engine asks Kubo ------------------------------------------------------------------
async def test_kubo_engine_resolves_names_only_kubo_has(node_factory, kubo_ipns):
    node = await node_factory("kubo", storage__kubo_api=kubo_ipns.api_url)
    file = await upload(node, b"only kubo knows the name", "only.txt")
    label, name = kubo_key(kubo_ipns, "ed25519")
    kubo_publish(kubo_ipns, label, f"/ipfs/{file['cid']}", "--ttl=45s")
    raw = kubo_record(kubo_ipns, name)
    resp = await node.get(f"/ipns/{name}")
    assert resp.status == 200 and await resp.read() == b"only kubo knows the name"
    assert resp.headers["Cache-Control"] == "public, max-age=45"
    resp = await node.get(f"/ipns/{name}?format=ipns-record")
    assert resp.status == 200 and await resp.read() == raw
    resp = await node.get(f"/routing/v1/ipns/{name}", headers=GET)
    assert resp.status == 200 and await resp.read() == raw
    # Kubo's records are not kept: once the TTL has passed, Kubo is asked again
    label2, name2 = kubo_key(kubo_ipns, "ed25519")
    kubo_publish(kubo_ipns, label2, f"/ipfs/{file['cid']}", "--ttl=1s")
    assert (await node.get(f"/ipns/{name2}")).status == 200
    kubo_publish(kubo_ipns, label2, "/ipfs/bafkqaaa", "--ttl=1s")
    time.sleep(1.1)
    resp = await node.get(f"/ipns/{name2}")
    assert resp.status == 200 and await resp.read() == b""
    # a record Hearth has wins over asking Kubo; a name neither has is 404
    key = PrivateKey.generate()
    mine = str(key.public_key().name())
    assert (await put(node, mine, records.create(key, f"/ipfs/{file['cid']}", 0, time.time_ns() + 3600 * NS,
                                                 60 * NS))).status == 200
    assert (await node.get(f"/ipns/{mine}")).status == 200
    unknown = str(PrivateKey.generate().public_key().name())
    resp = await node.get(f"/ipns/{unknown}")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "name_not_found"


async def test_kubo_engine_with_an_online_kubo_without_routing(node):
    """The session's Kubo (online, Routing.Type "none"): routing/get finds nothing, a 404."""
    unknown = str(PrivateKey.generate().public_key().name())
    resp = await node.get(f"/ipns/{unknown}")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "name_not_found"
