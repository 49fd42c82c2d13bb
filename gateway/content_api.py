"""/api/v1/content: upload (multipart, raw body or CAR), records, removal."""
from __future__ import annotations

import posixpath
from typing import AsyncIterator
from urllib.parse import unquote

from aiohttp import BodyPartReader, web

from storage.cid import CID, InvalidCID, record_key
from storage.engine import AddEntry, AddOptions, UploadTooLarge
from storage.metadata import decode_cursor, encode_cursor

from .auth import require_owner
from .errors import HTTPError, bad_request
from .keys import CONFIG, ENGINE, METRICS, PIN_WORKER, STORE

CAR_TYPES = ("application/vnd.ipld.car",)
READ_CHUNK = 256 * 1024


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
    raw_leaves = None
    if "raw_leaves" in request.query:
        raw_leaves = _bool_param(request, "raw_leaves", False)
    return AddOptions(cid_version=int(raw), raw_leaves=raw_leaves, wrap=_bool_param(request, "wrap", False))


def clean_relpath(name: str) -> str:
    name = unquote(name).replace("\\", "/")
    if not name or name.startswith("/") or "\x00" in name:
        raise bad_request(f"invalid file name {name!r}: must be a relative path", "invalid_filename")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise bad_request(f"invalid file name {name!r}: empty, '.' or '..' segments", "invalid_filename")
    return posixpath.join(*parts)


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


async def upload(request: web.Request) -> web.Response:
    owner = await require_owner(request)
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

    async def stream(source) -> AsyncIterator[bytes]:
        while True:
            try:
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
                if not isinstance(part, BodyPartReader) or part.name != "file":
                    problems.append(bad_request(f"unexpected multipart field {getattr(part, 'name', None)!r}: "
                                                "send files as parts named 'file'", "invalid_body"))
                    raise problems[-1]
                if not part.filename:
                    problems.append(bad_request("every 'file' part needs a filename", "invalid_filename"))
                    raise problems[-1]
                try:
                    path = clean_relpath(part.filename)
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
        filename = request.query.get("filename", "")
        if filename:
            filename = clean_relpath(filename)
            if "/" in filename:
                raise bad_request("filename for a raw body must not contain '/'", "invalid_filename")
        names.append(filename)
        options.size_hint = request.content_length

        async def entries():
            yield AddEntry(filename or "file", stream(request.content))

    try:
        result = await engine.add(entries(), options)
    except Exception:
        if budget.error:
            raise budget.error from None
        if problems:
            raise problems[0] from None
        raise
    if budget.error:
        raise budget.error
    if problems:
        raise problems[0]
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
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise bad_request("limit must be an integer between 1 and 1000", "invalid_parameter") from None
    if not 1 <= limit <= 1000:
        raise bad_request("limit must be an integer between 1 and 1000", "invalid_parameter")
    cursor = None
    if request.query.get("cursor"):
        try:
            cursor = decode_cursor(request.query["cursor"])
        except ValueError:
            raise bad_request("invalid cursor", "invalid_parameter") from None
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
    app.router.add_post("/api/v1/content", upload)
    app.router.add_get("/api/v1/content", list_records)
    app.router.add_get("/api/v1/content/{cid}", get_record)
    app.router.add_delete("/api/v1/content/{cid}", delete_record)
