"""`_redirects` files (specs.ipfs.tech/http-gateways/web-redirects-file/, the
rules of go-ipfs-redirects-file v0.1.2 and boxo's gateway, which Kubo 0.42 runs).

When they apply -- all of these, as boxo:
* the request arrived on a content origin (subdomain or DNSLink gateway:
  CONTENT_ORIGIN is set; never on the plain path gateway, which has no
  same-origin isolation);
* it asks for the web (deserialized) response, not `?format=raw|car` or their
  Accept types;
* the requested path does not exist in the DAG ("no forced redirects": an
  existing path is always served as it is);
* the root CID the path resolved from has a `_redirects` file.

File format: lines `from to [status]`, `#` comments, blank lines, `\\n` or
`\\r\\n`; at most 64 KiB. `from` starts with `/`, may hold `:name` placeholder
segments and end with `*` (one, last); `to` is a path starting with `/` or an
http(s)/ipfs/ipns URL, where `:name` and `:splat` are replaced. Status 301 when
absent; 200 (rewrite: serve `to` under the same root, the URL unchanged), 301,
302, 303, 307, 308 (redirect; the request's query is merged into `to`'s), 404,
410, 451 (serve the file at `to` with that status). A forced status (`200!`) is
refused, as the spec has no forced redirects. The first matching rule wins.

A file that cannot be used (too large, not a file, a line that breaks the rules)
is the spec's error: 500, saying what is wrong and on which line. Parsed files
are cached by root CID (immutable: a CID's `_redirects` never changes).

Responses made through a rule are never put in the response cache: its keys
are paths, and the same path on the plain path gateway must stay a 404.
"""
from __future__ import annotations

import html
import posixpath
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from storage import unixfs
from storage.cid import CID

from ..content_origin import CONTENT_ORIGIN
from ..errors import HTTPError
from .headers import CORS, GatewayRequest, IMMUTABLE, cache_control

FILENAME = "_redirects"
MAX_FILE_SIZE = 64 * 1024
DEFAULT_STATUS = 301
REWRITE = 200
REDIRECTS = (301, 302, 303, 307, 308)
CUSTOM_PAGES = (404, 410, 451)
STATUSES = frozenset((REWRITE,) + REDIRECTS + CUSTOM_PAGES)
URL_SCHEMES = ("http", "https", "ipfs", "ipns")
MAX_CACHED = 512

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_STATUS_TEXT = {301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
                308: "Permanent Redirect"}


class InvalidRedirects(ValueError):
    """The `_redirects` file cannot be used (the spec's 500)."""


@dataclass(frozen=True)
class Rule:
    source: str  # `from`, as written
    to: str
    status: int
    line: int
    segments: tuple[str, ...] = field(repr=False, default=())
    splat: bool = field(repr=False, default=False)

    @classmethod
    def make(cls, source: str, to: str, status: int, line: int) -> "Rule":
        # as urlpath.New(strings.TrimSuffix(from, "/")): segments split on "/", a last
        # segment "*" takes the rest of the path
        pattern = source[:-1] if source.endswith("/") else source
        parts = pattern.split("/")
        splat = parts[-1] == "*"
        return cls(source, to, status, line, tuple(parts[:-1] if splat else parts), splat)

    def match(self, path: str) -> str | None:
        """`to` with placeholders filled in if `path` ("/a/b", no trailing slash) matches."""
        params: dict[str, str] = {}
        rest = path
        last = len(self.segments) - 1
        for i, seg in enumerate(self.segments):
            cut = rest.find("/")
            if cut == -1:
                if i != last or self.splat:
                    return None
                head, rest = rest, ""
            else:
                if i == last and not self.splat:
                    return None
                head, rest = rest[:cut], rest[cut + 1:]
            if seg.startswith(":"):
                params[seg[1:]] = head
            elif head != seg:
                return None
        to = self.to
        for name in sorted(params, key=len, reverse=True):  # ":year" before ":y"
            to = to.replace(":" + name, params[name])
        return to.replace(":splat", rest)


