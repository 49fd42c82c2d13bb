"""Start and stop anvil (npm @foundry-rs/anvil, pinned in scripts/install-test-deps.sh, cached in
~/.cache/hearth/chain) for tests and benchmarks: a free loopback port, `--silent`, optionally
`--state PATH` (loaded at start, dumped at stop: restart keeps the chain).

    a = Anvil().start(); a.rpc_url; a.mine(3); snap = a.snapshot(); a.revert(snap)
    a.reorg(2)           # a real reorg (anvil_reorg): the last 2 blocks replaced, their txs gone
    a.stop(); a.start()  # same port; with state_path, same chain
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ANVIL_VERSION = "1.7.1"
TOOLS = Path(os.environ.get("HEARTH_CHAIN_TOOLS_DIR") or Path.home() / ".cache/hearth/chain")
# anvil's first prefunded dev account (mnemonic "test test ... junk"): a public test key
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def anvil_bin() -> str:
    path = os.environ.get("HEARTH_ANVIL_BIN") or str(TOOLS / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"anvil not found at {path}: run scripts/install-test-deps.sh")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Anvil:
    def __init__(self, state_path: str | Path | None = None, chain_id: int | None = None,
                 args: list[str] | None = None):
        self.bin = anvil_bin()
        self.port = free_port()
        self.state_path = Path(state_path) if state_path else None
        self.chain_id = chain_id
        self.args = list(args or [])
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.TemporaryFile()

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "Anvil":
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [self.bin, "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        if self.state_path:
            cmd += ["--state", str(self.state_path)]
        if self.chain_id:
            cmd += ["--chain-id", str(self.chain_id)]
        self.proc = subprocess.Popen(cmd + self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.rpc("eth_chainId")
                return self
            except OSError:
                if self.proc.poll() is not None:
                    self._log.seek(0)
                    raise RuntimeError(f"anvil exited {self.proc.returncode}: {self._log.read()[-2000:]!r}")
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError("anvil did not answer in time")
                time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (anvil dumps --state on the way out), or SIGKILL with kill=True."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rpc(self, method: str, params: list | None = None):
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
        req = urllib.request.Request(self.rpc_url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            out = json.loads(resp.read())
        if "error" in out:
            raise RuntimeError(f"{method}: {out['error']}")
        return out["result"]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def mine(self, n: int = 1) -> None:
        self.rpc("anvil_mine", [hex(n)])

    def reorg(self, depth: int, tx_block_pairs: list | None = None) -> None:
        """Replace the last `depth` blocks with new ones (new hashes; their transactions dropped
        unless given again as [txRequest, blockOffset] pairs)."""
        self.rpc("anvil_reorg", [depth, tx_block_pairs or []])

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def set_automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", [on])

    def cleanup(self) -> None:
        self.stop()
        self._log.close()
