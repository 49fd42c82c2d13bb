"""A bounded in-memory LRU for immutable things: small blocks and small
gateway responses. Content under /ipfs/ never changes, so nothing expires;
entries only fall out when the byte budget is exceeded, or when a garbage
collection may have removed what they hold: then every worker's cache is
dropped, told by a generation counter in the data dir (SharedGeneration)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .shared_slot import SharedSlot


class SharedGeneration(SharedSlot):
    """How many times some worker dropped every worker's cache (a gc ran)."""

    def bump(self) -> None:
        self.update(lambda n: n + 1)


class ResponseCache:
    def __init__(self, max_bytes: int, max_item: int, generation: SharedGeneration | None = None):
        self.max_bytes = max_bytes
        self.max_item = max_item
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.size = 0
        self.hits = self.misses = 0
        self.generation = generation
        self._seen = generation.value if generation is not None else 0

    def invalidate_everywhere(self) -> None:
        """Content may be gone from the store: drop this cache and every other worker's."""
        if self.generation is not None:
            self.generation.bump()
            self._seen = self.generation.value
        self.clear()

    def get(self, key):
        if self.generation is not None and self.generation.value != self._seen:
            self._seen = self.generation.value
            self.clear()
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key, value, cost: int) -> None:
        if key is None or cost > self.max_item or cost > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self._items[key] = (value, cost)
        self.size += cost
        while self.size > self.max_bytes and self._items:
            _, (_, c) = self._items.popitem(last=False)
            self.size -= c

    def clear(self) -> None:
        self._items.clear()
        self.size = 0
