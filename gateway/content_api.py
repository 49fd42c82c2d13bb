"""/api/v1/content: upload (multipart, raw body or CAR), records, removal."""
from __future__ import annotations

import re
from typing import AsyncIterator
from urllib.parse import unquote_to_bytes

from aiohttp import BodyPartReader, web

from storage.cid import CID, InvalidCID, record_key
from storage.engine import AddEntry, AddOptions, UploadTooLarge
from storage.metadata import decode_cursor, encode_cursor

from .auth import require_owner
from .memory_release import HeapTrimmer
from .errors import HTTPError, bad_request
from .keys import COLLECTOR, CONFIG, ENGINE, METRICS, PIN_WORKER, STORE, UPLOAD_SLOTS
from .socket_body import SocketBody

CAR_TYPES = ("application/vnd.ipld.car",)
READ_CHUNK = 64 * 1024


def record_json(row: dict) -> dict:
    out = {
        "cid": row["cid"],
        "size": row["size"],
        "name": row["name"],
        "created_at": row["created_at"],
        "pinned": row["status"] == "pinned",
    }
    if row.get("removed_at"):
        out["removed_at"] = row["removed_at"]
    return out


def _bool_param(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise bad_request(f"{name} must be true or false, got {value!r}", "invalid_parameter")


def _add_options(request: web.Request) -> AddOptions:
    raw = request.query.get("cid_version", "1")
    if raw not in ("0", "1"):
        raise bad_request(f"cid_version must be 0 or 1, got {raw!r}", "invalid_parameter")
    unknown = set(request.query) - {"cid_version", "wrap", "filename", "raw_leaves"}
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(sorted(unknown))}", "invalid_parameter")
    query_filename(request)  # checked whatever the body: a raw body's name, a CAR's record name
    raw_leaves = None
    if "raw_leaves" in request.query:
        raw_leaves = _bool_param(request, "raw_leaves", False)
    return AddOptions(cid_version=int(raw), raw_leaves=raw_leaves, wrap=_bool_param(request, "wrap", False))


# C0 controls, DEL and C1 controls: never part of a file name (a CR/LF name cannot be
# addressed in a gateway path, and they are log/terminal injection vectors)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean_relpath(name: str) -> str:
    """A relative path, exactly as the client sent it (no percent-decoding here: the
    query string is decoded once by HTTP, a multipart filename is taken as sent), or
    400 invalid_filename. Never rewritten: a leading '/' is refused, not dropped, and
    so is a backslash (a Windows separator or a literal character: ambiguous)."""
    shown = repr(name[:100])
    if not name:
        raise bad_request("invalid file name: empty", "invalid_filename")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable header bytes arrive as lone surrogates
        raise bad_request(f"invalid file name {shown}: not valid UTF-8", "invalid_filename") from None
    bad = _CONTROL.search(name)
    if bad:
        raise bad_request(f"invalid file name {shown}: control character U+{ord(bad.group()):04X} "
                          f"at position {bad.start()}", "invalid_filename")
    if "\\" in name:
        raise bad_request(f"invalid file name {shown}: backslashes are not allowed (use '/' between "
                          "directories)", "invalid_filename")
    if name.startswith("/"):
        raise bad_request(f"invalid file name {shown}: must be a relative path (no leading '/')", "invalid_filename")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad_request(f"invalid file name {shown}: empty, '.' or '..' segments", "invalid_filename")
    return "/".join(parts)


def query_filename(request: web.Request) -> str:
    """`?filename=`, decoded once (by the query-string parser) and checked: one name,
    no '/'. "" (or absent) = no name."""
    given = request.query.getall("filename", [])
    if len(given) > 1:
        raise bad_request("filename was given more than once", "invalid_parameter")
    filename = given[0] if given else ""
    if filename:
        filename = clean_relpath(filename)
        if "/" in filename:
            raise bad_request("filename must not contain '/' (a raw body or CAR names one file)", "invalid_filename")
    return filename


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_DISPOSITION_PARAM = re.compile(rf'\s*;\s*({_TOKEN})\s*=\s*(?:({_TOKEN})|"((?:[^"\\]|\\.)*)")\s*', re.DOTALL)
_EXT_VALUE = re.compile(r"([A-Za-z0-9!#$%&+^_`{}~-]+)'([A-Za-z0-9-]*)'((?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-Fa-f]{2})*)")


