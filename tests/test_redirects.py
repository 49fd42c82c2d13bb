"""`_redirects` (web-redirects-file spec): the parser rule by rule, then sites
uploaded to the node and served on a subdomain origin (tests/origin_helpers.py),
side by side with Kubo's own gateway on `{cid}.ipfs.localhost`: statuses,
headers and bytes. Never on the plain path gateway, never for ?format=raw/car,
never for a path that exists; an unusable file is the spec's 500."""
from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.ipfs import redirects
from gateway.ipfs.redirects import InvalidRedirects, parse
from tests.gateway_helpers import upload_tree
from tests.origin_helpers import origin_node  # noqa: F401 - fixture

# the spec's "examples" fixture, plus a rule for an existing path (never forced)
# and a few more: placeholders and splats in rewrites, external targets
EXAMPLES = """# the spec's examples
/one.html /two.html 301
/redirect-one /one.html
/301-redirect-one /one.html 301
/302-redirect-two /two.html 302
/303-see /two.html 303
/307-temp /two.html 307
/308-perm /two.html 308
/200-index /index.html 200
/posts/:year/:month/:day/:title /articles/:year/:month/:day/:title 301
/blog/:year/:slug /articles/:year/06/15/:slug.html 200
/splat/* /redirected-splat/:splat 301
/not-found/* /404.html 404
/gone/* /410.html 410
/unavail/* /451.html 451
/missing-page/* /no-such-page.html 404
/rewrite-missing /no-such-file.html 200
/external https://example.com/landing?src=ipfs 302
/* /index.html 200
"""

SITE = {
    "404.html": b"my 404\n",
    "410.html": b"my 410\n",
    "451.html": b"my 451\n",
    "index.html": b"<h1>index</h1>\n",
    "one.html": b"one\n",
    "two.html": b"two\n",
    "articles/2022/06/15/hello.html": b"hello article\n",
    "articles/2022/06/15/hello": b"<p>no extension</p>\n",
    "redirected-splat/x.html": b"splat\n",
    "_redirects": EXAMPLES.encode().replace(b"\n", b"\r\n", 3),  # \r\n and \n both end lines
}

# headers that must agree with Kubo's, when Kubo sends them
COMPARED = ("Location", "Content-Type", "Content-Length", "Etag", "Cache-Control", "X-Ipfs-Path", "X-Ipfs-Roots")


# --- the parser ---------------------------------------------------------------------------

def test_parse_rules_and_matching():
    rules = parse(EXAMPLES.encode())
    assert len(rules) == 18
    assert rules[1].status == 301  # implicit
    assert [r.status for r in rules[2:8]] == [301, 302, 303, 307, 308, 200]

    def first(path):
        for rule in rules:
            to = rule.match(path)
            if to is not None:
                return to, rule.status
        return None

    assert first("/redirect-one") == ("/one.html", 301)
    assert first("/posts/2022/06/15/hello") == ("/articles/2022/06/15/hello", 301)
    assert first("/posts/2022/06/15") == ("/index.html", 200)  # too short for the placeholders: the catch-all
    assert first("/splat/a/b/c.html") == ("/redirected-splat/a/b/c.html", 301)
    assert first("/splat/") == ("/redirected-splat/", 301)
    assert first("/splat") == ("/index.html", 200)  # "/splat/*" needs the slash
    assert first("/blog/2022/hello") == ("/articles/2022/06/15/hello.html", 200)
    assert first("/anything/at/all") == ("/index.html", 200)
    only = parse(b"/exact /x 302\n")
    assert only[0].match("/exact") == "/x" and only[0].match("/exact/more") is None
    assert only[0].match("/exac") is None


def test_parse_placeholders_do_not_clash():
    rule = parse(b"/:y/:year /out/:year/:y 301")[0]
    assert rule.match("/a/b") == "/out/b/a"


@pytest.mark.parametrize("text, error", [
    ("/a", "missing 'to' path"),
    ("/a /b 301 extra", "must match format 'from to [status]'"),
    ("a /b", "path must begin with '/'"),
    ("/a*/b /c", "path must end with asterisk"),
    ("/a/** /c", "at most one asterisk"),
    ("/a ftp://host/x", "invalid URL scheme"),
    ("/a b.html", "invalid URL scheme"),
    ("/a /b 200!", "forced redirects"),
    ("/a /b 418", "status code 418 is not supported"),
    ("/a /b abc", "not a number"),
    ("/a%zz /b", "invalid URL escape"),
])
def test_parse_errors(text, error):
    with pytest.raises(InvalidRedirects) as info:
        parse(("# fine\n/ok /fine\n" + text + "\n").encode())
    assert error in str(info.value) and "line 3" in str(info.value)


