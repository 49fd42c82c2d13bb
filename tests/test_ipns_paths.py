"""/ipns/{name}[/{path}] through the one resolver (naming/resolver.py), with a
name system made for the test: chains of names, sub-paths, TTL caching headers,
and the errors every name system maps to."""
from __future__ import annotations

import pytest

from gateway.keys import NAMES
from naming import NameNotFound, NameUnavailable, Resolution
from tests.gateway_helpers import upload, upload_tree


class StaticNames:
    """A name system from a dict: name -> (value, ttl); 'down' raises NameUnavailable."""

    name = "static"

    def __init__(self, table: dict):
        self.table = table

    def handles(self, name: str) -> bool:
        return name.startswith("test-")

    async def resolve(self, name: str) -> Resolution:
        if name == "test-down":
            raise NameUnavailable("the test name system is down")
        if name not in self.table:
            raise NameNotFound(f"no value for {name}")
        value, ttl = self.table[name]
        return Resolution(value, ttl, self.name)


@pytest.mark.parametrize("engine", ["embedded", "kubo"])
async def test_ipns_paths(node_factory, engine):
    node = await node_factory(engine)
    site = await upload_tree(node, {"site/index.html": b"<h1>hi</h1>", "site/a/b.txt": b"deep"})
    file = await upload(node, b"hello name", "n.txt")
    names = StaticNames({
        "test-file": (f"/ipfs/{file['cid']}", 60),
        "test-site": (f"/ipfs/{site['cid']}/site", 300),
        "test-alias": ("/ipns/test-site/a", 30),
        "test-loop": ("/ipns/test-loop2", 10),
        "test-loop2": ("/ipns/test-loop", 10),
        "test-bad": ("/ipfs/not-a-cid", 10),
    })
    node.app[NAMES].add(names)

    resp = await node.get("/ipns/test-file")
    assert resp.status == 200 and await resp.read() == b"hello name"
    assert resp.headers["Cache-Control"] == "public, max-age=60"  # never immutable
    assert resp.headers["X-Ipfs-Path"] == "/ipns/test-file"
    assert resp.headers["Etag"] == f'"{file["cid"]}"'
    resp = await node.get("/ipns/test-alias/b.txt")  # two hops, the sub-paths joined, the smallest TTL
    assert resp.status == 200 and await resp.read() == b"deep"
    assert resp.headers["Cache-Control"] == "public, max-age=30"
    resp = await node.get("/ipns/test-site/")
    assert resp.status == 200 and b"<h1>hi</h1>" in await resp.read()
    assert (await node.head("/ipns/test-file")).status == 200
    for path, status, code in (("/ipns/test-nothing", 404, "name_not_found"), ("/ipns/test-down", 502, "name_unavailable"),
                               ("/ipns/test-loop", 400, "invalid_name"), ("/ipns/test-bad", 400, "invalid_name"),
                               ("/ipns/not%20a%20name", 400, "invalid_name")):
        resp = await node.get(path)
        body = await resp.json()
        assert resp.status == status and body["error"]["code"] == code, (path, body)
    assert (await node.get("/ipns/test-down")).headers["Retry-After"]
    # named content is not kept in the response cache: a new value is served at once
    names.table["test-file"] = (f"/ipfs/{site['cid']}/site/a/b.txt", 60)
    resp = await node.get("/ipns/test-file")
    assert await resp.read() == b"deep"
