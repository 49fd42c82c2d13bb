"""One resolver for every name system: IPNS (libp2p-key names), DNSLink (DNS
names), and later ENS. `/ipns/{name}` paths, subdomain gateways and DNSLink
origins all resolve through `Resolver.resolve_path`, so every name system is
served by one code path.

A name system answers a single hop: `resolve(name)` gives the value the name
points to (`/ipfs/{cid}[/path]` or `/ipns/{name}[/path]`) and for how long that
answer holds (its TTL). The Resolver follows `/ipns/` values hop by hop (at most
MAX_DEPTH), joins the sub-paths of every hop with the request's own, and keeps
the smallest TTL of the chain: what the gateway serves is cacheable for that
long, never `immutable`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Protocol

from storage.cid import CID, InvalidCID

MAX_DEPTH = 32


class NamingError(Exception):
    """Base of the errors below."""


class InvalidName(NamingError, ValueError):
    """Not a name any configured system could hold (maps to 400)."""


class NameNotFound(NamingError, LookupError):
    """A well-formed name with no (valid) value (maps to 404)."""


class NameUnavailable(NamingError):
    """The system behind the name could not answer now: DNS down, an RPC failing
    (maps to 502/504 with Retry-After)."""


class NameLoop(NamingError):
    """The chain of /ipns/ values is longer than MAX_DEPTH or comes back on itself (maps to 400)."""


@dataclass(frozen=True)
class Resolution:
    value: str  # "/ipfs/{cid}[/path]" or "/ipns/{name}[/path]"
    ttl: float  # seconds this answer may be cached
    source: str  # the name system: "ipns", "dnslink", "ens"
    stale: bool = False  # the last good answer, served while the system cannot answer (ENS: [ens] stale_s)


class NameSystem(Protocol):
    name: str

    def handles(self, name: str) -> bool:
        """Whether this system resolves names of this shape (cheap, no I/O)."""

    async def resolve(self, name: str) -> Resolution:
        """One hop. Raises InvalidName, NameNotFound or NameUnavailable."""


@dataclass
class ResolvedPath:
    cid: CID  # the immutable root the chain ends at
    segments: list[str]  # the sub-path under it: the values' own, then the request's
    ttl: float  # the smallest TTL of the chain
    chain: list[tuple[str, Resolution]] = field(default_factory=list)  # (name, its answer), hop by hop


def split_value(value: str) -> tuple[str, str, list[str]]:
    """"/ipfs/bafy.../a/b" -> ("ipfs", "bafy...", ["a", "b"]); InvalidName if malformed."""
    parts = value.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] not in ("ipfs", "ipns") or not parts[2]:
        raise InvalidName(f"{value[:200]!r} is not an /ipfs/ or /ipns/ path")
    segments = [p for p in parts[3:] if p]
    if any(p in (".", "..") for p in segments):
        raise InvalidName(f"{value[:200]!r} has '.' or '..' segments")
    return parts[1], parts[2], segments


@functools.lru_cache(maxsize=4096)
def _parse_cid(text: str) -> CID:
    """CID.parse, memoized (CIDs are immutable): the same values come back on every
    request for a name, and parsing is most of what a cached resolution costs."""
    return CID.parse(text)


class Resolver:
    def __init__(self, systems: list[NameSystem] | None = None, max_depth: int = MAX_DEPTH):
        self.systems: list[NameSystem] = list(systems or [])
        self.max_depth = max_depth

    def add(self, system: NameSystem) -> None:
        self.systems.append(system)

    async def close(self) -> None:
        """Release what the systems hold (HTTP sessions...): the app's cleanup."""
        for system in self.systems:
            close = getattr(system, "close", None)
            if close is not None:
                await close()

    def system_for(self, name: str) -> NameSystem:
        for system in self.systems:
            if system.handles(name):
                return system
        raise InvalidName(f"{name[:200]!r} is not a name this node can resolve "
                          f"(name systems: {', '.join(s.name for s in self.systems) or 'none'})")

    async def resolve(self, name: str) -> Resolution:
        """One hop of one name."""
        return await self.system_for(name).resolve(name)

    async def resolve_path(self, name: str, segments: list[str] | None = None) -> ResolvedPath:
        """/ipns/{name}/{segments...} down to an /ipfs/ root and the sub-path under it."""
        chain: list[tuple[str, Resolution]] = []
        tail = list(segments or [])
        ttl = float("inf")
        seen: set[str] = set()
        current = name
        while True:
            if current in seen or len(chain) >= self.max_depth:
                raise NameLoop(f"resolving {name!r} took more than {self.max_depth} steps or came back to "
                               f"{current!r}")
            seen.add(current)
            answer = await self.resolve(current)
            chain.append((current, answer))
            ttl = min(ttl, answer.ttl)
            namespace, root, sub = split_value(answer.value)
            tail = sub + tail
            if namespace == "ipfs":
                try:
                    cid = _parse_cid(root)
                except InvalidCID as exc:
                    raise InvalidName(f"{current!r} points to {answer.value[:200]!r}, not a valid CID: {exc}") from None
                return ResolvedPath(cid, tail, ttl, chain)
            current = root