def parse(data: bytes) -> list[Rule]:
    """The rules of a `_redirects` file; InvalidRedirects says what is wrong, and where."""
    if len(data) > MAX_FILE_SIZE:
        raise InvalidRedirects(f"redirects file size cannot exceed {MAX_FILE_SIZE} bytes (it has {len(data)})")
    text = data.decode("utf-8", errors="replace")
    rules = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            if len(fields) < 2:
                raise InvalidRedirects("missing 'to' path")
            if len(fields) > 3:
                raise InvalidRedirects("must match format 'from to [status]'")
            source, to = _parse_from(fields[0]), _parse_to(fields[1])
            status = _parse_status(fields[2]) if len(fields) == 3 else DEFAULT_STATUS
        except InvalidRedirects as exc:
            raise InvalidRedirects(f"line {number}: {exc}: {line[:200]!r}") from None
        rules.append(Rule.make(source, to, status, number))
    return rules


def _check_url_text(s: str, what: str) -> None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        raise InvalidRedirects(f"parsing {what!r}: invalid control character in URL")
    if _BAD_ESCAPE.search(s):
        raise InvalidRedirects(f"parsing {what!r}: invalid URL escape")


def _parse_from(s: str) -> str:
    stars = s.count("*")
    if stars and not s.endswith("*"):
        raise InvalidRedirects("parsing 'from': path must end with asterisk")
    if stars > 1:
        raise InvalidRedirects("parsing 'from': path can have at most one asterisk")
    _check_url_text(s, "from")
    if not s.startswith("/"):
        raise InvalidRedirects("parsing 'from': path must begin with '/'")
    return s


def _parse_to(s: str) -> str:
    _check_url_text(s, "to")
    if not s.startswith("/"):
        scheme = urlsplit(s).scheme.lower() if ":" in s else ""
        if scheme not in URL_SCHEMES:
            raise InvalidRedirects("parsing 'to': invalid URL scheme (a path starting with '/', or an "
                                   "http, https, ipfs or ipns URL)")
    return s


def _parse_status(s: str) -> int:
    if s.endswith("!"):
        raise InvalidRedirects(f"parsing status {s!r}: forced redirects (or \"shadowing\") are not supported")
    if not s.isdigit():
        raise InvalidRedirects(f"parsing status {s!r}: not a number")
    code = int(s)
    if code not in STATUSES:
        raise InvalidRedirects(f"parsing status {s!r}: status code {code} is not supported "
                               f"(supported: {', '.join(str(c) for c in sorted(STATUSES))})")
    return code


# --- parsed files, by root CID ------------------------------------------------------------

_ABSENT: list[Rule] = []


class RulesCache:
    """root CID -> its rules ([] when there is no `_redirects`) or the InvalidRedirects
    it raised. Content-addressed, so entries never go stale; least recently used go."""

    def __init__(self, max_entries: int = MAX_CACHED):
        self.max_entries = max_entries
        self._items: OrderedDict[tuple, list[Rule] | InvalidRedirects] = OrderedDict()

    async def rules(self, root: CID, get_block) -> list[Rule]:
        key = (root.codec, root.multihash)
        item = self._items.get(key)
        if item is None:
            item = await _load(root, get_block)
            self._items[key] = item
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        if isinstance(item, InvalidRedirects):
            raise item
        return item


RULES = RulesCache()


async def _load(root: CID, get_block) -> list[Rule] | InvalidRedirects:
    try:
        found = await unixfs.resolve(get_block, root, [FILENAME])
    except (unixfs.PathNotFound, unixfs.NotTraversable):
        return _ABSENT
    node = found.node
    if node.kind != "file":
        return InvalidRedirects(f"{FILENAME} is not a file (it is a {node.kind})")
    if node.size > MAX_FILE_SIZE:
        return InvalidRedirects(f"redirects file size cannot exceed {MAX_FILE_SIZE} bytes (it has {node.size})")
    data = b"".join([piece async for piece in unixfs.read_file(get_block, node, 0, MAX_FILE_SIZE + 1)])
    try:
        return parse(data)
    except InvalidRedirects as exc:
        return exc


# --- applying them ----------------------------------------------------------------------------

def applies(req: GatewayRequest) -> bool:
    """Content origin, web response: the only requests `_redirects` is evaluated for."""
    return req.format is None and req.request.get(CONTENT_ORIGIN) is not None


def invalid_file_error(req: GatewayRequest, exc: Exception) -> HTTPError:
    # "could not parse _redirects: ..." as Kubo words it (the conformance suite matches it)
    return HTTPError(500, "invalid_redirects_file",
                     f"could not parse _redirects: {exc} (/ipfs/{req.root}/{FILENAME})")


