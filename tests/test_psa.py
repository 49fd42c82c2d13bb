"""The Pinning Services API (/psa) against a real Kubo: every endpoint, filter and
bad input, the pin worker (restarts, timeouts, a dead Kubo), and Kubo's own
remote-pinning client (`ipfs pin remote ...`) talking to Hearth for real."""
from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from urllib.parse import quote

import pytest

from gateway.app import create_app
from gateway.keys import ENGINE, PIN_WORKER, STORE
from storage.cid import CID
from storage.metadata import MetadataStore
from tests.conftest import make_config
from tests.psa_helpers import add, get, kubo_content, kubo_pinned, post_pin, random_cid, wait_status
from tests.support.kubo import free_port

async def ls(node, query: str = "", expect=200):
    resp = await node.get("/psa/pins" + (f"?{query}" if query else ""), headers=node.auth)
    body = await resp.json()
    assert resp.status == expect, body
    return body


def assert_failure(status, body, want_status, reason):
    assert status == want_status, body
    assert set(body) == {"error"} and body["error"]["reason"] == reason, body
    assert isinstance(body["error"].get("details"), str) and body["error"]["details"], body


def assert_pin_status(body):
    assert set(body) >= {"requestid", "status", "created", "pin", "delegates", "info"}
    assert body["status"] in ("queued", "pinning", "pinned", "failed")
    assert body["created"].endswith("Z") and "T" in body["created"]
    assert isinstance(body["delegates"], list) and isinstance(body["info"], dict)
    assert all(isinstance(v, str) for v in body["info"].values())


# --- the happy path: every endpoint ---------------------------------------------------------------
async def test_add_get_list_delete(node, kubo):
    cid = kubo_content(kubo)
    origins = ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
    body = await add(node, cid, name="precious.pdf", origins=origins, meta={"app_id": "a1"})
    assert_pin_status(body)
    assert body["status"] in ("queued", "pinning", "pinned")
    assert body["pin"] == {"cid": cid, "name": "precious.pdf", "origins": origins, "meta": {"app_id": "a1"}}
    # delegates: Kubo's multiaddrs, each ending /p2p/<peer id>
    assert body["delegates"] and all("/p2p/" in d for d in body["delegates"])
    rid = body["requestid"]
    done = await wait_status(node, rid)
    assert done["status"] == "pinned", done
    assert done["created"] == body["created"] and done["pin"] == body["pin"]
    assert kubo_pinned(kubo, cid)
    listed = await ls(node)
    assert listed["count"] == 1 and [r["requestid"] for r in listed["results"]] == [rid]
    assert_pin_status(listed["results"][0])
    resp = await node.delete(f"/psa/pins/{rid}", headers=node.auth)
    assert resp.status == 202 and await resp.read() == b""
    resp = await node.get(f"/psa/pins/{rid}", headers=node.auth)
    assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")
    assert (await ls(node))["count"] == 0
    assert not kubo_pinned(kubo, cid)  # nothing else wanted it


async def test_same_cid_twice_delete_keeps_pin_until_last(node, kubo):
    cid = kubo_content(kubo)
    a = await add(node, cid)
    b = await add(node, CID.parse(cid).v1().encode())  # the CIDv1 of the same content
    assert a["requestid"] != b["requestid"] and a["created"] < b["created"]
    await wait_status(node, a["requestid"])
    await wait_status(node, b["requestid"])
    assert (await node.delete(f"/psa/pins/{a['requestid']}", headers=node.auth)).status == 202
    assert kubo_pinned(kubo, cid)  # b still wants it
    assert (await node.delete(f"/psa/pins/{b['requestid']}", headers=node.auth)).status == 202
    assert not kubo_pinned(kubo, cid)


async def test_delete_keeps_content_uploaded_through_content_api(node, kubo):
    data = os.urandom(100)
    resp = await node.post("/api/v1/content?filename=x.bin", data=data, headers=node.auth)
    assert resp.status == 201
    cid = (await resp.json())["cid"]
    body = await add(node, cid)
    assert (await wait_status(node, body["requestid"]))["status"] == "pinned"
    assert (await node.delete(f"/psa/pins/{body['requestid']}", headers=node.auth)).status == 202
    assert kubo_pinned(kubo, cid)  # the content record still wants it


