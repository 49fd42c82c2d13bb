"""The `hearth` command as a user runs it: tokens, config overrides, serve and a clean stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from tests.support.kubo import free_port

ROOT = Path(__file__).resolve().parent.parent
HEARTH = [sys.executable, "-m", "gateway.cli"]


def run(*args, env=None, check=True):
    out = subprocess.run([*HEARTH, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_tokens(tmp_path):
    d = str(tmp_path / "data")
    token = run("token", "create", "--name", "ci", "--data-dir", d).stdout.strip()
    assert token.startswith("hearth_") and len(token) > 40
    dup = run("token", "create", "--name", "ci", "--data-dir", d, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    listing = run("token", "list", "--data-dir", d).stdout
    assert "ci" in listing and "active" in listing and token not in listing
    assert "revoked" in run("token", "revoke", "ci", "--data-dir", d).stdout
    assert "revoked" in run("token", "list", "--data-dir", d).stdout
    assert run("token", "revoke", "ci", "--data-dir", d, check=False).returncode == 1


def test_config_file_and_env(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9999\n[storage]\nengine = "kubo"\n')
    c = load_config(cfg, env={"HEARTH_SERVER_PORT": "1234", "HEARTH_AUTH_ANONYMOUS_UPLOADS": "true"})
    assert c["server"]["port"] == 1234 and c["storage"]["engine"] == "kubo" and c["auth"]["anonymous_uploads"] is True
    c = load_config(ROOT / "config.toml", env={})
    assert c.values == load_config(None, env={}).values  # the shipped file documents the defaults
    for text in ('[server]\nport = "x"\n', '[nope]\na = 1\n', '[server]\nnope = 1\n', '[storage]\nengine = "ftp"\n', "not toml ["):
        cfg.write_text(text)
        with pytest.raises(ConfigError):
            load_config(cfg, env={})
    with pytest.raises(ConfigError):
        load_config(None, env={"HEARTH_SERVER_PORT": "eighty"})
    bad = run("serve", "--config", str(tmp_path / "missing.toml"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_serve_upload_and_sigterm(tmp_path, kubo):
    port = free_port()
    d = str(tmp_path / "data")
    token = run("token", "create", "--name", "t", "--data-dir", d).stdout.strip()
    env = dict(os.environ, HEARTH_STORAGE_ENGINE="kubo", HEARTH_STORAGE_KUBO_API=kubo.api_url)
    proc = subprocess.Popen([*HEARTH, "serve", "--port", str(port), "--data-dir", d], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []  # warnings (e.g. the generated key passphrase, on a new data dir) may come first
        while not any(f"http://127.0.0.1:{port}" in line for line in seen) and len(seen) < 20:
            seen.append(proc.stdout.readline())
        assert any(f"http://127.0.0.1:{port}" in line for line in seen), seen
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/content?filename=a.txt", data=b"served",
                                     headers={"Authorization": f"Bearer {token}"}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
