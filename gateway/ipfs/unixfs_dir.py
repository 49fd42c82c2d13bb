"""UnixFS directories: redirect to the trailing-slash URL, serve index.html, or
render a listing with names, sizes and links."""
from __future__ import annotations

import html
from urllib.parse import quote

from aiohttp import web

from storage import unixfs
from storage.engine import StorageEngine

from ..cache import ResponseCache
from . import unixfs_file
from .headers import GatewayRequest, common_headers, etag_matches, not_modified, cache_key_for

LISTING_VERSION = "1"
MAX_LISTED = 10_000


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


async def serve(req: GatewayRequest, resolved: unixfs.Resolved, get_block, engine: StorageEngine,
                cache: ResponseCache) -> web.StreamResponse:
    request = req.request
    if not req.trailing_slash:
        location = request.rel_url.raw_path + "/"
        if request.rel_url.raw_query_string:
            location += "?" + request.rel_url.raw_query_string
        return web.Response(status=301, headers={"Location": location, "X-Ipfs-Path": req.content_path,
                                                 "Cache-Control": "public, max-age=29030400, immutable"})
    try:
        index = await unixfs.resolve(get_block, resolved.node.cid, ["index.html"])
    except unixfs.PathNotFound:
        index = None
    if index is not None and index.node.kind == "file":
        served = unixfs.Resolved(index.node, resolved.roots, resolved.path_blocks)
        return await unixfs_file.serve(req, served, get_block, engine, cache, name="index.html",
                                       etag_cid=resolved.node.cid)  # as Kubo: the directory's CID

    node = resolved.node
    headers = common_headers(req, resolved.roots, f'"DirIndex-{LISTING_VERSION}_CID-{node.cid}"')
    headers["Content-Type"] = "text/html; charset=utf-8"
    if etag_matches(request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    base = quote(req.content_path.rstrip("/"), safe="/:")
    rows = []
    count = 0
    async for entry in unixfs.list_directory(get_block, node):
        count += 1
        if count > MAX_LISTED:
            rows.append(f"<tr><td colspan=3>… listing truncated at {MAX_LISTED} entries</td></tr>")
            break
        name = html.escape(entry.name)
        href = f"{base}/{quote(entry.name, safe='')}"
        rows.append(
            f'<tr><td><a href="{href}">{name}</a></td>'
            f'<td class="cid"><a href="/ipfs/{entry.cid}">{entry.cid}</a></td>'
            f'<td class="size" title="{entry.tsize} bytes">{human_size(entry.tsize)}</td></tr>'
        )
    parent = ""
    if req.segments:
        parent_path = quote("/ipfs/" + "/".join([req.root_text] + req.segments[:-1]), safe="/:") + "/"
        parent = f'<tr><td><a href="{parent_path}">..</a></td><td></td><td></td></tr>'
    title = html.escape(req.content_path)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td{{padding:.3em .6em;border-bottom:1px solid #ddd}}td.size{{text-align:right;white-space:nowrap}}
td.cid{{font-family:monospace;font-size:.8em;color:#666}}</style></head>
<body><h1>Index of {title}</h1><p class="cid">{node.cid} — {count if count <= MAX_LISTED else str(MAX_LISTED) + '+'} entries</p>
<table>{parent}{''.join(rows)}</table></body></html>
"""
    body = page.encode()
    cache.put(cache_key_for(req), (200, headers, body), len(body) + 512)
    return web.Response(status=200, headers=headers, body=body)
