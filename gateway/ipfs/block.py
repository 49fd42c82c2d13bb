"""application/vnd.ipld.raw: one verifiable block, and dag-cbor/dag-json blocks as-is."""
from __future__ import annotations

from aiohttp import web

from storage import unixfs

from ..cache import ResponseCache
from ..content_origin import public_path
from .headers import GatewayRequest, common_headers, content_disposition, etag_matches, not_modified
from .unixfs_file import send_bytes


async def serve(req: GatewayRequest, resolved: unixfs.Resolved, cache: ResponseCache) -> web.StreamResponse:
    node = resolved.node
    headers = common_headers(req, resolved.roots, f'"{node.cid}.raw"')
    headers["Content-Type"] = "application/vnd.ipld.raw"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Disposition"] = content_disposition(req.filename or f"{node.cid}.bin", True)
    if req.format_from_accept:
        headers["Content-Location"] = _with_format(req, "raw")
    if etag_matches(req.request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    return send_bytes(req, headers, node.block, cache)


async def serve_codec(req: GatewayRequest, resolved: unixfs.Resolved, cache: ResponseCache) -> web.StreamResponse:
    node = resolved.node
    headers = common_headers(req, resolved.roots, f'"{node.cid}.{node.kind}"')
    headers["Content-Type"] = f"application/vnd.ipld.{node.kind}"
    headers["X-Content-Type-Options"] = "nosniff"
    if req.filename:
        headers["Content-Disposition"] = content_disposition(req.filename, req.download)
    if etag_matches(req.request.headers.get("If-None-Match"), headers["Etag"]):
        return not_modified(headers)
    return send_bytes(req, headers, node.block, cache)


def _with_format(req: GatewayRequest, fmt: str) -> str:
    qs = req.request.rel_url.raw_query_string
    return public_path(req.request) + "?" + (qs + "&" if qs else "") + f"format={fmt}"
