"""A small secret kept in a file of its own (mode 0600), made once: the node's
operator key, a generated key passphrase. Cheap to import (the supervisor reads
the operator key without loading any cryptography)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_secret_file(path: Path, make=lambda: secrets.token_urlsafe(32)) -> str:
    """Write a new secret (mode 0600, fsynced) and return it; if another process made
    the file first, return theirs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
        f.flush()
        os.fsync(f.fileno())
    return value