def test_parse_size_limit_and_comments():
    line = b"# padding\n"
    exact = line * (redirects.MAX_FILE_SIZE // len(line))
    exact += b"#" * (redirects.MAX_FILE_SIZE - len(exact))
    assert len(exact) == 65536 and parse(exact) == []
    with pytest.raises(InvalidRedirects, match="cannot exceed 65536 bytes"):
        parse(exact + b"\n")
    assert parse(b"\n\n   \n# only comments\r\n") == []
    assert parse(b"/a /b\r\n/c /d 302\r\n")[1].to == "/d"


# --- served, side by side with Kubo --------------------------------------------------------

async def make_site(node, kubo, tmp_path: Path, files: dict[str, bytes], name: str = "site") -> str:
    """The directory uploaded to the node and added to Kubo: its CID (the same on both)."""
    up = await upload_tree(node, {f"{name}/{k}": v for k, v in files.items()})
    resp = await node.get(f"/ipfs/{up['cid']}/{name}/?format=raw")  # the directory's block
    roots = resp.headers["X-Ipfs-Roots"].split(",")
    cid = roots[-1]
    root = tmp_path / f"kubo-{name}"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    kubo_cid = kubo.ipfs("add", "-r", "-Q", "--cid-version=1", str(root)).strip()
    assert kubo_cid == cid, "the node and Kubo built different CIDs for the same site"
    return cid


async def both(node, kubo, session: aiohttp.ClientSession, cid: str, path: str, method: str = "GET",
               headers: dict | None = None):
    """(node's (status, headers, body), Kubo's) for path on the subdomain origin of cid."""
    host = f"{cid}.ipfs.localhost"
    ours = await node.request(method, path, headers={"Host": host, **(headers or {})}, allow_redirects=False)
    async with session.request(method, kubo.gateway_url + path, allow_redirects=False,
                               headers={"Host": f"{host}:{kubo.gateway_port}", **(headers or {})}) as theirs:
        kubo_answer = (theirs.status, theirs.headers, await theirs.read())
    return (ours.status, ours.headers, await ours.read()), kubo_answer


def compare(path, ours, theirs, skip=()):
    assert ours[0] == theirs[0], (path, ours[0], theirs[0], ours[2][:300], theirs[2][:300])
    for name in COMPARED:
        if name in skip or name not in theirs[1]:
            continue
        assert ours[1].get(name) == theirs[1][name], (path, name, ours[1].get(name), theirs[1][name])
    if ours[0] < 400 or ours[0] in (404, 410, 451) and "Etag" in theirs[1]:  # error bodies differ (JSON vs text)
        assert ours[2] == theirs[2], (path, ours[2][:300], theirs[2][:300])


@pytest.mark.parametrize("engine", ["embedded", "kubo"])
async def test_redirects_side_by_side_with_kubo(origin_node, kubo, tmp_path, engine):
    node = await origin_node(engine)
    cid = await make_site(node, kubo, tmp_path, SITE)
    async with aiohttp.ClientSession() as session:
        for path in ["/redirect-one", "/301-redirect-one", "/302-redirect-two?x=1&a=2", "/303-see", "/307-temp",
                     "/308-perm", "/200-index", "/posts/2022/06/15/hello", "/splat/x.html", "/splat/a/b/c",
                     "/not-found/foo", "/gone/x", "/unavail/x/y", "/anything/else", "/deep/missing/path/",
                     "/one.html", "/two.html", "/blog/2022/hello", "/external?a=1", "/index.html",
                     "/articles/2022/06/15/hello.html", "/rewrite-missing", "/missing-page/x"]:
            ours, theirs = await both(node, kubo, session, cid, path)
            if path == "/missing-page/x":  # the custom page is missing: not found (as Kubo)
                assert ours[0] == theirs[0] == 404 and b"no-such-page.html" in ours[2]
                continue
            if path == "/rewrite-missing":  # a rewrite to nothing: not found (Kubo says 404 too)
                assert ours[0] == theirs[0] == 404
                continue
            # a rewrite's Content-Type comes from the file served (hello.html: text/html), Kubo's from the
            # requested name ("hello": sniffed as text/plain); see /data.json below
            compare(path, ours, theirs, skip=("Content-Type",) if path == "/blog/2022/hello" else ())
            if path == "/anything/else":  # a single-page app: index.html for any path
                assert ours[0] == 200 and ours[2] == b"<h1>index</h1>\n"
        # the same with HEAD: statuses and headers, no body
        for path in ["/redirect-one", "/not-found/foo", "/anything/else", "/gone/x"]:
            ours, theirs = await both(node, kubo, session, cid, path, "HEAD")
            compare(path, ours, theirs)
            assert ours[2] == b""
        # Content-Type of a rewrite: the file served (index.html) names it, where Kubo uses the
        # requested name ("/data.json" -> application/json for an HTML page): a deliberate difference
        ours, theirs = await both(node, kubo, session, cid, "/data.json")
        assert ours[0] == theirs[0] == 200 and ours[2] == theirs[2] == SITE["index.html"]
        assert ours[1]["Content-Type"] == "text/html" and theirs[1]["Content-Type"] == "application/json"
        # web responses only: raw and CAR requests for a missing path get no rule
        for path, headers in [("/redirect-one?format=raw", {}), ("/anything", {"Accept": "application/vnd.ipld.raw"})]:
            ours, theirs = await both(node, kubo, session, cid, path, headers=headers)
            assert ours[0] == theirs[0] == 404, (path, ours[0], theirs[0])
        ours, theirs = await both(node, kubo, session, cid, "/anything/else?format=car")
        assert ours[0] == 404  # (Kubo answers a CAR of the blocks that show the path is missing)
        assert theirs[1]["Content-Type"].startswith("application/vnd.ipld.car") and b"<h1>index" not in theirs[2]

    # the plain path gateway: no origin isolation, no _redirects
    resp = await node.get(f"/ipfs/{cid}/redirect-one", allow_redirects=False)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{kubo.gateway_url}/ipfs/{cid}/redirect-one", allow_redirects=False) as r:
            assert r.status == 404
    # a response made through a rule is never cached by path: the rewrite served on the
    # subdomain just above is still a 404 on the path gateway, and the other way round
    for _ in range(2):
        assert (await node.get(f"/ipfs/{cid}/anything/else")).status == 404
        resp = await node.get("/anything/else", headers={"Host": f"{cid}.ipfs.localhost"})
        assert resp.status == 200 and await resp.read() == SITE["index.html"]


INVALID = {
    "forced": ("/a /b 200!\n", "forced redirects"),
    "status": ("/a /b 999\n", "status code 999"),
    "fields": ("/a\n", "missing 'to' path"),
    "scheme": ("/a javascript:alert(1) 302\n", "invalid URL scheme"),
    "too-large": ("# x\n" * (65536 // 4) + "/a /b\n", "cannot exceed 65536 bytes"),
}


async def test_invalid_redirects_file_is_500(origin_node, kubo, tmp_path):
    node = await origin_node("embedded")
    async with aiohttp.ClientSession() as session:
        for name, (text, message) in INVALID.items():
            cid = await make_site(node, kubo, tmp_path, {"index.html": b"hi\n", "_redirects": text.encode()}, name)
            ours, theirs = await both(node, kubo, session, cid, "/missing")
            assert ours[0] == theirs[0] == 500, (name, ours, theirs)
            body = await (await node.get("/missing", headers={"Host": f"{cid}.ipfs.localhost"})).json()
            assert body["error"]["code"] == "invalid_redirects_file" and message in body["error"]["message"], body
            # an existing path is served whatever the file says
            ours, theirs = await both(node, kubo, session, cid, "/index.html")
            assert ours[0] == theirs[0] == 200 and ours[2] == theirs[2] == b"hi\n"
        # _redirects that is a directory: unusable too
        cid = await make_site(node, kubo, tmp_path, {"index.html": b"hi\n", "_redirects/x": b"/a /b\n"}, "dir")
        ours, theirs = await both(node, kubo, session, cid, "/missing")
        assert ours[0] == theirs[0] == 500
        # no _redirects at all: a plain 404
        cid = await make_site(node, kubo, tmp_path, {"index.html": b"hi\n"}, "none")
        ours, theirs = await both(node, kubo, session, cid, "/missing")
        assert ours[0] == theirs[0] == 404
        # an empty one: no rule matches, 404
        cid = await make_site(node, kubo, tmp_path, {"index.html": b"hi\n", "_redirects": b"# nothing\n"}, "empty")
        ours, theirs = await both(node, kubo, session, cid, "/missing")
        assert ours[0] == theirs[0] == 404


async def test_rewrite_to_a_directory_and_the_parsed_file_cache(origin_node, kubo, tmp_path):
    node = await origin_node("embedded")
    files = {"app/index.html": b"<p>app</p>\n", "app/main.js": b"console.log(1)\n",
             "_redirects": b"/app/* /app/index.html 200\n/old/* /app/ 200\n"}
    cid = await make_site(node, kubo, tmp_path, files, "spa")
    async with aiohttp.ClientSession() as session:
        for path in ["/app/users/42", "/app/main.js", "/app/", "/old/x/", "/old/x"]:
            ours, theirs = await both(node, kubo, session, cid, path)
            if path == "/old/x":  # rewritten to a directory, without the slash: both send the client to path + "/"
                assert ours[0] == theirs[0] == 301 and ours[1]["Location"].endswith("/old/x/")
                continue
            compare(path, ours, theirs)
    before = len(redirects.RULES._items)
    for _ in range(3):
        resp = await node.get("/app/settings", headers={"Host": f"{cid}.ipfs.localhost"})
        assert resp.status == 200 and await resp.read() == b"<p>app</p>\n"
    assert len(redirects.RULES._items) == before  # parsed once per root CID

