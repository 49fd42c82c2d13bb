"""A bounded in-memory LRU for immutable things: small blocks and small
gateway responses. Content under /ipfs/ never changes, so nothing expires;
entries only fall out when the byte budget is exceeded."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ResponseCache:
    def __init__(self, max_bytes: int, max_item: int):
        self.max_bytes = max_bytes
        self.max_item = max_item
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self.size = 0
        self.hits = self.misses = 0

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item[0]

    def put(self, key, value, cost: int) -> None:
        if cost > self.max_item or cost > self.max_bytes:
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
