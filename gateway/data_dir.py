"""The files a node keeps in its data dir besides its data, and what the CLI
learns from them (as Kubo's `$IPFS_PATH/repo.lock` and `$IPFS_PATH/api`):

    repo.lock     held (flock) by the `hearth serve` process that owns the data dir:
                  a second node on the same data dir refuses to start, and
                  `hearth gc` knows to ask the running node instead of collecting
                  under it
    api           the running node's URL, written once it listens, removed at exit
    operator.key  a random secret (mode 0600) that the operator endpoints accept
                  as a bearer token: whoever can read the data dir operates the
                  node anyway, so the CLI on the same machine needs no token
    peer.key      the node's libp2p identity (gateway/peer_id.py); its peer ID also
                  names the pins it makes in a Kubo engine, so it tells its own
                  pins from others'
"""
from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path

from identity.secret_file import create_secret_file

LOCK = "repo.lock"
API = "api"
OPERATOR_KEY = "operator.key"


class DataDirBusy(RuntimeError):
    pass


class DataDirLock:
    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"another Hearth node is using {self.path.parent}") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def node_running(data_dir: Path) -> bool:
    try:
        with DataDirLock(data_dir):
            return False
    except DataDirBusy:
        return True


def write_api_file(data_dir: Path, url: str) -> None:
    path = Path(data_dir) / API
    tmp = path.with_suffix(".tmp")
    tmp.write_text(url + "\n")
    os.replace(tmp, path)


def remove_api_file(data_dir: Path) -> None:
    try:
        (Path(data_dir) / API).unlink()
    except FileNotFoundError:
        pass


def read_api_file(data_dir: Path) -> str | None:
    try:
        return (Path(data_dir) / API).read_text().strip() or None
    except FileNotFoundError:
        return None


def _secret_file(path: Path, make) -> str:
    """The file's content, written (mode 0600) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return create_secret_file(path, make)


def operator_key(data_dir: Path) -> str:
    return _secret_file(Path(data_dir) / OPERATOR_KEY, lambda: "hearth_op_" + secrets.token_urlsafe(32))

