"""Check a CAR before any of it is kept: spool it to disk while verifying every
block against its CID, and work out which linked blocks it lacks."""
from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from typing import IO, Awaitable, Callable

from . import dagpb
from .car import CarReader, InvalidCAR
from .cid import CID, DAG_PB, IDENTITY


@dataclass
class CheckedCar:
    roots: list[CID]
    spool: IO[bytes]  # the CAR bytes, rewound, for engines that import a file
    blocks: int = 0
    present: set = field(default_factory=set)  # (codec, multihash) keys in the CAR
    dangling: list[CID] = field(default_factory=list)  # links to blocks not in the CAR


async def check_car(read: Callable[[int], Awaitable[bytes]], spool_dir: str | None = None,
                    on_block: Callable[[CID, bytes], Awaitable[None]] | None = None) -> CheckedCar:
    """Raises InvalidCAR for a malformed/truncated CAR or a block that fails its hash."""
    spool = await asyncio.to_thread(tempfile.TemporaryFile, dir=spool_dir)
    pending = bytearray()

    async def tee(n: int) -> bytes:
        # spool in 1 MiB batches, written off the event loop
        chunk = await read(n)
        pending.extend(chunk)
        if len(pending) >= 1 << 20 or (not chunk and pending):
            data = bytes(pending)
            pending.clear()
            await asyncio.to_thread(spool.write, data)
        return chunk

    reader = CarReader(tee)
    roots = await reader.read_header()
    if not roots:
        raise InvalidCAR("CAR has no roots")
    checked = CheckedCar(roots, spool)
    links: list[CID] = []
    async for cid, data in reader.blocks():
        checked.blocks += 1
        checked.present.add((cid.codec, cid.multihash))
        if cid.codec == DAG_PB:
            try:
                links.extend(l.cid for l in dagpb.decode_node(data).links)
            except dagpb.InvalidNode as exc:
                raise InvalidCAR(f"block {cid} is not valid dag-pb: {exc}") from None
        if on_block is not None:
            await on_block(cid, data)
    seen = set()
    for c in roots + links:
        key = (c.codec, c.multihash)
        if key not in checked.present and key not in seen and c.hash_code != IDENTITY:
            seen.add(key)
            checked.dangling.append(c)
    if pending:
        await asyncio.to_thread(spool.write, bytes(pending))
    await asyncio.to_thread(spool.seek, 0)
    return checked