async def test_replace(node, kubo):
    old_cid, new_cid = kubo_content(kubo), kubo_content(kubo)
    old = await add(node, old_cid, name="v1", meta={"k": "v"})
    await wait_status(node, old["requestid"])
    status, new = await post_pin(node, {"cid": new_cid, "name": "v2"}, path=f"/psa/pins/{old['requestid']}")
    assert status == 202, new
    assert_pin_status(new)
    assert new["requestid"] != old["requestid"] and new["pin"] == {"cid": new_cid, "name": "v2", "origins": [], "meta": {}}
    assert new["created"] > old["created"]
    resp = await node.get(f"/psa/pins/{old['requestid']}", headers=node.auth)
    assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")
    assert (await wait_status(node, new["requestid"]))["status"] == "pinned"
    assert kubo_pinned(kubo, new_cid)
    # the old content was kept until the new pin settled, then released
    for _ in range(100):
        if not kubo_pinned(kubo, old_cid):
            break
        await asyncio.sleep(0.05)
    assert not kubo_pinned(kubo, old_cid)
    listed = await ls(node, "status=queued,pinning,pinned,failed")
    assert [r["requestid"] for r in listed["results"]] == [new["requestid"]]
    # replacing an unknown request: 404, nothing created
    status, body = await post_pin(node, {"cid": new_cid}, path=f"/psa/pins/{uuid.uuid4()}")
    assert_failure(status, body, 404, "NOT_FOUND")
    assert (await ls(node, "status=queued,pinning,pinned,failed"))["count"] == 1


async def test_replace_keeps_old_content_until_the_new_request_settles(node_factory, kubo):
    node = await node_factory("kubo", pinning__pin_timeout=30)
    old_cid = kubo_content(kubo)
    old = await add(node, old_cid)
    await wait_status(node, old["requestid"])
    status, new = await post_pin(node, {"cid": random_cid()}, path=f"/psa/pins/{old['requestid']}")
    assert status == 202
    await wait_status(node, new["requestid"], want=("pinning",), timeout=5)
    assert kubo_pinned(kubo, old_cid)  # blocks common to both stay protected meanwhile
    assert (await node.delete(f"/psa/pins/{new['requestid']}", headers=node.auth)).status == 202
    assert not kubo_pinned(kubo, old_cid)


async def test_replace_with_same_cid_keeps_pin(node, kubo):
    cid = kubo_content(kubo)
    old = await add(node, cid, name="a")
    await wait_status(node, old["requestid"])
    status, new = await post_pin(node, {"cid": cid, "name": "b"}, path=f"/psa/pins/{old['requestid']}")
    assert status == 202
    assert (await wait_status(node, new["requestid"]))["status"] == "pinned"
    assert kubo_pinned(kubo, cid)


async def test_other_owner_sees_nothing(node):
    body = await add(node, random_cid())
    store = node.app[STORE]
    other = await store.run(store.create_token, "someone-else")
    hdr = {"Authorization": f"Bearer {other}"}
    rid = body["requestid"]
    for method in ("get", "delete"):
        resp = await getattr(node, method)(f"/psa/pins/{rid}", headers=hdr)
        assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")
    status, out = await post_pin(node, {"cid": random_cid()}, headers=hdr, path=f"/psa/pins/{rid}")
    assert_failure(status, out, 404, "NOT_FOUND")
    resp = await node.get("/psa/pins?status=queued,pinning,pinned,failed", headers=hdr)
    assert (await resp.json()) == {"count": 0, "results": []}
    assert (await get(node, rid))["requestid"] == rid  # untouched