async def recover(req: GatewayRequest, get_block, engine, cache):
    """For a path that does not exist: None (no file or no matching rule: the caller
    answers its 404), a response (redirect, custom 4xx page), or the unixfs.Resolved
    the path was rewritten to (req.segments now name it)."""
    try:
        rules = await RULES.rules(req.root, get_block)
    except InvalidRedirects as exc:
        raise invalid_file_error(req, exc) from None
    if not rules:
        return None
    path = "/" + "/".join(req.segments)
    if path.endswith("/"):
        path = path[:-1]
    for rule in rules:
        target = rule.match(path)
        if target is None:
            continue
        req.via_redirects = True
        if rule.status in REDIRECTS:
            return redirect(req, target, rule.status)
        if _is_url(target):
            raise invalid_file_error(req, f"line {rule.line}: {target[:200]!r}: a {rule.status} rule needs a path "
                                          "under the site's root, not a URL (proxying is not supported)")
        segments = [s for s in target.split("?", 1)[0].split("/") if s]
        if rule.status == REWRITE:
            req.segments = segments
            try:
                return await unixfs.resolve(get_block, req.root, segments)
            except unixfs.PathNotFound as exc:
                raise HTTPError(404, "not_found", f"{rule.source} is rewritten to {target}, and there is no link "
                                                  f"named {str(exc)!r} under /ipfs/{req.root}") from None
            except unixfs.NotTraversable as exc:
                raise HTTPError(400, "invalid_path", str(exc)) from None
        return await custom_page(req, get_block, engine, segments, rule)
    return None


def _is_url(target: str) -> bool:
    return not target.startswith("/")


def redirect(req: GatewayRequest, target: str, status: int) -> web.Response:
    """As Go's http.Redirect (which boxo uses): the request's query merged into the
    target's, a local path cleaned, a short HTML body for GET."""
    query = req.request.rel_url.query_string
    if query:
        parts = urlsplit(target)
        merged: dict[str, list[str]] = {}
        for k, v in parse_qsl(parts.query, keep_blank_values=True) + parse_qsl(query, keep_blank_values=True):
            merged.setdefault(k, []).append(v)
        encoded = urlencode([(k, v) for k in sorted(merged) for v in merged[k]])
        target = urlunsplit((parts.scheme, parts.netloc, parts.path, encoded, parts.fragment))
    if target.startswith("/") and not target.startswith("//"):
        path, sep, rest = target.partition("?")
        cleaned = posixpath.normpath(path)
        if cleaned.startswith("//"):
            cleaned = "/" + cleaned.lstrip("/")
        if path.endswith("/") and not cleaned.endswith("/"):
            cleaned += "/"
        target = cleaned + sep + rest
    headers = {"Location": target, "Content-Type": "text/html; charset=utf-8", "X-Ipfs-Path": req.content_path}
    headers.update(CORS)
    body = f'<a href="{html.escape(target)}">{_STATUS_TEXT[status]}</a>.\n\n'.encode()
    return web.Response(status=status, headers=headers, body=None if req.is_head else body)


async def custom_page(req: GatewayRequest, get_block, engine, segments: list[str], rule: Rule) -> web.StreamResponse:
    """The file at `segments` under the root, with the rule's status (404, 410, 451)."""
    try:
        found = await unixfs.resolve(get_block, req.root, segments)
    except (unixfs.PathNotFound, unixfs.NotTraversable) as exc:  # as Kubo: not found, whatever the rule's status
        raise HTTPError(404, "not_found", f"{FILENAME} line {rule.line} serves {rule.to!r} with status {rule.status}, "
                                          f"and it does not exist under /ipfs/{req.root} ({exc})") from None
    node = found.node
    if node.kind != "file":
        raise invalid_file_error(req, f"line {rule.line}: the {rule.status} page {rule.to!r} is not a file")
    headers = {
        "Content-Type": "text/html",  # as boxo, whatever the page's name
        "Etag": f'"{node.cid}"',
        "Cache-Control": IMMUTABLE if req.namespace == "ipfs" else cache_control(req),
        "X-Ipfs-Path": req.content_path,
        "Content-Length": str(node.size),
    }
    headers.update(CORS)
    resp = web.StreamResponse(status=rule.status, headers=headers)
    if req.is_head:
        return resp
    first = True
    async for chunk in unixfs.read_file(get_block, node):
        if first:  # a missing block is still an error response before this point
            await resp.prepare(req.request)
            first = False
        await resp.write(chunk)
    if first:
        await resp.prepare(req.request)
    await resp.write_eof()
    return resp
