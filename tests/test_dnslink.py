"""DNSLink (naming/dnslink.py) against a real DNS server on loopback
(tests/support/dns.py: dnslib over UDP/TCP, and DoH for Kubo): resolution,
TTL-bounded caching, negative caching, DNS down, the static map, several TXT
values, CNAMEs, per-suffix servers, chains; served on `/ipns/{name}/...`, on a
DNSLink origin (`Host: {name}`, with its `_redirects`) and on an inlined
`{name}.ipns.localhost` subdomain; then side by side with Kubo's gateway
resolving the same zone (Kubo's DNS.Resolvers takes DoH URLs only, http on
127.0.0.1 included, so it asks the same server over DoH)."""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from gateway.config import ConfigError, load_config
from gateway.keys import NAMES
from naming import NameNotFound, NameUnavailable
from naming.dnslink import DNSLink, normalize
from tests.gateway_helpers import upload, upload_tree
from tests.origin_helpers import origin_node  # noqa: F401 - fixture
from tests.support.dns import BlackHole, DnsServer
from tests.support.kubo import KuboDaemon

SITE = {
    "index.html": b"<h1>home</h1>\n",
    "one.html": b"one\n",
    "articles/a.txt": b"article a\n",
    "articles/deep/b.txt": b"article b\n",
    "_redirects": b"/old /one.html 302\n/app/* /index.html 200\n",
}


@pytest.fixture(scope="module")
def dns():
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


async def upload_site(node) -> str:
    up = await upload_tree(node, {f"site/{k}": v for k, v in SITE.items()})
    resp = await node.get(f"/ipfs/{up['cid']}/site/?format=raw")
    return resp.headers["X-Ipfs-Roots"].split(",")[-1]


def max_age(resp) -> int:
    value = resp.headers["Cache-Control"]
    assert value.startswith("public, max-age="), value
    return int(value.rsplit("=", 1)[1])


def dns_node(origin_node, server: str, engine: str = "embedded", **overrides):
    overrides.setdefault("dns__resolvers", {".": server})
    overrides.setdefault("dns__min_ttl", 1)
    return origin_node(engine, **overrides)


# --- names ------------------------------------------------------------------------------

def test_which_names_are_dnslink_names():
    system = DNSLink()
    for name in ("example.com", "Example.COM.", "en.wikipedia-on-ipfs.org", "_under.example", "xn--bcher-kva.example",
                 "bücher.example", "a.b.c.d.e"):
        assert system.handles(name), name
    for name in ("localhost", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
                 "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8", "a..b", ".example", "-a.example",
                 "a b.example", "x" * 64 + ".example", ("a." * 130) + "example", ""):
        assert not system.handles(name), name
    assert normalize("Bücher.Example.") == "xn--bcher-kva.example"