# --- filters ------------------------------------------------------------------------------------------
@pytest.fixture
async def catalog(node_factory):
    """A node whose worker is stopped, holding requests in known states."""
    node = await node_factory("kubo")
    await node.app[PIN_WORKER].stop()
    store = node.app[STORE]
    specs = [
        ("Report.PDF", "pinned", {"app": "a", "team": "x"}),
        ("report.pdf", "pinned", {"app": "a"}),
        ("annual report 2020", "queued", {"app": "b"}),
        ("ÄRGER", "failed", {"app": "b", 'we"ird.key': "v"}),
        (None, "pinning", {}),
        ("100%_done", "pinned", {}),
    ]
    rows = []
    for name, status, meta in specs:
        row = await store.run(store.create_pin, "tester", random_cid(), name, [], meta)
        await store.run(store.set_pin_status, row["requestid"], status, {"error": "x"} if status == "failed" else {})
        rows.append(await store.run(store.get_pin, "tester", row["requestid"]))
    node.rows = rows
    return node


ALL = "status=queued,pinning,pinned,failed"


def names(body):
    return [r["pin"].get("name") for r in body["results"]]


async def test_list_default_is_pinned_newest_first(catalog):
    body = await ls(catalog)
    assert names(body) == ["100%_done", "report.pdf", "Report.PDF"] and body["count"] == 3
    created = [r["created"] for r in body["results"]]
    assert created == sorted(created, reverse=True)
    body = await ls(catalog, ALL)
    assert body["count"] == 6 and len(body["results"]) == 6
    assert names(body) == [r.get("name") for r in reversed(catalog.rows)]


async def test_list_status_filter(catalog):
    assert names(await ls(catalog, "status=queued")) == ["annual report 2020"]
    assert names(await ls(catalog, "status=failed,pinning")) == [None, "ÄRGER"]
    failed = (await ls(catalog, "status=failed"))["results"][0]
    assert failed["status"] == "failed" and failed["info"] == {"error": "x"}
    # repeated parameter works like the comma form
    assert names(await ls(catalog, "status=failed&status=queued")) == ["ÄRGER", "annual report 2020"]


async def test_list_cid_filter(catalog):
    r0, r2 = catalog.rows[0], catalog.rows[2]
    body = await ls(catalog, f"cid={r0['cid']},{r2['cid']}&{ALL}")
    assert body["count"] == 2 and {r["requestid"] for r in body["results"]} == {r0["requestid"], r2["requestid"]}
    body = await ls(catalog, f"cid={r0['cid']}")
    assert body["count"] == 1
    body = await ls(catalog, f"cid={r2['cid']}")  # queued: a cid filter lifts the implicit status=pinned
    assert body["count"] == 1 and body["results"][0]["status"] == "queued"
    assert (await ls(catalog, f"cid={random_cid()}&{ALL}"))["count"] == 0


async def test_list_cid_v0_v1_same_key(node, kubo):
    cid = kubo_content(kubo)
    body = await add(node, cid)
    await wait_status(node, body["requestid"])
    v1 = CID.parse(cid).v1().encode()
    assert (await ls(node, f"cid={v1}"))["count"] == 1
    assert (await ls(node, f"cid={cid}"))["count"] == 1


async def test_list_name_match(catalog):
    q = f"&{ALL}"
    assert names(await ls(catalog, "name=report.pdf" + q)) == ["report.pdf"]
    assert names(await ls(catalog, "name=report.pdf&match=exact" + q)) == ["report.pdf"]
    assert names(await ls(catalog, "name=REPORT.pdf&match=iexact" + q)) == ["report.pdf", "Report.PDF"]
    assert names(await ls(catalog, "name=report&match=partial" + q)) == ["annual report 2020", "report.pdf"]
    assert names(await ls(catalog, "name=REPORT&match=ipartial" + q)) == ["annual report 2020", "report.pdf", "Report.PDF"]
    # non-ASCII case folding, and LIKE wildcards are plain characters
    assert names(await ls(catalog, f"name={quote('ärger')}&match=iexact" + q)) == ["ÄRGER"]
    assert names(await ls(catalog, f"name={quote('RG')}&match=ipartial" + q)) == ["ÄRGER"]
    assert names(await ls(catalog, f"name={quote('%_')}&match=partial" + q)) == ["100%_done"]
    assert names(await ls(catalog, f"name={quote('_')}&match=ipartial" + q)) == ["100%_done"]
    assert (await ls(catalog, "name=nothing&match=ipartial" + q))["count"] == 0
    # match without name is accepted and ignores nothing
    assert (await ls(catalog, "match=ipartial" + q))["count"] == 6


