"""CARv1: write a header and blocks, read them back with every block checked.

The header is a tiny DAG-CBOR map {roots, version}; a minimal CBOR codec for
exactly that shape lives here rather than a whole DAG-CBOR dependency.
"""
from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

from .cid import CID, InvalidCID, decode_varint, encode_varint

MAX_HEADER = 1 << 20
MAX_BLOCK = 4 << 20  # Kubo refuses blocks over 4 MiB (bitswap limit is 2 MiB)


class InvalidCAR(ValueError):
    """A CAR stream that is malformed, truncated or carries a block not matching its CID."""


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    if n < 0x100:
        return bytes([major << 5 | 24, n])
    if n < 0x10000:
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def encode_header(roots: list[CID]) -> bytes:
    body = _cbor_head(5, 2)
    body += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for r in roots:
        raw = b"\x00" + r.to_bytes()
        body += b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return encode_varint(len(body)) + body


def encode_block(cid: CID, data: bytes) -> bytes:
    c = cid.to_bytes()
    return encode_varint(len(c) + len(data)) + c + data


class _Cbor:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def _arg(self, info: int) -> int:
        if info < 24:
            return info
        size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if size is None:
            raise InvalidCAR("unsupported CBOR length encoding in header")
        v = int.from_bytes(self.buf[self.pos : self.pos + size], "big")
        self.pos += size
        return v

    def item(self, depth: int = 0):
        if depth > 8 or self.pos >= len(self.buf):
            raise InvalidCAR("malformed CAR header")
        ib = self.buf[self.pos]
        self.pos += 1
        major, info = ib >> 5, ib & 31
        n = self._arg(info)
        if major == 0:
            return n
        if major in (2, 3):
            v = self.buf[self.pos : self.pos + n]
            if len(v) != n:
                raise InvalidCAR("truncated CAR header")
            self.pos += n
            return bytes(v) if major == 2 else v.decode("utf-8", "replace")
        if major == 4:
            return [self.item(depth + 1) for _ in range(n)]
        if major == 5:
            return {self.item(depth + 1): self.item(depth + 1) for _ in range(n)}
        if major == 6:
            inner = self.item(depth + 1)
            if n == 42 and isinstance(inner, bytes) and inner[:1] == b"\x00":
                return CID.from_bytes(inner[1:])
            raise InvalidCAR("unexpected CBOR tag in CAR header")
        raise InvalidCAR("unsupported CBOR item in CAR header")


def decode_header(body: bytes) -> list[CID]:
    try:
        h = _Cbor(body).item()
    except InvalidCID as exc:
        raise InvalidCAR(f"bad root CID in CAR header: {exc}") from None
    if not isinstance(h, dict) or h.get("version") != 1:
        raise InvalidCAR("not a CARv1 header (version must be 1)")
    roots = h.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise InvalidCAR("CAR header roots must be a list of CIDs")
    return roots


class CarReader:
    """Reads a CARv1 from an async byte source, yielding verified (cid, data)."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]]):
        self._read = read  # read(n) -> up to n bytes, b"" at EOF
        self._buf = bytearray()
        self._eof = False
        self.roots: list[CID] = []

    async def _fill(self, n: int) -> bool:
        while len(self._buf) < n and not self._eof:
            chunk = await self._read(max(65536, n - len(self._buf)))
            if not chunk:
                self._eof = True
            else:
                self._buf += chunk
        return len(self._buf) >= n

    async def _varint(self) -> int | None:
        await self._fill(10)
        if not self._buf:
            return None
        try:
            v, p = decode_varint(bytes(self._buf[:10]), 0)
        except InvalidCID:
            raise InvalidCAR("truncated or malformed length prefix") from None
        del self._buf[:p]
        return v

    async def read_header(self) -> list[CID]:
        n = await self._varint()
        if n is None or n == 0:
            raise InvalidCAR("empty CAR: no header")
        if n > MAX_HEADER:
            raise InvalidCAR("CAR header too large")
        if not await self._fill(n):
            raise InvalidCAR("truncated CAR header")
        body = bytes(self._buf[:n])
        del self._buf[:n]
        self.roots = decode_header(body)
        return self.roots

    async def blocks(self) -> AsyncIterator[tuple[CID, bytes]]:
        while True:
            n = await self._varint()
            if n is None:
                return
            if n == 0 or n > MAX_BLOCK + 100:
                raise InvalidCAR(f"bad block section length {n}")
            if not await self._fill(n):
                raise InvalidCAR("truncated CAR: block section cut short")
            section = bytes(self._buf[:n])
            del self._buf[:n]
            try:
                cid, p = CID.read(section, 0)
            except (InvalidCID, IndexError) as exc:
                raise InvalidCAR(f"bad block CID: {exc}") from None
            data = section[p:]
            if not cid.verify(data):
                raise InvalidCAR(f"block {cid} does not match its CID")
            yield cid, data
