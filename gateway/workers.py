"""Several server processes for one node: `[server] workers` (default: one per
CPU core) processes share the listening port (SO_REUSEPORT: the kernel spreads
new connections over them), so the gateway and the API use every core.

    Supervisor   `hearth serve` itself when workers > 1: holds the data dir, starts
                 the workers (`hearth serve` again, told which worker it is),
                 restarts one that dies, passes SIGTERM/SIGINT on so every worker
                 drains its requests, and exits when they all have.
    Leadership   exactly one worker runs the background services (reconciliation,
                 the pin worker, scheduled gc, the scrubber): the one holding
                 flock(run/leader.lock). The others try again every RETRY seconds,
                 so another takes over within seconds when the leader dies.
    MetricsShare each worker writes its per-process metrics to run/metrics/ every
                 PUBLISH seconds; whichever worker answers /metrics adds the
                 others' in (node-wide values are not summed; see gateway/metrics.py).

What is shared between workers is made safe for several processes where it is
kept: the store lock for gc against writes (storage/embedded/gc.py), per-content
locks (storage/content_locks.py), SQLite for records and tokens, and a
generation counter that tells every worker's response cache that a gc ran
(gateway/cache.py).
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

log = logging.getLogger("hearth.workers")

RETRY = 2.0
PUBLISH = 1.0
STALE = 10.0  # a worker's metrics older than this are not added in (it is gone or stuck)
WORKER_ENV = "HEARTH_SERVE_WORKER"  # "i/n": set by the supervisor for worker i of n
READY_FD_ENV = "HEARTH_SERVE_READY_FD"


def worker_of() -> tuple[int, int] | None:
    """(index, count) when this process is a worker started by a supervisor."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, _, count = value.partition("/")
    return int(index), int(count)


def worker_count(setting: int) -> int:
    return setting if setting > 0 else max(1, os.cpu_count() or 1)


