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
from ..content_origin import ContentOrigin, content_origin, public_path
from .headers import CORS, GatewayRequest, cache_control, cache_key_for, common_headers, not_modified, response_etag_matches

# the listing's Etag changes with its template (boxo: an xxhash of its template)
LISTING_VERSION = "2"
LISTING_CACHE_CONTROL = "public, max-age=604800, stale-while-revalidate=2678400"  # a week, as boxo
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
    origin = content_origin(request)
    public = public_path(request)  # the path as the client sees it (on a content origin: under its root)
    if not req.trailing_slash:
        location = public + "/"
        if request.rel_url.raw_query_string:
            location += "?" + request.rel_url.raw_query_string
        headers = {"Location": location, "X-Ipfs-Path": req.content_path,
                   "X-Ipfs-Roots": ",".join(str(r) for r in resolved.roots), "Cache-Control": cache_control(req)}
        if req.ipfs_uri:  # IPIP-548: the path as requested, before the trailing slash is added
            headers["Ipfs-Uri"] = req.ipfs_uri
        return web.Response(status=301, headers={**headers, **CORS})
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
    if req.namespace == "ipfs":  # generated HTML may change with Hearth's version: not immutable (as boxo)
        headers["Cache-Control"] = LISTING_CACHE_CONTROL
    inm = request.headers.get("If-None-Match")
    # the listing's own Etag, or the directory's CID as Etag (what a client has from its other forms)
    if response_etag_matches(inm, headers["Etag"]):
        return not_modified(headers)
    base = public.rstrip("/") if origin is not None else quote(req.content_path.rstrip("/"), safe="/:")
    # a CID's own page: the path gateway, or on a subdomain origin the gateway domain it hangs under
    # (scheme-relative, as boxo; it redirects to the CID's subdomain); a DNSLink origin has no gateway
    cid_base = None if origin is not None and not origin.gateway else \
        (f"//{origin.gateway}" if origin is not None else "")
    rows = []
    count = 0
    async for entry in unixfs.list_directory(get_block, node):
        count += 1
        if count > MAX_LISTED:
            rows.append(f"<tr><td colspan=3>… listing truncated at {MAX_LISTED} entries</td></tr>")
            break
        name = html.escape(entry.name)
        href = f"{base}/{quote(entry.name, safe='')}"
        if cid_base is not None:  # as boxo: the CID with the name as ?filename= (escaped once more)
            cid = (f'<a class="ipfs-hash" translate="no" href="{cid_base}/ipfs/{entry.cid}?filename='
                   f'{quote(quote(entry.name, safe=""), safe="")}">{entry.cid}</a>')
        elif origin is not None:  # a DNSLink origin mounts no gateway: the CID inspector, as boxo
            cid = (f'<a class="ipfs-hash" translate="no" href="https://cid.ipfs.tech/#{entry.cid}" '
                   f'target="_blank" rel="noreferrer noopener">{entry.cid}</a>')
        else:
            cid = str(entry.cid)
        rows.append(
            f'<tr><td><a href="{href}">{name}</a></td>'
            f'<td class="cid">{cid}</td>'
            f'<td class="size" title="{entry.tsize} bytes">{human_size(entry.tsize)}</td></tr>'
        )
    parent = ""
    if req.segments:  # not on the root: its parent would leave the content
        parent = f'<tr><td><a href="{base}/..">..</a></td><td></td><td></td></tr>'
    title = html.escape(req.content_path)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse;width:100%}}
td{{padding:.3em .6em;border-bottom:1px solid #ddd}}td.size{{text-align:right;white-space:nowrap}}
td.cid{{font-family:monospace;font-size:.8em;color:#666}}</style></head>
<body><h1>Index of {breadcrumbs(req, origin)}</h1><p class="cid">{node.cid} — {count if count <= MAX_LISTED else str(MAX_LISTED) + '+'} entries</p>
<table>{parent}{''.join(rows)}</table></body></html>
"""
    body = page.encode()
    cache.put(cache_key_for(req), (200, headers, body), len(body) + 512)
    return web.Response(status=200, headers=headers, body=body)


def breadcrumbs(req: GatewayRequest, origin: ContentOrigin | None) -> str:
    """The path, each part a link to its own listing, as boxo's:
    `/ipfs/<a href="/ipfs/CID">CID</a>/<a href="/ipfs/CID/a">a</a>`. On a subdomain
    origin the links go to the path gateway of the domain it hangs under
    (`//example.com/ipfs/CID/a`, which redirects back to the subdomain); on a DNSLink
    origin they are that origin's own paths, scheme-relative (`//name/`, `//name/a`)."""
    if origin is not None and not origin.gateway:  # DNSLink: the name is the origin's root
        host = html.escape(origin.host)
        out, href = [f'<a href="//{host}/">{host}</a>'], f"//{host}"
    else:
        prefix = f"//{origin.gateway}" if origin is not None else ""
        href = f"{prefix}/{req.namespace}/{quote(req.root_text, safe='')}"
        out = [f'<a href="{href}">{html.escape(req.root_text)}</a>']
    for seg in req.segments:
        href += "/" + quote(seg, safe="")
        out.append(f'<a href="{href}">{html.escape(seg)}</a>')
    return f"/{req.namespace}/" + "/".join(out)
