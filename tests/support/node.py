"""Run `hearth serve` as a child process, as an operator does: for tests that need
a real server socket (connection limits, open-file limits) or a real crash."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.kubo import free_port

ROOT = Path(__file__).resolve().parents[2]
HEARTH = [sys.executable, "-m", "gateway.cli"]


def hearth(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([*HEARTH, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    if check and out.returncode != 0:
        raise AssertionError(f"hearth {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return out


class NodeProcess:
    """A node on a free loopback port. `ulimit_nofile` starts it under that open-file limit."""

    def __init__(self, data_dir: Path, env: dict | None = None, ulimit_nofile: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = free_port()
        self.env = dict(os.environ, **(env or {}))
        self.ulimit_nofile = ulimit_nofile
        self.proc: subprocess.Popen | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        self.token = hearth("token", "create", "--name", f"t{time.time_ns()}", "--data-dir", str(self.data_dir),
                            env=self.env).stdout.strip()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 30) -> "NodeProcess":
        cmd = [*HEARTH, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        preexec = self._limit_files if self.ulimit_nofile else None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=preexec, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hearth serve exited {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                # the node writes its `api` file once every worker listens
                if (self.data_dir / "api").exists():
                    urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"hearth serve did not start: {self.log()[-3000:]}")

    def _limit_files(self) -> None:  # in the child, as `ulimit -n N` in a shell: soft and hard
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.ulimit_nofile, self.ulimit_nofile))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL to the node's every process (its workers too): a crash, nothing
        gets to clean up."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # started in a session of its own
            self.proc.wait()
        self.proc = None

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
        self.proc = None
        return rc