def test_config_validation(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[dns]\nresolvers = {"eth." = "https://dns.eth.limo/dns-query", "corp." = "udp://10.0.0.1:5353", '
                    '"." = "system"}\nstatic = {"Intranet.Example" = "/ipfs/bafkqaaa/x"}\nmax_ttl = 600\n')
    config = load_config(path, env={})
    assert config["dns"]["resolvers"] == {"eth.": "https://dns.eth.limo/dns-query", "corp.": "udp://10.0.0.1:5353",
                                          ".": "system"}
    assert config["dns"]["static"] == {"intranet.example": "/ipfs/bafkqaaa/x"}
    config = load_config(None, env={"HEARTH_DNS_RESOLVERS": '{".": "tcp://127.0.0.1:53"}'})
    assert config["dns"]["resolvers"] == {".": "tcp://127.0.0.1:53"}
    for text, message in [
        ('resolvers = {"eth" = "https://x/dns-query"}', "not a domain suffix"),
        ('resolvers = {"." = "dns.example:53"}', "a DNS server is udp://"),
        ('resolvers = {"." = "udp://dns.example:53"}', "must be an IP address"),
        ('resolvers = {"." = 53}', "must be a table"),
        ('static = {"nodot" = "/ipfs/bafkqaaa"}', "not a DNS name"),
        ('static = {"a.example" = "/ipfs/not-a-cid"}', "must be /ipfs/{cid}"),
        ('static = {"a.example" = "https://example.com"}', "must be /ipfs/{cid}"),
        ("timeout = 0", "[dns] timeout must be between 1"),
    ]:
        path.write_text(f"[dns]\n{text}\n")
        with pytest.raises(ConfigError) as info:
            load_config(path, env={})
        assert message in str(info.value), (text, str(info.value))
    with pytest.raises(ConfigError, match=r"\[dns\] resolvers: must be a table"):
        load_config(None, env={"HEARTH_DNS_RESOLVERS": "udp://127.0.0.1"})


# --- the name system against the DNS server --------------------------------------------------

async def test_resolution_values_and_errors(dns, black_hole):
    z = dns.zone
    cid = "bafkqaaa"
    z.txt("_dnslink.plain.test", f"dnslink=/ipfs/{cid}", "v=spf1 -all", ttl=30)
    z.txt("_dnslink.several.test", f"dnslink=/ipfs/{cid}/b", "dnslink=/hyper/abc", f"dnslink=/ipfs/{cid}/a",
          "dnslink=/ipfs/not-a-cid", f"dnslink=/ipns/zzz.test", ttl=30)
    z.txt("_dnslink.invalid.test", "dnslink=/ipfs/not-a-cid", "dnslink=/foo/bar", f"/ipfs/{cid}", "dnslink=", ttl=30)
    z.txt("_dnslink.split.test", ["dnslink=/ipfs/", cid, "/x"], ttl=30)  # one record, several strings
    z.txt("plain-apex.test", f"dnslink=/ipfs/{cid}", ttl=30)  # on the name itself: not looked at (the spec)
    z.cname("_dnslink.alias.test", "_dnslink.plain.test", ttl=7)  # CNAME delegation
    z.txt("other.test", "hello")  # the name exists, no _dnslink
    z.servfail.add("_dnslink.broken.test")
    system = DNSLink({".": dns.udp_url}, min_ttl=1, max_ttl=3600, timeout=2)
    assert (await system.resolve("plain.test")).value == f"/ipfs/{cid}"
    assert (await system.resolve("plain.test")).ttl <= 30
    # several valid values: lexicographic order, the first; invalid ones and other namespaces ignored
    assert (await system.resolve("several.test")).value == f"/ipfs/{cid}/a"
    assert (await system.resolve("split.test")).value == f"/ipfs/{cid}/x"
    alias = await system.resolve("alias.test")
    assert alias.value == f"/ipfs/{cid}" and alias.ttl == 7  # the smallest TTL of the chain
    for name in ("invalid.test", "plain-apex.test", "other.test", "nxdomain.test"):
        with pytest.raises(NameNotFound, match="has no DNSLink"):
            await system.resolve(name)
    with pytest.raises(NameUnavailable, match="SERVFAIL"):
        await system.resolve("broken.test")
    down = DNSLink({".": black_hole.url}, timeout=1)
    with pytest.raises(NameUnavailable, match="did not answer"):
        await down.resolve("plain.test")
    # per-suffix servers, the longest suffix first; the rest to the black hole
    mixed = DNSLink({"test.": dns.tcp_url, "broken.test.": black_hole.url, ".": black_hole.url}, timeout=1)
    assert mixed.upstream_for("_dnslink.plain.test.").label == dns.tcp_url
    assert mixed.upstream_for("_dnslink.x.broken.test.").label == black_hole.url
    assert (await mixed.resolve("plain.test")).value == f"/ipfs/{cid}"
    with pytest.raises(NameUnavailable, match="did not answer"):
        await mixed.resolve("broken.test")
    with pytest.raises(NameUnavailable):
        await mixed.resolve("plain.example")


async def test_ttl_caching(dns):
    z = dns.zone
    z.txt("_dnslink.ttl.test", "dnslink=/ipfs/bafkqaaa/one", ttl=2)
    z.txt("_dnslink.long.test", "dnslink=/ipfs/bafkqaaa", ttl=100000)
    z.txt("_dnslink.zero.test", "dnslink=/ipfs/bafkqaaa", ttl=0)
    system = DNSLink({".": dns.udp_url}, min_ttl=1, max_ttl=300, negative_ttl=2)
    first = await system.resolve("ttl.test")
    assert first.ttl == 2
    z.txt("_dnslink.ttl.test", "dnslink=/ipfs/bafkqaaa/two", ttl=2)
    # concurrent and repeated lookups within the TTL: one query, the old value
    answers = await asyncio.gather(*(system.resolve("ttl.test") for _ in range(20)))
    assert {a.value for a in answers} == {"/ipfs/bafkqaaa/one"} and z.count("_dnslink.ttl.test") == 1
    await asyncio.sleep(2.2)
    assert (await system.resolve("ttl.test")).value == "/ipfs/bafkqaaa/two"
    assert z.count("_dnslink.ttl.test") == 2
    # the bounds: [min_ttl, max_ttl]
    assert (await system.resolve("long.test")).ttl == 300
    assert (await system.resolve("zero.test")).ttl == 1
    # negative answers are cached too, for negative_ttl (the zone's SOA says 30: the smaller wins)
    before = z.count("_dnslink.none.test")
    for _ in range(3):
        with pytest.raises(NameNotFound):
            await system.resolve("none.test")
    assert z.count("_dnslink.none.test") == before + 1
    z.txt("_dnslink.none.test", "dnslink=/ipfs/bafkqaaa", ttl=60)
    await asyncio.sleep(2.2)
    assert (await system.resolve("none.test")).value == "/ipfs/bafkqaaa"
    # failures are not cached: the next request asks again
    z.servfail.add("_dnslink.flaky.test")
    for _ in range(2):
        with pytest.raises(NameUnavailable):
            await system.resolve("flaky.test")
    assert z.count("_dnslink.flaky.test") == 2
    z.servfail.discard("_dnslink.flaky.test")
    z.txt("_dnslink.flaky.test", "dnslink=/ipfs/bafkqaaa")
    assert (await system.resolve("flaky.test")).value == "/ipfs/bafkqaaa"


# --- served by the gateway --------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["embedded", "kubo"])
async def test_ipns_paths_and_dnslink_origin(origin_node, dns, engine):
    node = await dns_node(origin_node, dns.udp_url, engine, dns__max_ttl=300)
    cid = await upload_site(node)
    z = dns.zone
    name = f"site-{engine}.test"
    z.txt(f"_dnslink.{name}", f"dnslink=/ipfs/{cid}", ttl=42)
    z.txt(f"_dnslink.articles-{engine}.test", f"dnslink=/ipfs/{cid}/articles", ttl=600)
    # the spec's chain: a -> /ipns/b/path-b, b -> /ipfs/cid/path-c; GET /path-a
    z.txt(f"_dnslink.a-{engine}.test", f"dnslink=/ipns/b-{engine}.test/deep", ttl=500)
    z.txt(f"_dnslink.b-{engine}.test", f"dnslink=/ipfs/{cid}/articles", ttl=400)

    resp = await node.get(f"/ipns/{name}/one.html")
    assert resp.status == 200 and await resp.read() == b"one\n"
    assert resp.headers["Cache-Control"] == "public, max-age=42"  # the DNS TTL, never immutable
    assert resp.headers["X-Ipfs-Path"] == f"/ipns/{name}/one.html"
    assert resp.headers["X-Ipfs-Roots"].split(",")[0] == cid
    resp = await node.get(f"/ipns/{name}/")
    assert resp.status == 200 and await resp.read() == SITE["index.html"]
    resp = await node.get(f"/ipns/articles-{engine}.test/a.txt")  # the value's own path, then the request's
    assert await resp.read() == b"article a\n" and resp.headers["Cache-Control"] == "public, max-age=300"  # max_ttl
    resp = await node.get(f"/ipns/a-{engine}.test/b.txt")
    assert resp.status == 200 and await resp.read() == b"article b\n"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    # the path gateway has no _redirects: /old is missing
    assert (await node.get(f"/ipns/{name}/old", allow_redirects=False)).status == 404

    # a DNSLink gateway: Host is the name; its _redirects apply
    host = {"Host": name}
    resp = await node.get("/", headers=host)
    assert resp.status == 200 and await resp.read() == SITE["index.html"]
    assert resp.headers["X-Ipfs-Path"] == f"/ipns/{name}/"
    resp = await node.get("/articles/deep/b.txt", headers=host)
    assert await resp.read() == b"article b\n"
    resp = await node.get("/old?x=1", headers=host, allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/one.html?x=1"
    resp = await node.get("/app/settings/profile", headers=host)  # a single-page app
    assert resp.status == 200 and await resp.read() == SITE["index.html"]
    assert 40 <= max_age(resp) <= 42  # from the cache: the seconds left
    # an inlined DNSLink name on a subdomain gateway: my--site-test.ipns.localhost is my-site.test
    z.txt(f"_dnslink.my-site-{engine}.test", f"dnslink=/ipfs/{cid}", ttl=42)
    resp = await node.get("/one.html", headers={"Host": f"my--site--{engine}-test.ipns.localhost"})
    assert resp.status == 200 and await resp.read() == b"one\n"

    # errors: no DNSLink is a 404 on /ipns/; a Host without one is the plain path gateway (as
    # Kubo), where "/" is not found either
    resp = await node.get("/ipns/nothing-here.test/")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "name_not_found"
    assert (await node.get("/", headers={"Host": "nothing-here.test"})).status == 404
    z.txt(f"_dnslink.loop-{engine}.test", f"dnslink=/ipns/loop-{engine}.test")
    resp = await node.get(f"/ipns/loop-{engine}.test/")
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_name"


async def test_dns_down_is_504_or_502_with_retry_after(origin_node, black_hole, dns):
    # no answer within [dns] timeout: 504 Gateway Timeout
    node = await dns_node(origin_node, black_hole.url, dns__timeout=1)
    resp = await node.get("/ipns/down.test/")
    body = await resp.json()
    assert resp.status == 504 and body["error"]["code"] == "name_unavailable", body
    assert resp.headers["Retry-After"]
    assert "did not answer" in body["error"]["message"]
    # a Host whose DNSLink cannot be resolved now is served as the plain path gateway (as
    # Kubo: the node cannot tell a DNSLink site from any other Host without the answer)
    assert (await node.get("/x", headers={"Host": "down.test"})).status == 404
    # the server answers, with a failure (SERVFAIL): 502 Bad Gateway; no record (NXDOMAIN): 404
    dns.zone.servfail.add("_dnslink.failing.test")
    node = await dns_node(origin_node, dns.udp_url)
    resp = await node.get("/ipns/failing.test/")
    body = await resp.json()
    assert resp.status == 502 and "SERVFAIL" in body["error"]["message"] and resp.headers["Retry-After"], body
    resp = await node.get("/ipns/no-such-name.test/")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "name_not_found"


async def test_static_map_for_air_gapped_nodes(origin_node, black_hole, tmp_path):
    node = await dns_node(origin_node, black_hole.url, dns__timeout=1, dns__max_ttl=120)
    cid = await upload_site(node)
    # a second node, its static map pointing at the site (no DNS server answers at all)
    static = await dns_node(origin_node, black_hole.url, dns__timeout=1, dns__max_ttl=120,
                            dns__static={"wiki.intranet": f"/ipfs/{cid}", "docs.intranet": f"dnslink=/ipfs/{cid}/articles"})
    await upload_site(static)
    resp = await static.get("/ipns/wiki.intranet/one.html")
    assert resp.status == 200 and await resp.read() == b"one\n"
    assert resp.headers["Cache-Control"] == "public, max-age=120"
    resp = await static.get("/a.txt", headers={"Host": "docs.intranet"})
    assert resp.status == 200 and await resp.read() == b"article a\n"
    resp = await static.get("/ipns/other.intranet/")  # not in the map: DNS, which is down
    assert resp.status == 504


async def test_doh_through_the_guarded_client(origin_node, dns):
    # DoH goes through the outbound client and its policy: http and loopback need both settings
    refused = await dns_node(origin_node, dns.doh_url)
    dns.zone.txt("_dnslink.doh.test", "dnslink=/ipfs/bafkqaaa", ttl=60)
    resp = await refused.get("/ipns/doh.test/")
    body = await resp.json()
    assert resp.status == 502 and "allow_http" in body["error"]["message"], body
    node = await dns_node(origin_node, dns.doh_url, outbound__allow_http=True, outbound__allow_private=True)
    resp = await node.get("/ipns/doh.test/")
    assert resp.status == 200 and await resp.read() == b""
    assert resp.headers["X-Ipfs-Roots"] == "bafkqaaa"


# --- side by side with Kubo --------------------------------------------------------------------

@pytest.fixture(scope="module")
def dns_kubo(dns):
    """A Kubo daemon whose DNS is the test zone (over DoH: DNS.Resolvers takes nothing else)."""
    daemon = KuboDaemon()
    daemon.init()
    daemon.ipfs("config", "--json", "DNS.Resolvers", json.dumps({".": dns.doh_url}))
    daemon.start()
    yield daemon
    daemon.cleanup()


async def test_dnslink_side_by_side_with_kubo(origin_node, dns, dns_kubo, tmp_path):
    node = await dns_node(origin_node, dns.udp_url)
    cid = await upload_site(node)
    root = tmp_path / "site"
    for rel, data in SITE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    assert dns_kubo.ipfs("add", "-r", "-Q", "--cid-version=1", str(root)).strip() == cid
    z = dns.zone
    z.txt("_dnslink.kubo-site.test", f"dnslink=/ipfs/{cid}", ttl=60)
    z.txt("_dnslink.kubo-chain.test", "dnslink=/ipns/kubo-site.test/articles", ttl=60)
    z.cname("_dnslink.kubo-alias.test", "_dnslink.kubo-site.test")
    cases = [
        ("127.0.0.1", "/ipns/kubo-site.test/one.html"), ("127.0.0.1", "/ipns/kubo-site.test/"),
        ("127.0.0.1", "/ipns/kubo-chain.test/deep/b.txt"), ("127.0.0.1", "/ipns/kubo-alias.test/one.html"),
        ("kubo-site.test", "/"), ("kubo-site.test", "/one.html"), ("kubo-site.test", "/articles/a.txt"),
        ("kubo-site.test", "/old"), ("kubo-site.test", "/old?q=1"), ("kubo-site.test", "/app/x/y"),
        ("kubo-chain.test", "/a.txt"), ("kubo-site.test", "/missing.txt"),
    ]
    compared = ("Location", "Content-Type", "Content-Length", "Etag", "X-Ipfs-Path", "X-Ipfs-Roots")
    async with aiohttp.ClientSession() as session:
        for host, path in cases:
            ours = await node.get(path, headers={"Host": host}, allow_redirects=False)
            our_body = await ours.read()
            kubo_host = host if host != "127.0.0.1" else f"127.0.0.1:{dns_kubo.gateway_port}"
            async with session.get(dns_kubo.gateway_url + path, headers={"Host": kubo_host},
                                   allow_redirects=False) as theirs:
                their_body = await theirs.read()
                assert ours.status == theirs.status, (host, path, ours.status, theirs.status, their_body[:200])
                for name in compared if ours.status < 400 else ():  # error bodies differ: JSON here, text there
                    if name in theirs.headers:
                        assert ours.headers.get(name) == theirs.headers[name], (host, path, name)
                if ours.status < 400:
                    assert our_body == their_body, (host, path)
                if ours.status == 200:
                    # the node says how long the name holds (the DNS TTL); Kubo sends Last-Modified instead
                    assert 55 <= max_age(ours) <= 60
                    assert "Cache-Control" not in theirs.headers and "Last-Modified" in theirs.headers
    # where they differ, on purpose: no DNSLink is 404 here (Kubo: 500 on /ipns/, 404 on a Host);
    # several values are sorted and the first used (Kubo refuses them with a 500)
    z.txt("_dnslink.kubo-multi.test", f"dnslink=/ipfs/{cid}/articles", f"dnslink=/ipfs/{cid}")
    resp = await node.get("/ipns/kubo-multi.test/one.html")
    assert resp.status == 200
    async with aiohttp.ClientSession() as session:
        async with session.get(dns_kubo.gateway_url + "/ipns/kubo-multi.test/one.html") as theirs:
            assert theirs.status == 500 and b"more than one" in await theirs.read()
        async with session.get(dns_kubo.gateway_url + "/ipns/kubo-nothing.test/") as theirs:
            assert theirs.status == 500
    assert (await node.get("/ipns/kubo-nothing.test/")).status == 404


# --- answers cached for the name's TTL, and dropped when a record is stored ----------------------

async def test_named_responses_cached_within_the_ttl(origin_node, dns):
    """/ipns/ responses are kept (per request) while the name's answer holds: IPNS until
    its TTL ends or a record of it is stored (publish, PUT /routing/v1/ipns), DNSLink until
    its TTL ends; Cache-Control counts down meanwhile."""
    from naming.ipns import record as records
    from naming.ipns.keys import PrivateKey

    node = await dns_node(origin_node, dns.udp_url)
    a = (await upload(node, b"first\n", "a.txt"))["cid"]
    b = (await upload(node, b"second\n", "b.txt"))["cid"]
    key = (await (await node.post("/api/v1/keys", json={"name": "site"}, headers=node.auth)).json())["id"]
    for value, body in ((f"/ipfs/{a}", b"first\n"), (f"/ipfs/{b}", b"second\n"), (f"/ipfs/{a}", b"first\n")):
        resp = await node.post("/api/v1/names", json={"key": "site", "value": value, "ttl": 300}, headers=node.auth)
        assert resp.status == 200, await resp.text()
        for _ in range(3):  # the first builds the response, the next come from the cache
            resp = await node.get(f"/ipns/{key}")
            assert resp.status == 200 and await resp.read() == body
            assert 299 <= max_age(resp) <= 300
    # a record PUT through the routing API (a newer sequence, signed elsewhere) is served at once
    private = PrivateKey.generate("ed25519")
    name = str(private.public_key().name())
    now = time.time_ns()
    for seq, cid, body in ((1, a, b"first\n"), (2, b, b"second\n")):
        raw = records.create(private, f"/ipfs/{cid}", seq, now + 3600 * 10**9, 300 * 10**9)
        resp = await node.put(f"/routing/v1/ipns/{name}", data=raw,
                              headers={"Content-Type": "application/vnd.ipfs.ipns-record"})
        assert resp.status == 200, await resp.text()
        for _ in range(2):
            assert await (await node.get(f"/ipns/{name}")).read() == body
    # DNSLink: the old answer within the TTL (as the name system's own cache), the new one after
    z = dns.zone
    z.txt("_dnslink.cached.test", f"dnslink=/ipfs/{a}", ttl=2)
    assert await (await node.get("/ipns/cached.test")).read() == b"first\n"
    z.txt("_dnslink.cached.test", f"dnslink=/ipfs/{b}", ttl=2)
    resp = await node.get("/ipns/cached.test")
    assert await resp.read() == b"first\n" and max_age(resp) <= 2
    await asyncio.sleep(2.2)
    assert await (await node.get("/ipns/cached.test")).read() == b"second\n"
