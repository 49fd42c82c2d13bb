"""IPNS as a name system of the resolver (naming/resolver.py): libp2p-key names,
resolved to the best valid record this node has; with the Kubo engine, a name it
does not have is asked of Kubo (`routing/get /ipns/...`), and Kubo's answer is
verified like any record before it is used (and not kept in the store).

Resolutions are cached in process for as long as the record allows (its TTL, never
past its EOL), as Kubo's namesys cache: a request for a name within that time costs
a dict lookup, no database read and no signature check. A record this node stores
(PUT /routing/v1/ipns, a publish) calls `changed(name)`, which drops the entry here
and, through a shared counter in `run/ipns.generation`, in every worker's cache.
"""
from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from pathlib import Path

from storage.cid import CID, InvalidCID
from storage.engine import EngineError, EngineTimeout, EngineUnavailable
from storage.metadata import MetadataStore

from ..resolver import InvalidName, NameNotFound, NameUnavailable, Resolution
from . import record as records
from . import store as db
from .keys import BadKey, InvalidIpnsName, IpnsName
from .record import Record, RecordInvalid

log = logging.getLogger("hearth.ipns")


def canonical_key_name(text: str) -> str | None:
    """The CIDv1 base36 form of a libp2p-key name in any encoding; None if `text` is not
    one. Memoized (names of at most 256 characters, 4096 of them): decoding base36 costs
    more than the rest of a cached /ipns/ request."""
    if not text or "." in text or "/" in text or len(text) > 256:
        return None
    return _canonical(text)


def looks_like_key_name(text: str) -> bool:
    """What IPNS claims: a libp2p-key name in any encoding, and (to answer with the
    right message) any other CID; never a DNS name (those have dots)."""
    if not text or "." in text or "/" in text or len(text) > 256:
        return False
    return _key_like(text)


@functools.lru_cache(maxsize=4096)
def _canonical(text: str) -> str | None:
    try:
        return str(IpnsName.parse(text))
    except (InvalidIpnsName, BadKey):
        return None


@functools.lru_cache(maxsize=4096)
def _key_like(text: str) -> bool:
    if _canonical(text) is not None:
        return True
    try:
        CID.parse(text)
        return True
    except (InvalidCID, ValueError):
        return False


def parse_name(text: str) -> IpnsName:
    try:
        return IpnsName.parse(text)
    except (InvalidIpnsName, BadKey) as exc:
        raise InvalidName(str(exc)) from None


MAX_CACHED = 4096  # resolutions kept per process (least recently used go first)


def _generation_slot(store: MetadataStore):
    """The workers' shared "some record changed" counter, next to the response cache's."""
    try:
        from gateway.shared_slot import SharedSlot

        return SharedSlot(Path(store.path).parent / "run" / "ipns.generation")
    except (OSError, ValueError, TypeError, AttributeError, ImportError):
        return None


class IpnsNameSystem:
    name = "ipns"
    caches_answers = True  # for the TTL, dropped when a record is stored (the gateway relies on it)

    def __init__(self, store: MetadataStore, engine=None, max_cached: int = MAX_CACHED):
        self.store = store
        self.engine = engine  # asked for names this node has no record of, if it can (Kubo)
        self.max_cached = max_cached
        self._cache: OrderedDict[str, tuple[float, str]] = OrderedDict()  # name -> (monotonic expiry, value)
        self._generation = _generation_slot(store)
        self._seen = self._generation.value if self._generation is not None else 0

    def handles(self, name: str) -> bool:
        return looks_like_key_name(name)

    async def resolve(self, name: str) -> Resolution:
        if self._generation is not None and self._generation.value != self._seen:
            self._seen = self._generation.value
            self._cache.clear()
        hit = self._cache.get(name)
        if hit is not None:
            left = hit[0] - time.monotonic()
            if left > 0:
                return Resolution(hit[1], left, self.name)
            del self._cache[name]
        seen = self._seen
        rec = await self.lookup(parse_name(name))
        ttl = rec.cache_seconds()
        now_seen = self._generation.value if self._generation is not None else self._seen
        if ttl > 0 and seen == now_seen == self._seen:  # no record stored anywhere while we looked
            self._cache[name] = (time.monotonic() + ttl, rec.value_text)
            if len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return Resolution(rec.value_text, ttl, self.name)

    @property
    def version(self) -> int:
        """Changes whenever some worker stores a record: answers built from earlier
        resolutions (the gateway's per-request cache) are stale then."""
        return self._generation.value if self._generation is not None else self._seen

    def changed(self, name: str) -> None:
        """A record of `name` was stored: forget cached answers here and in every worker."""
        self._cache.clear()
        if self._generation is not None:
            _old, self._seen = self._generation.update(lambda n: n + 1)
        else:
            self._seen += 1

    async def lookup(self, name: IpnsName) -> Record:
        """The best valid record for the name: NameNotFound if there is none,
        NameUnavailable if Kubo could not be asked."""
        row = await self.store.run(db.get_record, self.store, str(name))
        if row is not None:
            try:
                return records.verify(row["record"], name)  # verified again: the EOL moves on
            except RecordInvalid as exc:
                if exc.rule != "expired":
                    log.warning("the stored IPNS record of %s does not verify (%s): ignored", name, exc)
        rec = await self._ask_engine(name)
        if rec is None:
            if row is not None:
                raise NameNotFound(f"the record of {name} on this node has expired")
            raise NameNotFound(f"no IPNS record for {name} on this node")
        return rec

    async def _ask_engine(self, name: IpnsName) -> Record | None:
        routing_get = getattr(self.engine, "routing_get", None)
        if routing_get is None:
            return None
        try:
            raw = await routing_get("/ipns/" + str(name))
        except (EngineUnavailable, EngineTimeout) as exc:
            raise NameUnavailable(f"cannot ask Kubo for {name}: {exc}") from None
        except EngineError as exc:
            log.debug("Kubo's routing get of %s failed: %s", name, exc)
            return None
        if raw is None:
            return None
        try:
            return records.verify(raw, name, time.time_ns())
        except RecordInvalid as exc:
            log.info("Kubo's record for %s is not valid: %s", name, exc)
            return None