# --- leadership -----------------------------------------------------------------------------
class Leadership:
    """Runs start() once this process holds run/leader.lock, and stop() at the end."""

    def __init__(self, run_dir: Path, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]],
                 retry: float = RETRY):
        self.path = Path(run_dir) / "leader.lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start, self._stop, self.retry = start, stop, retry
        self.leader = False
        self._fd: int | None = None
        self._task: asyncio.Task | None = None

    def _try(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who leads, for the operator
        return True

    async def begin(self) -> None:
        """Lead now if no one does (the services start before this returns), else keep trying."""
        if self._try():
            await self._become(takeover=False)
        else:
            self._task = asyncio.ensure_future(self._wait())

    async def _wait(self) -> None:
        while True:
            await asyncio.sleep(self.retry)
            if self._try():
                await self._become(takeover=True)
                return

    async def _become(self, takeover: bool) -> None:
        self.leader = True
        log.log(logging.INFO if takeover else logging.DEBUG,
                "this process runs the node's background services (pid %d)", os.getpid())
        await self._start()

    async def end(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.leader:
            await self._stop()
            self.leader = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --- metrics across workers -------------------------------------------------------------------
class MetricsShare:
    def __init__(self, run_dir: Path, registry):
        self.dir = Path(run_dir) / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.registry = registry
        self.path = self.dir / f"{os.getpid()}.json"
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                await self.registry.collect()
                await asyncio.to_thread(self._write, json.dumps(self.registry.dump()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - metrics must not take a worker down
                log.debug("could not publish metrics: %r", exc)
            await asyncio.sleep(PUBLISH)

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def others(self) -> list[dict]:
        """The other live workers' latest metrics (blocking: call in a thread)."""
        out = []
        now = time.time()
        for entry in os.scandir(self.dir):
            if not entry.name.endswith(".json") or entry.path == str(self.path):
                continue
            try:
                pid = int(entry.name[:-5])
                os.kill(pid, 0)
                if now - entry.stat().st_mtime > STALE:
                    continue
                out.append(json.loads(Path(entry.path).read_text()))
            except (ValueError, ProcessLookupError, FileNotFoundError, json.JSONDecodeError):
                continue
            except PermissionError:
                continue
        return out


# --- the supervisor -----------------------------------------------------------------------------
class Supervisor:
    """Starts `count` workers on (host, port) and keeps them running until told to stop."""

    MAX_RESTARTS = 5  # in RESTART_WINDOW seconds; then the node gives up
    RESTART_WINDOW = 60.0

    def __init__(self, argv: list[str], count: int, host: str, port: int, drain_seconds: float):
        self.argv, self.count, self.host, self.drain = argv, count, host, drain_seconds
        # the port is chosen (port 0) and held here, with SO_REUSEPORT, so every worker
        # binds the same one and it stays ours while a worker restarts
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.procs: dict[int, subprocess.Popen] = {}
        self.stopping = False
        self.restarts: list[float] = []

    def _spawn(self, index: int, timeout: float = 60) -> subprocess.Popen:
        read, write = os.pipe()
        env = dict(os.environ, **{WORKER_ENV: f"{index}/{self.count}", READY_FD_ENV: str(write)})
        args = [*self.argv, "--host", self.host, "--port", str(self.port)]
        proc = subprocess.Popen(args, env=env, pass_fds=(write,))
        os.close(write)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([read], [], [], 0.2)
                if ready:
                    if os.read(read, 64):
                        return proc
                    break  # the worker closed the pipe without a word: it died
                if proc.poll() is not None or self.stopping:
                    break
        finally:
            os.close(read)
        raise RuntimeError(f"worker {index} did not start (exit code {proc.poll()})")

    def run(self, on_ready: Callable[[int], None]) -> int:
        def stop(signum, _frame):
            if self.stopping:  # a second signal: no more waiting for the drain
                log.warning("second %s while stopping: killing the workers", signal.Signals(signum).name)
                for proc in self.procs.values():
                    if proc.poll() is None:
                        proc.kill()
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            for i in range(self.count):
                self.procs[i] = self._spawn(i)
        except RuntimeError as exc:
            log.error("%s", exc)
            self._stop_all()
            return 1
        on_ready(self.port)
        while not self.stopping:
            time.sleep(0.2)
            for i, proc in list(self.procs.items()):
                if proc.poll() is None or self.stopping:
                    continue
                log.warning("worker %d (pid %d) exited with %s; starting it again", i, proc.pid, proc.returncode)
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < self.RESTART_WINDOW] + [now]
                if len(self.restarts) > self.MAX_RESTARTS:
                    log.error("workers keep exiting (%d restarts in %.0f s): stopping the node",
                              len(self.restarts), self.RESTART_WINDOW)
                    self._stop_all()
                    return 1
                try:
                    self.procs[i] = self._spawn(i)
                except RuntimeError as exc:
                    log.error("%s", exc)
        return self._stop_all()

    def _stop_all(self) -> int:
        """SIGTERM to every worker (each drains its requests), then wait for them."""
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain + 10
        code = 0
        for proc in self.procs.values():
            try:
                rc = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time: killed", proc.pid)
                proc.kill()
                rc = proc.wait()
            code = code or (rc if rc not in (0, -signal.SIGTERM) else 0)
        self.sock.close()
        return code


def serve_argv(config_path: str | None, data_dir: Path) -> list[str]:
    """The command line of a worker (the same interpreter and configuration)."""
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(data_dir)]
    if config_path:
        argv += ["--config", str(config_path)]
    return argv


def exit_with_supervisor() -> None:
    """A worker ends (SIGTERM: it drains) when its supervisor dies, even by SIGKILL
    (Linux prctl PR_SET_PDEATHSIG); elsewhere nothing is done."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the call
        os.kill(os.getpid(), signal.SIGTERM)


def signal_ready() -> None:
    """A worker tells its supervisor it listens."""
    fd = os.environ.get(READY_FD_ENV)
    if fd:
        try:
            os.write(int(fd), b"ready\n")
            os.close(int(fd))
        except OSError:
            pass