def _content_disposition(header: str | None) -> tuple[str | None, str | None]:
    """(name, filename) from a multipart part's raw Content-Disposition, as sent:
    quoted-string escapes undone, nothing stripped or percent-decoded, except
    `filename*` (RFC 5987/8187 ext-value: UTF-8 or ISO-8859-1, percent-encoded),
    which wins over `filename` when both are given (RFC 6266 4.3)."""
    if not header:
        return None, None
    m = re.match(rf"\s*({_TOKEN})", header)
    if m is None or m.group(1).lower() != "form-data":
        raise bad_request(f"multipart part has Content-Disposition {header[:100]!r}; expected form-data",
                          "invalid_body")
    params: dict[str, str] = {}
    pos = m.end()
    while pos < len(header):
        if header[pos:].strip() in ("", ";"):
            break
        p = _DISPOSITION_PARAM.match(header, pos)
        if p is None:
            raise bad_request(f"malformed Content-Disposition in a multipart part: {header[:200]!r}", "invalid_body")
        key = p.group(1).lower()
        if key in params:
            raise bad_request(f"Content-Disposition repeats the parameter {key!r}", "invalid_body")
        params[key] = p.group(2) if p.group(2) is not None else re.sub(r"\\(.)", r"\1", p.group(3), flags=re.DOTALL)
        pos = p.end()
    filename = params.get("filename")
    if "filename*" in params:
        ext = _EXT_VALUE.fullmatch(params["filename*"])
        if ext is None or ext.group(1).lower() not in ("utf-8", "iso-8859-1"):
            raise bad_request("filename* must be an RFC 5987 value such as UTF-8''na%C3%AFve.txt "
                              "(charset UTF-8 or ISO-8859-1)", "invalid_filename")
        try:
            filename = unquote_to_bytes(ext.group(3)).decode(ext.group(1).lower(), "strict")
        except UnicodeDecodeError:
            raise bad_request(f"filename* is not valid {ext.group(1)}", "invalid_filename") from None
    return params.get("name"), filename


