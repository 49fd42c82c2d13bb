"""`hearth repo verify`: is every block of every live record and settled pin
request present, and does each hash to its CID?

Walks each root's whole DAG through the engine's get_block and hashes every
block it reads before decoding it, whatever the engine does on reads (the
embedded engine with `verify_on_read = "never"` does not re-hash; `hearth repo
verify` runs it with "always", so a corrupt block is also moved aside, as the
scrubber would). Read-only apart from that, so it can run beside a live node.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import unixfs
from .cid import CID, SHA2_256
from .embedded.blockstore import CorruptBlock, verify_mh
from .engine import BlockNotFound, StorageEngine
from .metadata import MetadataStore

REPORT_LIMIT = 100


@dataclass
class VerifyReport:
    records: int = 0
    pin_requests: int = 0
    roots: int = 0
    blocks: int = 0
    missing: list[tuple[str, str]] = field(default_factory=list)  # (root, block)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (root, why): not UnixFS we can walk

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt or self.unreadable)


def _roots(store: MetadataStore) -> tuple[int, int, list[str]]:
    db = store.db
    records = [r[0] for r in db.execute("SELECT MIN(cid) FROM content WHERE status = 'pinned' GROUP BY key")]
    requests = [r[0] for r in db.execute("SELECT MIN(cid) FROM pins WHERE status = 'pinned' GROUP BY key")]
    roots = list(dict.fromkeys(records + requests))
    return len(records), len(requests), roots


async def verify_content(store: MetadataStore, engine: StorageEngine) -> VerifyReport:
    report = VerifyReport()
    report.records, report.pin_requests, roots = await store.run(_roots, store)
    seen: set = set()

    async def get_block(cid: CID) -> bytes:
        data = await engine.get_block(cid)
        if cid.hash_code == SHA2_256 and not verify_mh(cid.multihash, data):  # others: unchecked
            raise CorruptBlock(cid)
        return data

    for text in roots:
        root = CID.parse(text)
        report.roots += 1
        current = root
        try:
            node = await unixfs.load(get_block, root)
            async for cid, _data in unixfs.walk_all(get_block, node, seen):  # every block hashed by get_block
                current = cid
                report.blocks += 1
        except BlockNotFound as exc:
            _note(report.missing, text, str(exc.cid))
        except CorruptBlock as exc:
            _note(report.corrupt, text, str(exc.cid))
        except ValueError as exc:  # a block that does not decode as what it claims to be
            _note(report.unreadable, text, f"{current}: {exc}")
    return report


def _note(items: list, root: str, what: str) -> None:
    if len(items) < REPORT_LIMIT:
        items.append((root, what))
