"""Logging for `hearth serve`: one line per record, and repeated warnings and
errors rate-limited so a condition that recurs thousands of times a second (a
flood of bad clients, a dead dependency) cannot fill the disk."""
from __future__ import annotations

import logging
import time

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Warnings and errors with the same logger and message template pass at most
    once per `every` seconds; the next one that passes says how many were dropped."""

    def __init__(self, every: float = 1.0, max_keys: int = 10_000):
        super().__init__()
        self.every, self.max_keys = every, max_keys
        self._last: dict[tuple, float] = {}
        self._dropped: dict[tuple, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        dropped = self._dropped.pop(key, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} similar messages dropped)"
        return True


def configure_logging(level: str, tag: str = "") -> None:
    """tag: which worker this process is, written on each line (several write to one stderr)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT.replace("%(name)s", f"[{tag}] %(name)s") if tag else FORMAT))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
