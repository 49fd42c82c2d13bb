"""Start and stop a real Kubo daemon for tests and benchmarks: an offline repo
in a temp dir, API/Gateway/Swarm on free loopback ports."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

KUBO_VERSION = "v0.42.0"


def ipfs_bin() -> str:
    path = os.environ.get("HEARTH_IPFS_BIN") or str(Path.home() / ".cache/hearth/tools" / f"ipfs-{KUBO_VERSION}")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"Kubo binary not found at {path}: run scripts/install-test-deps.sh")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KuboDaemon:
    def __init__(self, repo: str | None = None, unix_api: bool = False):
        self.bin = ipfs_bin()
        self._own_repo = repo is None
        self.repo = repo or tempfile.mkdtemp(prefix="hearth-kubo-")
        self.proc: subprocess.Popen | None = None
        # unix_api: the RPC also listens on a Unix socket, api_unix ("unix:/path")
        self.unix_api = unix_api
        self.api_port = free_port()
        self.gateway_port = free_port()
        self.swarm_port = free_port()

    @property
    def env(self) -> dict:
        return dict(os.environ, IPFS_PATH=self.repo)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_socket(self) -> str:
        return str(Path(self.repo) / "api.sock")

    @property
    def api_unix(self) -> str:
        """The RPC's Unix socket as a `[storage] kubo_api` value (needs unix_api=True)."""
        return "unix:" + self.api_socket

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def ipfs(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        out = subprocess.run([self.bin, *args], env=self.env, input=input, capture_output=True, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"ipfs {' '.join(args)} failed: {out.stderr.decode()}")
        return out.stdout.decode()

    def init(self) -> None:
        if not (Path(self.repo) / "config").exists():
            self.ipfs("init", "--profile=test", "--empty-repo")
        cfg = {
            "Addresses.API": json.dumps([f"/ip4/127.0.0.1/tcp/{self.api_port}", f"/unix{self.api_socket}"]
                                        if self.unix_api else f"/ip4/127.0.0.1/tcp/{self.api_port}"),
            "Addresses.Gateway": json.dumps(f"/ip4/127.0.0.1/tcp/{self.gateway_port}"),
            "Addresses.Swarm": json.dumps([f"/ip4/127.0.0.1/tcp/{self.swarm_port}"]),
            "Bootstrap": "[]",
            "Discovery.MDNS.Enabled": "false",
            "Routing.Type": json.dumps("none"),
            "Gateway.NoFetch": "true",
            "Swarm.DisableNatPortMap": "true",
            "AutoConf.Enabled": "false",
            "Provide.Enabled": "false",
        }
        for key, value in cfg.items():
            self.ipfs("config", "--json", key, value, check=key not in ("AutoConf.Enabled", "Provide.Enabled"))

    def start(self, timeout: float = 60) -> "KuboDaemon":
        self.init()
        log = open(Path(self.repo) / "daemon.log", "ab")
        self.proc = subprocess.Popen([self.bin, "daemon", "--offline=false"], env=self.env, stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Kubo exited: {(Path(self.repo) / 'daemon.log').read_text()[-2000:]}")
            try:
                req = urllib.request.Request(self.api_url + "/api/v0/version", method="POST")
                urllib.request.urlopen(req, timeout=1).read()
                urllib.request.urlopen(self.gateway_url + "/ipfs/bafkqaaa", timeout=1).read()
                if self.unix_api and not os.path.exists(self.api_socket):
                    raise OSError("the RPC's Unix socket is not there yet")
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("Kubo did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Hard stop (SIGKILL), to test how the node copes with a dead daemon."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            # a killed daemon leaves its repo lock behind
            for lock in ("repo.lock",):
                try:
                    (Path(self.repo) / lock).unlink()
                except FileNotFoundError:
                    pass

    def cleanup(self) -> None:
        self.stop()
        if self._own_repo:
            shutil.rmtree(self.repo, ignore_errors=True)

    def add_only_hash(self, path: str, *flags: str) -> str:
        return self.ipfs("add", "--only-hash", "-Q", *flags, path).strip()
