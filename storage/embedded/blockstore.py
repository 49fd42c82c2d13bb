"""On-disk, content-addressed block store (flatfs layout, as Kubo's).

Layout: ``<root>/<SHARD>/<KEY>.data`` where KEY is the RFC 4648 base32 (upper
case, no padding) of the block's *multihash* and SHARD is the next-to-last two
characters of KEY -- Kubo's ``/repo/flatfs/shard/v1/next-to-last/2``. Blocks are
keyed by multihash, not CID, so the raw and dag-pb CIDs (v0 or v1) of the same
bytes share one file, as in Kubo.

Crash safety: a block is written to a temp file in its shard directory and then
``os.replace``d onto its final name, so a file named by a hash is either the
whole block or absent after a process crash. ``fsync`` is optional (off by
default, as Kubo's flatfs ``sync: false`` default): without it a power loss may
leave a renamed file short or empty. With verify_on_read = "always" that is never
served: every read is checked against the multihash, a mismatching file raises
CorruptBlock and is moved aside (``*.corrupt``) so the next add/import of that
content rewrites it. With "never" (the node's default) reads are not re-hashed:
the scrubber (scrubber.py) re-hashes every block in the background and
quarantines the same way, and file serving checks sizes as it goes (serving.py).

Every method here is blocking: the engine calls them through ``asyncio.to_thread``
in batches (a whole group of leaves per hop), never on the event loop (small
reads and zero-copy serving open block files on the loop themselves: serving.py).
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from ..cid import CID, IDENTITY, SHA2_256, decode_varint
from ..engine import BlockNotFound, EngineError

TMP_PREFIX = ".tmp-"
RECOUNT_SHARED = 60.0  # seconds
SUFFIX = ".data"



class CorruptBlock(EngineError):
    """A stored block does not hash to its name: it is not served (maps to 502)."""

    def __init__(self, cid: CID | str):
        super().__init__(f"stored block {cid} is corrupt (hash mismatch); not served")
        self.cid = cid


def mh_key(mh: bytes) -> str:
    return base64.b32encode(mh).decode("ascii").rstrip("=")


def key_mh(key: str) -> bytes:
    return base64.b32decode(key + "=" * (-len(key) % 8))


def process_alive(tagged: str) -> bool:
    """Is the process whose pid starts `tagged` ("<pid>-...") still running?"""
    try:
        os.kill(int(tagged.split("-", 1)[0]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return True


def verify_mh(mh: bytes, data: bytes) -> bool:
    code, p = decode_varint(mh, 0)
    length, p = decode_varint(mh, p)
    digest = mh[p:]
    if code == SHA2_256:
        return len(digest) == 32 and hashlib.sha256(data).digest() == digest
    if code == IDENTITY:
        return data == digest
    return False


class Blockstore:
    def __init__(self, root: Path, fsync: bool = False, shared: bool = False):
        self.root = Path(root)
        self._root = str(self.root)
        self.fsync = fsync
        self.root.mkdir(parents=True, exist_ok=True)
        self._dirs: set[str] = set()
        self._counter = 0
        self._counter_lock = threading.Lock()
        # blocks and bytes stored, counted once by a scan, then kept up to date by
        # put/adopt/remove (what the gc watermark checks, without a scan each time)
        self._usage: list[int] | None = None
        self._usage_lock = threading.Lock()
        self._scanned = 0.0
        self.shared = shared  # other processes write here too (several server workers)

    # --- paths --------------------------------------------------------------
    def path_for(self, mh: bytes) -> Path:
        return Path(self.path_str(mh))

    def path_str(self, mh: bytes) -> str:
        """path_for as a plain string: pathlib costs microseconds a call, and reads call it per block."""
        key = mh_key(mh)
        return f"{self._root}/{key[-3:-1]}/{key}{SUFFIX}"

    def _shard_dir(self, key: str) -> str:
        d = os.path.join(self.root, key[-3:-1])
        if d not in self._dirs:
            os.makedirs(d, exist_ok=True)
            self._dirs.add(d)
        return d

    def _tmp_name(self, d: str) -> str:
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        return os.path.join(d, f"{TMP_PREFIX}{os.getpid()}-{threading.get_ident()}-{n}")

    # --- writes -------------------------------------------------------------
    def write_file(self, final: str, data, d: str) -> int:
        """data: bytes-like, or a tuple of bytes-like parts (written with writev).
        Returns the bytes written."""
        tmp = self._tmp_name(d)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            parts = [memoryview(p) for p in data] if isinstance(data, tuple) else [memoryview(data)]
            parts = [p for p in parts if p.nbytes]
            size = sum(p.nbytes for p in parts)
            while parts:
                n = os.writev(fd, parts)
                while parts and n >= parts[0].nbytes:
                    n -= parts[0].nbytes
                    parts.pop(0)
                if n:
                    parts[0] = parts[0][n:]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        os.close(fd)
        os.replace(tmp, final)
        return size

    def put(self, mh: bytes, data) -> bool:
        """Store data (bytes-like or tuple of parts) under mh; the caller vouches
        that it hashes to mh. Returns False if the block was already there."""
        key = mh_key(mh)
        d = self._shard_dir(key)
        final = os.path.join(d, key + SUFFIX)
        if os.path.exists(final):
            return False
        self._count(1, self.write_file(final, data, d))
        return True

    def put_many(self, blocks: Iterable[tuple[bytes, object]]) -> int:
        return sum(1 for mh, data in blocks if self.put(mh, data))

    def adopt(self, mh: bytes, src: str) -> None:
        """Move an already-written (and verified) file into place (CAR import)."""
        key = mh_key(mh)
        d = self._shard_dir(key)
        final = os.path.join(d, key + SUFFIX)
        if os.path.exists(final):
            os.unlink(src)
            return
        size = os.stat(src).st_size
        os.replace(src, final)
        self._count(1, size)

    def sync_dirs(self) -> None:
        if not self.fsync:
            return
        for d in list(self._dirs):
            try:
                fd = os.open(d, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- reads ------------------------------------------------------------------
    def has(self, mh: bytes) -> bool:
        if mh[:1] == b"\x00":  # identity multihash: the data is in the CID
            return True
        return os.path.exists(self.path_str(mh))

    def get(self, cid: CID, verify: bool = True) -> bytes:
        """The block, verified against its hash unless verify=False; BlockNotFound if
        absent, CorruptBlock if damaged (the file is then quarantined)."""
        mh = cid.multihash
        if cid.hash_code == IDENTITY:
            return cid.digest
        path = self.path_for(mh)
        data = self._read(path)
        if data is None:
            raise BlockNotFound(cid)
        if verify and not verify_mh(mh, data):
            self._quarantine(path)
            raise CorruptBlock(cid)
        return data

    def get_unverified_head(self, mh: bytes, n: int) -> bytes | None:
        return self._read(self.path_str(mh), n)

    def read_unverified(self, mh: bytes) -> bytes | None:
        return self._read(self.path_str(mh), -1)

    @staticmethod
    def _read(path, n: int = -1) -> bytes | None:
        """A block file's bytes (the first n, or all), or None if absent."""
        try:
            with open(path, "rb") as f:
                return f.read(n)
        except FileNotFoundError:
            return None

    def _quarantine(self, path: Path | str) -> bool:
        """Move a damaged block aside (``*.corrupt``): it is no longer served, and the
        next add/import of its content writes it again. False if it was gone already."""
        try:
            size = os.stat(path).st_size
            os.replace(path, str(path) + ".corrupt")
        except OSError:
            return False
        self._count(-1, -size)
        return True

    # --- enumeration / deletion ---------------------------------------------
    def iter_keys(self) -> Iterator[tuple[bytes, str]]:
        """(multihash, path) of every stored block."""
        try:
            shards = list(os.scandir(self.root))
        except FileNotFoundError:
            return
        for shard in shards:
            if not shard.is_dir():
                continue
            with os.scandir(shard.path) as it:
                for e in it:
                    name = e.name
                    if name.endswith(SUFFIX) and not name.startswith("."):
                        try:
                            mh = key_mh(name[: -len(SUFFIX)])
                        except ValueError:
                            continue
                        yield mh, e.path

    def remove_stale_temps(self, older_than: float = 3600) -> int:
        """Remove temp files left by a crash (their process is gone, or they are older
        than older_than seconds) and quarantined corrupt blocks older than that.
        Other live processes' temp files are left alone: they may be writing them now."""
        now = time.time()
        n = 0
        try:
            shards = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for shard in shards:
            if not shard.is_dir():
                continue
            with os.scandir(shard.path) as it:
                for e in it:
                    name = e.name
                    try:
                        stale = now - e.stat().st_mtime > older_than
                        if name.startswith(TMP_PREFIX) and (stale or not process_alive(name[len(TMP_PREFIX):])):
                            os.unlink(e.path)
                            n += 1
                        elif name.endswith(".corrupt") and stale:
                            os.unlink(e.path)
                            n += 1
                    except OSError:
                        pass
        return n

    def remove(self, path: str) -> bool:
        """Delete one block file (gc's sweep); False if it was already gone."""
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return False
        self._count(-1, -size)
        return True

    def count(self) -> int:
        return sum(1 for _ in self.iter_keys())

    # --- usage ------------------------------------------------------------------
    def _count(self, blocks: int, size: int) -> None:
        if self._usage is not None:
            with self._usage_lock:
                self._usage[0] += blocks
                self._usage[1] += size

    def scan_usage(self) -> tuple[int, int]:
        """Count (blocks, bytes) on disk, and keep counting from there (a block written
        while the scan runs may be missed: the count is for watermarks, not accounting)."""
        blocks = size = 0
        for _, path in self.iter_keys():
            try:
                size += os.stat(path).st_size
                blocks += 1
            except FileNotFoundError:
                pass
        with self._usage_lock:
            self._usage = [blocks, size]
            self._scanned = time.monotonic()
            return blocks, size

    def usage(self) -> tuple[int, int]:
        """(blocks, bytes) stored: from the running count, scanning the first time (and,
        when other processes write to this store too, again once the count is a minute
        old: they do not tell this one what they write)."""
        if self._usage is None or (self.shared and time.monotonic() - self._scanned > RECOUNT_SHARED):
            return self.scan_usage()
        with self._usage_lock:
            return self._usage[0], self._usage[1]