async def test_list_before_after_and_pagination(catalog):
    rows = catalog.rows  # oldest first
    body = await ls(catalog, f"before={quote(rows[3]['created'])}&{ALL}")
    assert [r["requestid"] for r in body["results"]] == [r["requestid"] for r in reversed(rows[:3])]
    body = await ls(catalog, f"after={quote(rows[3]['created'])}&{ALL}")
    assert [r["requestid"] for r in body["results"]] == [r["requestid"] for r in reversed(rows[4:])]
    both = await ls(catalog, f"after={quote(rows[0]['created'])}&before={quote(rows[2]['created'])}&{ALL}")
    assert [r["requestid"] for r in both["results"]] == [rows[1]["requestid"]]
    # other RFC 3339 spellings: an offset, and lower-case t/z, more digits
    from datetime import datetime, timedelta, timezone
    t = datetime.fromisoformat(rows[3]["created"].replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=2)))
    body = await ls(catalog, f"before={quote(t.isoformat())}&{ALL}")
    assert body["count"] == 3
    low = rows[3]["created"].replace("T", "t").replace("Z", "123z")  # .mmm123z: after .mmm
    assert (await ls(catalog, f"after={low}&{ALL}"))["count"] == 2
    assert (await ls(catalog, f"before={low}&{ALL}"))["count"] == 4
    assert (await ls(catalog, f"before=2000-01-01T00:00:00Z&{ALL}"))["count"] == 0
    assert (await ls(catalog, f"after=2000-01-01T00:00:00Z&{ALL}"))["count"] == 6
    # pagination as the spec describes: `before` = created of the oldest item so far
    seen, before = [], None
    while True:
        body = await ls(catalog, f"limit=2&{ALL}" + (f"&before={quote(before)}" if before else ""))
        seen += [r["requestid"] for r in body["results"]]
        if body["count"] <= len(body["results"]):
            break
        before = body["results"][-1]["created"]
    assert seen == [r["requestid"] for r in reversed(rows)]


async def test_list_limit(catalog):
    body = await ls(catalog, f"limit=1&{ALL}")
    assert body["count"] == 6 and len(body["results"]) == 1
    body = await ls(catalog, f"limit=1000&{ALL}")
    assert len(body["results"]) == 6
    store = catalog.app[STORE]
    for _ in range(9):
        await store.run(store.create_pin, "tester", random_cid(), None, [], {})
    body = await ls(catalog, ALL)
    assert body["count"] == 15 and len(body["results"]) == 10  # default limit


async def test_list_meta(catalog):
    q = f"&{ALL}"
    assert names(await ls(catalog, f"meta={quote(json.dumps({'app': 'a'}))}" + q)) == ["report.pdf", "Report.PDF"]
    assert names(await ls(catalog, f"meta={quote(json.dumps({'app': 'a', 'team': 'x'}))}" + q)) == ["Report.PDF"]
    weird = quote(json.dumps({'we"ird.key': "v"}))
    assert names(await ls(catalog, f"meta={weird}" + q)) == ["ÄRGER"]
    assert (await ls(catalog, f"meta={quote(json.dumps({'app': 'z'}))}" + q))["count"] == 0
    assert (await ls(catalog, f"meta={quote('{}')}" + q))["count"] == 6


async def test_list_filters_combine(catalog):
    q = f"name=report&match=ipartial&meta={quote(json.dumps({'app': 'a'}))}&status=pinned&limit=1"
    body = await ls(catalog, q)
    assert body["count"] == 2 and names(body) == ["report.pdf"]


