"""Range requests on file bodies (RFC 9110 section 14): which bytes to send,
with which status and headers, and the multipart/byteranges framing when
several ranges are asked for (section 14.6).

One plan serves every case the same way -- whole body, one range, several
ranges, GET or HEAD -- as a list of parts, each a run of the file's bytes
preceded by its part header (empty unless multipart), and a closing line.

Semantics (single ranges as this gateway has always answered them; several
ranges as Go's http.ServeContent, from which Kubo's gateway is derived):

* no Range, a Range that is not `bytes=...`, or a malformed range-spec: the
  whole body, 200 (RFC 9110 lets a server ignore Range);
* range-specs that start past the end (or an empty suffix) are unsatisfiable
  and dropped; if none is left, 416 with `Content-Range: bytes */size`;
* one satisfiable range: 206 with Content-Range;
* several: 206 multipart/byteranges, one part per range, in the order asked,
  each with its Content-Range and the file's Content-Type -- unless together
  they ask for more bytes than the file has (overlaps, repeats): then the whole
  body, 200, as Go does (likely a broken client or an attack).

Kubo's own gateway (boxo) answers only the first range of several; the gateway
conformance suite accepts that, a 200, or multipart/byteranges, and checks the
multipart form for a `multipart/byteranges` Content-Type and each part's
Content-Range, Content-Type and bytes -- which is what this module sends.

The multipart boundary is derived from the Etag and the Range header instead of
drawn at random: the same request gets the same bytes (whichever storage engine
serves it, cached or not), and content cannot contain a boundary computed from
its own hash.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..errors import HTTPError

_SPEC = re.compile(r"^(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    pass


@dataclass(slots=True)
class Part:
    start: int
    end: int  # exclusive
    head: bytes = b""  # the multipart part header before the bytes (b"" for a single range)


@dataclass
class BodyPlan:
    status: int  # 200 or 206
    parts: list[Part]
    tail: bytes = b""  # the multipart closing delimiter
    headers: dict[str, str] = field(default_factory=dict)  # Content-Length, Content-Range or Content-Type

    @property
    def whole(self) -> bool:
        return self.status == 200


def parse_ranges(value: str | None, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges as [(start, end_exclusive)], in the order asked; None to
    send the whole body. Raises Unsatisfiable if no range can be satisfied."""
    if not value:
        return None
    v = value.strip().replace(" ", "").replace("\t", "")
    if not v.startswith("bytes="):
        return None
    specs = [s for s in v[len("bytes="):].split(",") if s]
    if not specs:
        return None
    out: list[tuple[int, int]] = []
    for spec in specs:
        m = _SPEC.match(spec)
        if not m:
            return None
        first, last = m.groups()
        if not first and not last:
            return None
        if not first:
            n = int(last)
            if n == 0 or size == 0:
                continue
            out.append((max(0, size - n), size))
            continue
        start = int(first)
        if last and int(last) < start:
            return None  # an invalid range-spec: ignore the header
        if start >= size:
            continue
        out.append((start, size if not last else min(size, int(last) + 1)))
    if not out:
        raise Unsatisfiable
    if len(out) > 1 and sum(e - s for s, e in out) > size:
        return None
    return out


def unsatisfiable(size: int) -> HTTPError:
    return HTTPError(416, "range_not_satisfiable", f"range not satisfiable for {size} bytes",
                     {"Content-Range": f"bytes */{size}"})


def boundary_for(etag: str, range_value: str) -> str:
    return hashlib.sha256(f"hearth-byteranges\0{etag}\0{range_value}".encode()).hexdigest()[:32]


def plan(range_value: str | None, size: int, content_type: str, etag: str) -> BodyPlan:
    """The body to send for a file of `size` bytes. Raises HTTPError 416."""
    try:
        ranges = parse_ranges(range_value, size)
    except Unsatisfiable:
        raise unsatisfiable(size) from None
    if ranges is None:
        return BodyPlan(200, [Part(0, size)], headers={"Content-Length": str(size)})
    if len(ranges) == 1:
        start, end = ranges[0]
        return BodyPlan(206, [Part(start, end)], headers={"Content-Range": f"bytes {start}-{end - 1}/{size}",
                                                         "Content-Length": str(end - start)})
    boundary = boundary_for(etag, range_value or "")
    parts = []
    for i, (start, end) in enumerate(ranges):
        head = (f"--{boundary}\r\nContent-Range: bytes {start}-{end - 1}/{size}\r\n"
                f"Content-Type: {content_type}\r\n\r\n").encode("latin-1")
        parts.append(Part(start, end, head if i == 0 else b"\r\n" + head))
    tail = f"\r\n--{boundary}--\r\n".encode("ascii")
    length = sum(len(p.head) + p.end - p.start for p in parts) + len(tail)
    return BodyPlan(206, parts, tail, {"Content-Type": f"multipart/byteranges; boundary={boundary}",
                                       "Content-Length": str(length)})


def assemble(body: bytes, p: BodyPlan) -> bytes:
    """The response body of a plan, for a file held in memory."""
    if p.whole:
        return body
    if len(p.parts) == 1:
        part = p.parts[0]
        return body[part.start : part.end]
    return b"".join(part.head + body[part.start : part.end] for part in p.parts) + p.tail
