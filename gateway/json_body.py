"""Bounded JSON parsing for request bodies and JSON-valued query parameters.

`json.loads` recurses once per nesting level and raises RecursionError (a 500)
on a few thousand `[`; it also accepts NaN/Infinity, silently keeps the last of
duplicate keys, and decodes any size it is given. Every JSON the node reads
from a client goes through `parse_json`, which refuses, with a message that
says what is wrong:

* more than `max_bytes` (status 413 for a body, 400 for a query value);
* text that is not UTF-8, or starts with a byte-order mark;
* nesting deeper than `max_depth` (checked by a scan before `json.loads` runs,
  so the parser never recurses that deep);
* NaN, Infinity, -Infinity, and numbers that overflow a float (`1e999`);
* duplicate keys in one object: different JSON readers keep the first or the
  last, so a duplicated `cid` or meta key could mean one thing to a proxy or
  audit log and another to the node; refusing is the only unambiguous answer;
* anything after the value (trailing garbage), as `json.loads` does.
"""
from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_BYTES = 1024 * 1024  # the app's client_max_size
MAX_DEPTH = 32

# strings (so brackets inside them are not counted) and brackets
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class BadJSON(ValueError):
    """The JSON is refused; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _reject_constant(name: str):
    raise BadJSON(f"{name} is not allowed (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJSON(f"number {text[:40]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise BadJSON(f"duplicate key {k[:100]!r} in a JSON object")
        out[k] = v
    return out


def nesting_depth(text: str) -> int:
    """The deepest array/object nesting in `text` (exact for valid JSON; for invalid
    JSON never less than what json.loads would descend into before failing)."""
    if text.count("[") + text.count("{") <= 1:
        return int("[" in text or "{" in text)
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if not brackets:
        return 0
    return max(0, max(accumulate(_DEPTH_STEP[c] for c in brackets)))


def parse_json(data: bytes | str, *, what: str = "the request body", max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH, too_large_status: int = 413) -> Any:
    """Parse one JSON value from a client, within bounds; BadJSON says why not."""
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise BadJSON(f"{what} is {size} bytes; at most {max_bytes} are accepted", too_large_status)
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadJSON(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON(f"{what} is not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise BadJSON(f"{what} starts with a byte-order mark; send plain UTF-8 JSON")
    if not text.strip():
        raise BadJSON(f"{what} is empty; a JSON value is required")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise BadJSON(f"{what} nests arrays/objects {depth} levels deep; at most {max_depth} are allowed")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except BadJSON as exc:
        raise BadJSON(f"{what}: {exc.message}") from None
    except RecursionError:  # not reachable after the depth scan; kept as a last guard
        raise BadJSON(f"{what} nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, int digit limits
        raise BadJSON(f"{what} is not valid JSON: {exc}") from None