# --- bad input -------------------------------------------------------------------------------------------
BAD_QUERIES = [
    "cid=notacid",
    "cid=",
    "cid=" + ",".join(random_cid() for _ in range(11)),
    "cid={c},{c}",
    "cid={c},,{c2}",
    "name=" + "x" * 256,
    "name=a&name=b",
    "match=fuzzy",
    "match=EXACT",
    "status=done",
    "status=pinned,",
    "status=pinned,pinned",
    "status=",
    "before=yesterday",
    "before=2020-07-27",
    "before=2020-07-27T17:32:28",
    "before=2020-13-27T17:32:28Z",
    "before=2020-02-30T17:32:28Z",
    "after=2020-07-27T25:00:00Z",
    "after=2020-07-27T17:32:28%2B24:00",
    "after=0000-01-01T00:00:00Z",
    "after=1",
    "limit=0",
    "limit=1001",
    "limit=-1",
    "limit=abc",
    "limit=1.5",
    "limit=",
    "limit=99999999999999999999",
    "meta=notjson",
    "meta=%5B%5D",
    "meta=" + quote(json.dumps({"a": 1})),
    "meta=" + quote(json.dumps({"a": None})),
    "meta=" + quote('"str"'),
]


@pytest.mark.parametrize("query", BAD_QUERIES)
async def test_list_bad_query(node, query):
    query = query.format(c=random_cid(), c2=random_cid())
    resp = await node.get(f"/psa/pins?{query}", headers=node.auth)
    body = await resp.json()
    assert_failure(resp.status, body, 400, "BAD_REQUEST")


BAD_BODIES = [
    b"",
    b"not json",
    b"[]",
    b'"bafy"',
    b"null",
    {},
    {"name": "no cid"},
    {"cid": ""},
    {"cid": "notacid"},
    {"cid": 123},
    {"cid": None},
    {"cid": "Qmshort"},
    {"cid": "{c}", "name": "x" * 256},
    {"cid": "{c}", "name": 5},
    {"cid": "{c}", "name": None},
    {"cid": "{c}", "origins": "/ip4/1.2.3.4/tcp/1"},
    {"cid": "{c}", "origins": [1]},
    {"cid": "{c}", "origins": ["not a multiaddr"]},
    {"cid": "{c}", "origins": ["/ip4"]},
    {"cid": "{c}", "origins": ["/ip4/1.2.3.4/tcp/1", "/ip4/1.2.3.4/tcp/1"]},
    {"cid": "{c}", "origins": [f"/ip4/1.2.3.4/tcp/{i}" for i in range(21)]},
    {"cid": "{c}", "meta": "x"},
    {"cid": "{c}", "meta": []},
    {"cid": "{c}", "meta": {"a": 1}},
    {"cid": "{c}", "meta": {"a": {"b": "c"}}},
    {"cid": "{c}", "meta": {str(i): "v" for i in range(1001)}},
]


def _body(spec):
    if isinstance(spec, bytes):
        return spec
    return json.loads(json.dumps(spec).replace("{c}", random_cid()))


@pytest.mark.parametrize("spec", BAD_BODIES, ids=[f"b{i}" for i in range(len(BAD_BODIES))])
async def test_add_and_replace_bad_body(node, spec):
    status, body = await post_pin(node, _body(spec))
    assert_failure(status, body, 400, "BAD_REQUEST")
    existing = await add(node, random_cid())
    status, body = await post_pin(node, _body(spec), path=f"/psa/pins/{existing['requestid']}")
    assert_failure(status, body, 400, "BAD_REQUEST")
    assert (await get(node, existing["requestid"]))["requestid"] == existing["requestid"]  # not replaced


async def test_add_accepts_edge_values(node):
    cid = random_cid()
    origins = [f"/ip4/10.0.0.1/tcp/{i}/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN" for i in range(20)]
    meta = {str(i): "v" for i in range(1000)}
    body = await add(node, cid, name="é" * 255, origins=origins, meta=meta, unknown_field=True)
    assert body["pin"]["name"] == "é" * 255 and len(body["pin"]["origins"]) == 20 and len(body["pin"]["meta"]) == 1000
    body = await add(node, cid, name="")  # the same CID again: a new request
    assert body["pin"]["name"] == ""
    assert "name" not in (await add(node, cid))["pin"]


