"""dag-pb (PBNode/PBLink) and UnixFS Data protobuf codecs.

Encoding follows Kubo byte for byte: links before Data, every link carries an
empty Name when unnamed and a Tsize, `blocksizes` are not packed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cid import CID, InvalidCID, decode_varint, encode_varint

# UnixFS Data.Type
RAW, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = range(6)
TYPE_NAMES = {RAW: "raw", DIRECTORY: "directory", FILE: "file", METADATA: "metadata", SYMLINK: "symlink", HAMT_SHARD: "hamt-sharded-directory"}


class InvalidNode(ValueError):
    """A block that does not decode as the codec its CID names."""


@dataclass(slots=True)
class PBLink:
    cid: CID
    name: str = ""
    tsize: int = 0


@dataclass(slots=True)
class PBNode:
    links: list[PBLink] = field(default_factory=list)
    data: bytes | None = None


@dataclass(slots=True)
class UnixFSData:
    type: int
    data: bytes = b""
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)
    hash_type: int | None = None
    fanout: int | None = None


def _key(fieldno: int, wire: int) -> bytes:
    return encode_varint(fieldno << 3 | wire)


def _bytes_field(fieldno: int, value: bytes) -> bytes:
    return _key(fieldno, 2) + encode_varint(len(value)) + value


def _iter_fields(buf: bytes):
    pos = 0
    n = len(buf)
    try:
        while pos < n:
            key, pos = decode_varint(buf, pos)
            fieldno, wire = key >> 3, key & 7
            if wire == 0:
                value, pos = decode_varint(buf, pos)
            elif wire == 2:
                length, pos = decode_varint(buf, pos)
                if pos + length > n:
                    raise InvalidNode("truncated protobuf field")
                value = buf[pos : pos + length]
                pos += length
            elif wire == 1:
                value = buf[pos : pos + 8]
                pos += 8
            elif wire == 5:
                value = buf[pos : pos + 4]
                pos += 4
            else:
                raise InvalidNode(f"unsupported protobuf wire type {wire}")
            yield fieldno, wire, value
    except InvalidCID as exc:
        raise InvalidNode(str(exc)) from None


def encode_link(link: PBLink) -> bytes:
    return (
        _bytes_field(1, link.cid.to_bytes())
        + _bytes_field(2, link.name.encode())
        + _key(3, 0)
        + encode_varint(link.tsize)
    )


def encode_node(node: PBNode) -> bytes:
    out = bytearray()
    for link in node.links:
        out += _bytes_field(2, encode_link(link))
    if node.data is not None:
        out += _bytes_field(1, node.data)
    return bytes(out)


def decode_node(buf: bytes) -> PBNode:
    node = PBNode()
    for fieldno, wire, value in _iter_fields(buf):
        if fieldno == 2 and wire == 2:
            link = PBLink(cid=None)  # type: ignore[arg-type]
            for lf, lw, lv in _iter_fields(value):
                if lf == 1 and lw == 2:
                    try:
                        link.cid = CID.from_bytes(bytes(lv))
                    except InvalidCID as exc:
                        raise InvalidNode(f"bad link CID: {exc}") from None
                elif lf == 2 and lw == 2:
                    link.name = bytes(lv).decode("utf-8", "replace")
                elif lf == 3 and lw == 0:
                    link.tsize = lv
            if link.cid is None:
                raise InvalidNode("link without Hash")
            node.links.append(link)
        elif fieldno == 1 and wire == 2:
            node.data = bytes(value)
        else:
            raise InvalidNode(f"unexpected PBNode field {fieldno}")
    return node


def encode_unixfs(d: UnixFSData) -> bytes:
    out = bytearray(_key(1, 0) + encode_varint(d.type))
    if d.data:
        out += _bytes_field(2, d.data)
    if d.filesize is not None:
        out += _key(3, 0) + encode_varint(d.filesize)
    for bs in d.blocksizes:
        out += _key(4, 0) + encode_varint(bs)
    if d.hash_type is not None:
        out += _key(5, 0) + encode_varint(d.hash_type)
    if d.fanout is not None:
        out += _key(6, 0) + encode_varint(d.fanout)
    return bytes(out)


def decode_unixfs(buf: bytes) -> UnixFSData:
    d = UnixFSData(type=-1)
    for fieldno, wire, value in _iter_fields(buf):
        if fieldno == 1 and wire == 0:
            d.type = value
        elif fieldno == 2 and wire == 2:
            d.data = bytes(value)
        elif fieldno == 3 and wire == 0:
            d.filesize = value
        elif fieldno == 4 and wire == 0:
            d.blocksizes.append(value)
        elif fieldno == 4 and wire == 2:  # packed, accepted on read
            p = 0
            while p < len(value):
                v, p = decode_varint(bytes(value), p)
                d.blocksizes.append(v)
        elif fieldno == 5 and wire == 0:
            d.hash_type = value
        elif fieldno == 6 and wire == 0:
            d.fanout = value
    if d.type not in TYPE_NAMES:
        raise InvalidNode(f"unknown UnixFS type {d.type}")
    return d


def file_leaf_node(chunk: bytes) -> bytes:
    """A CIDv0-style leaf: a dag-pb node holding a UnixFS File with the bytes inline."""
    return encode_node(PBNode(data=encode_unixfs(UnixFSData(FILE, chunk, len(chunk)))))
