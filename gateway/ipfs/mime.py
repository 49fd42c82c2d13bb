"""Content-Type for a served file: from its name, else sniffed from its first bytes."""
from __future__ import annotations

import mimetypes

_EXTRA = {
    ".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json", ".svg": "image/svg+xml",
    ".wasm": "application/wasm", ".md": "text/markdown", ".webp": "image/webp", ".avif": "image/avif",
    ".car": "application/vnd.ipld.car", ".woff2": "font/woff2", ".webmanifest": "application/manifest+json",
    ".xml": "text/xml",  # as Go's builtin table (Kubo); Python's says application/xml
}

_TEXTUAL = ("text/",)  # as Go's mime table (Kubo): charset only on text/*


def from_name(name: str) -> str | None:
    if not name or "." not in name:
        return None
    ext = "." + name.rsplit(".", 1)[1].lower()
    ctype = _EXTRA.get(ext) or mimetypes.types_map.get(ext)
    if ctype is None:
        return None
    if ctype.startswith(_TEXTUAL) and "charset" not in ctype:
        ctype += "; charset=utf-8"
    return ctype


_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b\x08", "application/x-gzip"),
    (b"\x00asm", "application/wasm"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\x1aE\xdf\xa3", "video/webm"),
    (b"BM", "image/bmp"),
]

_HTML_TAGS = (b"<!doctype html", b"<html", b"<head", b"<script", b"<iframe", b"<h1", b"<div", b"<font",
              b"<table", b"<a", b"<style", b"<title", b"<b", b"<body", b"<br", b"<p", b"<!--")


def sniff(head: bytes) -> str:
    """A small subset of the WHATWG MIME sniffing algorithm."""
    if not head:
        return "text/plain"
    for sig, ctype in _SIGNATURES:
        if head.startswith(sig):
            return ctype
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    stripped = head.lstrip(b" \t\r\n\x0c")
    lower = stripped[:32].lower()
    for tag in _HTML_TAGS:
        if lower.startswith(tag) and len(lower) > len(tag) and lower[len(tag)] in b" >":
            return "text/html; charset=utf-8"
    if lower.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    if lower.startswith(b"<svg"):
        return "image/svg+xml"
    if any(b < 0x09 or 0x0d < b < 0x20 and b != 0x1b for b in head[:512]):
        return "application/octet-stream"
    try:
        head[:512].decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < min(len(head), 512) - 4:
            return "application/octet-stream"
    return "text/plain; charset=utf-8"