async def test_body_too_large(node):
    data = io.BytesIO(json.dumps({"cid": random_cid(), "meta": {"a": "x" * (2 * 1024**2)}}).encode())
    resp = await node.post("/psa/pins", data=data, headers={**node.auth, "Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 413 and body["error"]["reason"] == "PAYLOAD_TOO_LARGE"


async def test_unknown_request_ids(node):
    for rid in (str(uuid.uuid4()), "not-a-uuid", "x" * 300):
        resp = await node.get(f"/psa/pins/{rid}", headers=node.auth)
        assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")
        resp = await node.delete(f"/psa/pins/{rid}", headers=node.auth)
        assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")
        status, body = await post_pin(node, {"cid": random_cid()}, path=f"/psa/pins/{rid}")
        assert_failure(status, body, 404, "NOT_FOUND")


async def test_unknown_paths_and_methods(node):
    resp = await node.put("/psa/pins", headers=node.auth)
    body = await resp.json()
    assert_failure(resp.status, body, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["Allow"]
    resp = await node.patch(f"/psa/pins/{uuid.uuid4()}", headers=node.auth)
    assert_failure(resp.status, await resp.json(), 405, "METHOD_NOT_ALLOWED")
    for path in ("/psa", "/psa/", "/psa/nope", "/psa/pins/a/b"):
        resp = await node.get(path, headers=node.auth)
        assert_failure(resp.status, await resp.json(), 404, "NOT_FOUND")


# --- auth ----------------------------------------------------------------------------------------------------
AUTH_CASES = [
    None,
    {"Authorization": "Bearer nope"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer"},
]


@pytest.mark.parametrize("headers", AUTH_CASES, ids=["none", "invalid", "basic", "empty"])
async def test_unauthorized(node_factory, headers):
    node = await node_factory("kubo", auth__anonymous_uploads=True)  # anonymous uploads do not open the PSA
    rid = (await add(node, random_cid()))["requestid"]
    h = headers or {}
    calls = [
        node.get("/psa/pins", headers=h),
        node.post("/psa/pins", data=json.dumps({"cid": random_cid()}), headers=h),
        node.get(f"/psa/pins/{rid}", headers=h),
        node.post(f"/psa/pins/{rid}", data=json.dumps({"cid": random_cid()}), headers=h),
        node.delete(f"/psa/pins/{rid}", headers=h),
    ]
    for call in calls:
        resp = await call
        assert_failure(resp.status, await resp.json(), 401, "UNAUTHORIZED")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await get(node, rid))["requestid"] == rid


async def test_revoked_token(node):
    store = node.app[STORE]
    token = await store.run(store.create_token, "short-lived")
    hdr = {"Authorization": f"Bearer {token}"}
    assert (await node.get("/psa/pins", headers=hdr)).status == 200
    await store.run(store.revoke_token, "short-lived")
    resp = await node.get("/psa/pins", headers=hdr)
    assert_failure(resp.status, await resp.json(), 401, "UNAUTHORIZED")


# --- the worker ---------------------------------------------------------------------------------------------------
async def test_unretrievable_cid_fails_after_pin_timeout(node_factory):
    node = await node_factory("kubo", pinning__pin_timeout=1)
    body = await add(node, random_cid())
    started = time.monotonic()
    done = await wait_status(node, body["requestid"], timeout=15)
    assert done["status"] == "failed"
    assert "timed out" in done["info"]["error"]
    assert time.monotonic() - started < 10
    listed = await ls(node, "status=failed")
    assert listed["count"] == 1 and listed["results"][0]["info"]["error"] == done["info"]["error"]


async def test_worker_stopped_then_started(node, kubo):
    worker = node.app[PIN_WORKER]
    await worker.stop()
    cid = kubo_content(kubo)
    body = await add(node, cid)
    await asyncio.sleep(0.3)
    assert (await get(node, body["requestid"]))["status"] == "queued"
    await worker.start()
    assert (await wait_status(node, body["requestid"]))["status"] == "pinned"
    assert kubo_pinned(kubo, cid)


async def _start(aiohttp_client, config, token):
    client = await aiohttp_client(create_app(config))
    client.token, client.auth = token, {"Authorization": f"Bearer {token}"}
    return client


async def test_worker_resumes_a_request_left_pinning(aiohttp_client, kubo, tmp_path):
    """A crash mid-pin leaves a row 'pinning': the next start picks it up."""
    config = make_config(tmp_path, storage__engine="kubo", storage__kubo_api=kubo.api_url)
    store = MetadataStore(config.data_dir / "hearth.sqlite")
    store.migrate()
    token = store.create_token("tester")
    cid = kubo_content(kubo)
    row = store.create_pin("tester", cid, "crashed", [], {})
    store.set_pin_status(row["requestid"], "pinning", {})
    queued = store.create_pin("tester", kubo_content(kubo), "never started", [], {})
    store.db.conn.close()
    node = await _start(aiohttp_client, config, token)
    assert (await wait_status(node, row["requestid"]))["status"] == "pinned"
    assert (await wait_status(node, queued["requestid"]))["status"] == "pinned"
    assert kubo_pinned(kubo, cid)


async def test_kubo_down_keeps_requests_queued_then_pins_them(aiohttp_client, kubo, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    config = make_config(tmp_path, storage__engine="kubo", storage__kubo_api=dead)
    first = await aiohttp_client(create_app(config))
    store = first.app[STORE]
    token = await store.run(store.create_token, "tester")
    first.auth = {"Authorization": f"Bearer {token}"}
    cid = kubo_content(kubo)
    body = await add(first, cid)  # 202 even though the engine is down
    assert body["status"] == "queued"
    # never empty: the node's own HTTP address stands in (with its peer ID, which Kubo's client requires)
    assert len(body["delegates"]) == 1 and body["delegates"][0].startswith("/ip4/127.0.0.1/tcp/8787/http/p2p/12D3KooW")
    await asyncio.sleep(1.5)
    now = await get(first, body["requestid"])
    assert now["status"] == "queued", now  # never 'failed' because Kubo is down
    assert "storage engine" in now["info"].get("status_details", "")
    attempts = (await store.run(lambda: store.db.execute(
        "SELECT attempts FROM pins WHERE requestid = ?", [body["requestid"]]).fetchone()))[0]
    assert attempts >= 1
    await first.close()  # the app stops; the request survives in the database
    config.set("storage", "kubo_api", kubo.api_url)
    second = await _start(aiohttp_client, config, token)
    assert (await wait_status(second, body["requestid"]))["status"] == "pinned"
    assert kubo_pinned(kubo, cid)


async def test_delete_while_pinning_cancels(node_factory):
    node = await node_factory("kubo", pinning__pin_timeout=30)
    body = await add(node, random_cid())
    await wait_status(node, body["requestid"], want=("pinning",), timeout=5)
    started = time.monotonic()
    resp = await node.delete(f"/psa/pins/{body['requestid']}", headers=node.auth)
    assert resp.status == 202 and time.monotonic() - started < 5
    assert not node.app[PIN_WORKER]._active


async def test_unpin_retried_when_the_engine_was_down(node, kubo, monkeypatch):
    from storage.engine import EngineUnavailable

    cid = kubo_content(kubo)
    body = await add(node, cid)
    await wait_status(node, body["requestid"])
    engine, real_unpin = node.app[ENGINE], node.app[ENGINE].unpin

    async def down(c):
        raise EngineUnavailable("simulated outage")

    monkeypatch.setattr(engine, "unpin", down)
    assert (await node.delete(f"/psa/pins/{body['requestid']}", headers=node.auth)).status == 202
    assert kubo_pinned(kubo, cid)
    monkeypatch.setattr(engine, "unpin", real_unpin)
    node.app[PIN_WORKER].wake()
    for _ in range(100):
        if not kubo_pinned(kubo, cid):
            break
        await asyncio.sleep(0.05)
    assert not kubo_pinned(kubo, cid)


async def test_worker_concurrency(node_factory, kubo):
    node = await node_factory("kubo", pinning__workers=2, pinning__pin_timeout=30)
    stuck = [await add(node, random_cid()) for _ in range(2)]
    for s in stuck:
        await wait_status(node, s["requestid"], want=("pinning",), timeout=5)
    cid = kubo_content(kubo)
    waiting = await add(node, cid)
    await asyncio.sleep(0.3)
    assert (await get(node, waiting["requestid"]))["status"] == "queued"  # both slots busy
    await node.delete(f"/psa/pins/{stuck[0]['requestid']}", headers=node.auth)
    assert (await wait_status(node, waiting["requestid"]))["status"] == "pinned"


# --- Kubo's own remote-pinning client ---------------------------------------------------------------------------
async def ipfs_async(kubo, *args, timeout=60) -> str:
    proc = await asyncio.create_subprocess_exec(kubo.bin, *args, env=kubo.env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"ipfs {' '.join(args)} timed out")
    assert proc.returncode == 0, f"ipfs {' '.join(args)} failed: {err.decode()}"
    return out.decode()


async def test_kubo_remote_pinning_client(node, kubo):
    service = f"hearth-{uuid.uuid4().hex[:12]}"
    endpoint = str(node.make_url("/psa"))
    await ipfs_async(kubo, "pin", "remote", "service", "add", service, endpoint, node.token)
    try:
        cid = kubo_content(kubo)
        assert not kubo_pinned(kubo, cid)
        out = await ipfs_async(kubo, "pin", "remote", "add", f"--service={service}", "--name=kubo-made", cid)
        assert "pinned" in out and cid in out
        assert kubo_pinned(kubo, cid)  # Hearth's worker pinned it on its engine
        listed = await ls(node)
        assert listed["count"] == 1 and listed["results"][0]["pin"]["name"] == "kubo-made"
        # Kubo sent its own multiaddrs as origins
        assert listed["results"][0]["pin"]["origins"] and all("/p2p/" in o for o in listed["results"][0]["pin"]["origins"])
        out = await ipfs_async(kubo, "pin", "remote", "ls", f"--service={service}", "--status=pinned")
        assert out.split() == [cid, "pinned", "kubo-made"]
        out = await ipfs_async(kubo, "pin", "remote", "ls", f"--service={service}", f"--cid={cid}",
                               "--status=queued,pinning,pinned,failed")
        assert cid in out
        await ipfs_async(kubo, "pin", "remote", "rm", f"--service={service}", f"--cid={cid}")
        out = await ipfs_async(kubo, "pin", "remote", "ls", f"--service={service}", "--status=queued,pinning,pinned,failed")
        assert out.strip() == ""
        assert (await ls(node, ALL))["count"] == 0
        assert not kubo_pinned(kubo, cid)
    finally:
        await ipfs_async(kubo, "pin", "remote", "service", "rm", service)


@pytest.mark.parametrize("engine", ["embedded", "kubo"])
async def test_delete_does_not_wait_for_another_requests_fetch(node_factory, engine):
    """Two requests for content nobody has: deleting one answers at once, although the
    other is still fetching (the fetch runs outside the content's lock); an upload of
    the same content is not held up either."""
    node = await node_factory(engine, pinning__pin_timeout=60)
    cid = random_cid()
    first = await add(node, cid, name="one")
    second = await add(node, cid, name="two")
    await wait_status(node, second["requestid"], want=("pinning",))
    started = time.monotonic()
    resp = await node.delete(f"/psa/pins/{first['requestid']}", headers=node.auth)
    assert resp.status == 202
    assert time.monotonic() - started < 2
    assert (await get(node, second["requestid"]))["status"] == "pinning"
    resp = await node.delete(f"/psa/pins/{second['requestid']}", headers=node.auth)
    assert resp.status == 202 and time.monotonic() - started < 4