class _Budget:
    """Counts upload bytes and stops the stream at max_upload_bytes."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.error: Exception | None = None

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            self.error = UploadTooLarge(f"upload exceeds the limit of {self.limit} bytes")
            raise self.error


class UploadSlots:
    """At most `[storage] max_concurrent_uploads` uploads in progress; beyond that a
    new one is refused at once (503 + Retry-After), before its body is read."""

    def __init__(self, limit: int):
        self.limit, self.active, self.refused = limit, 0, 0
        self.trimmer = HeapTrimmer()

    def take(self) -> bool:
        if self.active >= self.limit:
            self.refused += 1
            return False
        self.active += 1
        return True

    def give_back(self) -> None:
        self.active -= 1
        if self.active == 0:  # a burst is over: return its buffers to the OS
            self.trimmer.trim_soon()


async def upload(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    slots: UploadSlots = request.app[UPLOAD_SLOTS]
    if not slots.take():
        raise HTTPError(503, "too_many_uploads", f"{slots.limit} uploads are in progress; retry shortly",
                        {"Retry-After": "5"})
    try:
        # from before the add until the record is written, no gc takes the upload's blocks
        async with request.app[ENGINE].writing():
            response = await _receive_upload(request, owner)
    finally:
        slots.give_back()
    request.app[COLLECTOR].check_soon()  # the store grew: is it over the gc watermark?
    return response


async def _receive_upload(request: web.Request, owner: str) -> web.Response:
    config = request.app[CONFIG]
    engine = request.app[ENGINE]
    limit = config["storage"]["max_upload_bytes"]
    if request.content_length is not None and request.content_length > limit:
        raise HTTPError(413, "too_large", f"upload of {request.content_length} bytes exceeds the limit of {limit} bytes")
    options = _add_options(request)
    budget = _Budget(limit)
    ctype = request.content_type

    if ctype in CAR_TYPES:
        async def read(n: int) -> bytes:
            chunk = await request.content.read(n)
            budget.take(len(chunk))
            return chunk

        try:
            roots = await engine.import_car(read)
        except Exception:
            if budget.error:
                raise budget.error from None
            raise
        request.app[METRICS].bytes_in += 0 if request.content_length else budget.used
        rows = []
        for root in roots:
            node = await engine.stat(root)
            rows.append(await _record_pinned(request, owner, root, request.query.get("filename", ""), node.size))
        body = record_json(rows[0]) | {"roots": [r["cid"] for r in rows]}
        return web.json_response(body, status=201)

    names: list[str] = []
    problems: list[Exception] = []
    raw: SocketBody | None = None

    async def stream(source) -> AsyncIterator[bytes]:
        while True:
            try:
                # a raw body: whatever has arrived, as aiohttp received it (no re-chunking copy)
                chunk = await source.read_chunk(READ_CHUNK) if isinstance(source, BodyPartReader) else await source.read(READ_CHUNK)
            except Exception as exc:  # malformed multipart / client went away
                problems.append(bad_request(f"malformed upload body: {exc}", "invalid_body"))
                raise problems[-1] from None
            if not chunk:
                return
            budget.take(len(chunk))
            yield chunk

    if ctype == "multipart/form-data":
        try:
            reader = await request.multipart()
        except Exception as exc:
            raise bad_request(f"malformed multipart body: {exc}", "invalid_body") from None

        async def entries():
            while True:
                try:
                    part = await reader.next()
                except Exception as exc:
                    problems.append(bad_request(f"malformed multipart body: {exc}", "invalid_body"))
                    raise problems[-1] from None
                if part is None:
                    return
                try:
                    # the raw header, as sent: aiohttp's part.filename strips a leading '/' or backslash
                    field, filename = _content_disposition(part.headers.get("Content-Disposition"))
                    if not isinstance(part, BodyPartReader) or field != "file":
                        raise bad_request(f"unexpected multipart field {field!r}: send files as parts named 'file'",
                                          "invalid_body")
                    if filename is None:
                        raise bad_request("every 'file' part needs a filename", "invalid_filename")
                    path = clean_relpath(filename)
                except HTTPError as exc:
                    problems.append(exc)
                    raise
                names.append(path)
                if len(names) > 1 and not options.wrap:
                    # several files only make sense as one directory
                    problems.append(bad_request("several files need wrap=true (they are added as one directory)",
                                                "wrap_required"))
                    raise problems[-1]
                yield AddEntry(path, stream(part))
    else:
        filename = query_filename(request)
        names.append(filename)
        options.size_hint = request.content_length
        # the same bytes, for an engine that forwards them from socket to socket
        raw = SocketBody.of(request, idle_timeout=config["server"]["body_idle_timeout"])

        async def entries():
            yield AddEntry(filename or "file", stream(request.content), raw)

    try:
        result = await engine.add(entries(), options)
    except Exception:
        if budget.error:
            raise budget.error from None
        if raw is not None and raw.error:
            raise raw.error from None
        if problems:
            raise problems[0] from None
        raise
    if budget.error:
        raise budget.error
    if problems:
        raise problems[0]
    if raw is not None and raw.used:
        budget.take(raw.size)
    if not names:
        raise bad_request("no file parts in the upload (expected parts named 'file')", "invalid_body")
    if not request.content_length:
        request.app[METRICS].bytes_in += budget.used
    cid = result.root
    # the record's size is the file's bytes; a directory's is its cumulative DAG size
    root_node = await engine.stat(cid)
    size = root_node.size if root_node.kind == "file" else result.size
    name = names[0] if len(names) == 1 and not options.wrap else names[0].split("/")[0]
    row = await _record_pinned(request, owner, cid, name, size)
    return web.json_response(record_json(row), status=201)


async def _record_pinned(request: web.Request, owner: str, cid: CID, name: str, size: int) -> dict:
    """Write the record under the content's lock, then make sure the pin is there: a
    Pinning API delete of the same content may have unpinned it since the add."""
    store = request.app[STORE]
    async with request.app[PIN_WORKER].key_lock(record_key(cid)):
        row = await store.run(store.put_content, owner, str(cid), name, size)
        await request.app[ENGINE].pin(cid)
    return row


def _parse_cid(text: str) -> CID:
    try:
        return CID.parse(text)
    except InvalidCID as exc:
        raise bad_request(f"invalid CID {text!r}: {exc}", "invalid_cid") from None


async def get_record(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    cid = _parse_cid(request.match_info["cid"])
    store = request.app[STORE]
    row = await store.run(store.get_content, owner, str(cid))
    if row is None:
        raise HTTPError(404, "not_found", f"no content record for {cid}")
    return web.json_response(record_json(row))


async def list_records(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    unknown = set(request.query) - {"limit", "cursor"}
    if unknown:
        raise bad_request(f"unknown query parameter(s): {', '.join(sorted(unknown))}", "invalid_parameter")
    for key in ("limit", "cursor"):
        if len(request.query.getall(key, [])) > 1:
            raise bad_request(f"{key} was given more than once", "invalid_parameter")
    raw_limit = request.query.get("limit", "20")
    if not re.fullmatch(r"[0-9]{1,4}", raw_limit) or not 1 <= int(raw_limit) <= 1000:
        raise bad_request(f"limit must be an integer between 1 and 1000, got {raw_limit[:40]!r}", "invalid_parameter")
    limit = int(raw_limit)
    cursor = None
    if "cursor" in request.query:
        try:
            cursor = decode_cursor(request.query["cursor"])
        except ValueError:
            raise bad_request(f"invalid cursor {request.query['cursor'][:60]!r}: pass the next_cursor of a previous page",
                              "invalid_parameter") from None
    store = request.app[STORE]
    rows = await store.run(store.list_content, owner, limit + 1, cursor)
    next_cursor = encode_cursor(rows[limit - 1]["id"]) if len(rows) > limit else None
    return web.json_response({"results": [record_json(r) for r in rows[:limit]], "next_cursor": next_cursor})


async def delete_record(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    cid = _parse_cid(request.match_info["cid"])
    store = request.app[STORE]
    row = await store.run(store.remove_content, owner, str(cid))
    if row is None:
        raise HTTPError(404, "not_found", f"no content record for {cid}")
    # unpins every spelling (CIDv0/CIDv1) unless another record or pin request wants it;
    # retried later if the engine is down
    await request.app[PIN_WORKER].release(row["cid"], row["key"])
    return web.json_response(record_json(row))


def setup(app: web.Application) -> None:
    app[UPLOAD_SLOTS] = UploadSlots(app[CONFIG]["storage"]["max_concurrent_uploads"])
    app.router.add_post("/api/v1/content", upload)
    app.router.add_get("/api/v1/content", list_records)
    app.router.add_get("/api/v1/content/{cid}", get_record)
    app.router.add_delete("/api/v1/content/{cid}", delete_record)
