"""The node's Ethereum key (chain/keystore.py, `hearth key create|import|address`, `hearth anchor
deploy`): keystore v3 files that eth-account imports, passphrase from the environment or a file,
one-line errors, and nothing secret in logs, output, errors or other files."""
from __future__ import annotations

import io
import json
import logging
import os
import stat
import sys

import pytest

from chain.keystore import KeystoreError, keystore_path, load_account, load_node_account, read_address
from gateway.cli import main
from tests.support.anvil import DEV_KEY

DEV_ADDRESS = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
PASS = "correct horse battery staple"


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("HEARTH_CHAIN_PASSPHRASE", PASS)
    for var in ("HEARTH_CONFIG", "HEARTH_CHAIN_RPC_URL", "HEARTH_CHAIN_KEYSTORE", "HEARTH_CHAIN_PASSPHRASE_FILE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "data"


def hearth(*argv, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(list(argv))


def assert_no_secret(text: str, *secrets: str):
    for s in secrets:
        assert s.lower() not in text.lower(), f"a secret leaked: {s[:6]}..."


def test_create_address_and_keystore_v3(env, capsys):
    from eth_account import Account

    assert hearth("key", "create", "--data-dir", str(env)) == 0
    out, err = capsys.readouterr()
    address = out.strip()
    assert address.startswith("0x") and len(address) == 42
    path = env / "chain" / "key.json"
    assert "keystore v3" in err and str(path) in err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["crypto"]["kdf"] == "scrypt" and data["crypto"]["cipher"] == "aes-128-ctr"
    key = Account.decrypt(data, PASS)  # any eth-account (or wallet) opens it
    assert Account.from_key(key).address == address
    assert_no_secret(path.read_text(), key.hex(), PASS)
    # the address, with no passphrase at all
    os.environ.pop("HEARTH_CHAIN_PASSPHRASE")
    assert hearth("key", "address", "--data-dir", str(env)) == 0
    assert capsys.readouterr().out.strip() == address
    # a second create refuses to replace it
    os.environ["HEARTH_CHAIN_PASSPHRASE"] = PASS
    assert hearth("key", "create", "--data-dir", str(env)) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and err.count("\n") == 1
    assert hearth("key", "create", "--force", "--data-dir", str(env)) == 0
    assert capsys.readouterr().out.strip() != address


def test_import_hex_from_stdin_and_from_another_keystore(env, capsys, monkeypatch, tmp_path):
    from eth_account import Account

    assert hearth("key", "import", "--data-dir", str(env), stdin=DEV_KEY + "\n", monkeypatch=monkeypatch) == 0
    out, err = capsys.readouterr()
    assert out.strip() == DEV_ADDRESS
    assert_no_secret(out + err + (env / "chain/key.json").read_text(), DEV_KEY[2:], PASS)
    assert load_account(env / "chain/key.json", PASS).address == DEV_ADDRESS

    # from another keystore file, sealed with another passphrase given in a file
    other = Account.create()
    src = tmp_path / "wallet.json"
    src.write_text(json.dumps(Account.encrypt(other.key, "wallet pass", kdf="pbkdf2")))
    pf = tmp_path / "wallet.pass"
    pf.write_text("wallet pass\n")
    data2 = tmp_path / "data2"
    assert hearth("key", "import", "--from", str(src), "--from-passphrase-file", str(pf), "--data-dir", str(data2)) == 0
    assert capsys.readouterr().out.strip() == other.address
    assert load_account(data2 / "chain/key.json", PASS).address == other.address  # re-sealed with the node's
    # the source's wrong passphrase: one line, no secret
    pf.write_text("nope\n")
    assert hearth("key", "import", "--from", str(src), "--from-passphrase-file", str(pf), "--force",
                  "--data-dir", str(data2)) == 1
    err = capsys.readouterr().err
    assert err == f"error: wrong passphrase for the keystore {src}\n"

    # not a key: refused without echoing what was given
    bad = DEV_KEY[:-1] + "g"
    assert hearth("key", "import", "--data-dir", str(tmp_path / "d3"), stdin=bad, monkeypatch=monkeypatch) == 1
    err = capsys.readouterr().err
    assert "64 hex digits" in err and err.count("\n") == 1
    assert_no_secret(err, bad[2:20])


def test_wrong_passphrase_is_one_line_and_secret_free(env, capsys, caplog):
    from chain.keystore import create_key

    create_key(env / "chain/key.json", PASS)
    os.environ["HEARTH_CHAIN_PASSPHRASE"] = "Tr0ub4dor&3"
    with caplog.at_level(logging.DEBUG):
        rc = hearth("anchor", "deploy", "--rpc", "http://127.0.0.1:9", "--data-dir", str(env))
    assert rc == 1
    err = capsys.readouterr().err
    assert err == f"error: wrong passphrase for the keystore {env / 'chain/key.json'}\n"
    assert_no_secret(err + caplog.text, "Tr0ub4dor&3", PASS)
    with pytest.raises(KeystoreError) as exc:
        load_account(env / "chain/key.json", "Tr0ub4dor&3")
    assert exc.value.__cause__ is None and exc.value.__suppress_context__  # no library message chained


def test_passphrase_sources(env, tmp_path, capsys):
    from chain.keystore import create_key, read_passphrase

    os.environ.pop("HEARTH_CHAIN_PASSPHRASE")
    with pytest.raises(KeystoreError, match="HEARTH_CHAIN_PASSPHRASE or \\[chain\\] passphrase_file"):
        read_passphrase({"passphrase_file": ""}, env={})
    assert hearth("key", "create", "--data-dir", str(env)) == 1  # stdin is no terminal: no prompt
    assert "HEARTH_CHAIN_PASSPHRASE" in capsys.readouterr().err
    pf = tmp_path / "pass.txt"
    pf.write_text(PASS + "\nignored second line\n")
    cfg = {"passphrase_file": str(pf), "keystore": str(tmp_path / "elsewhere/node.json")}
    assert read_passphrase(cfg, env={}) == PASS
    assert read_passphrase(cfg, env={"HEARTH_CHAIN_PASSPHRASE": "from env"}) == "from env"  # env first
    assert keystore_path(cfg, env) == tmp_path / "elsewhere/node.json"
    assert keystore_path({"keystore": ""}, env) == env / "chain/key.json"
    address = create_key(keystore_path(cfg, env), read_passphrase(cfg, env={}))
    assert load_node_account(cfg, env, env={}).address == address == read_address(keystore_path(cfg, env))
    pf.write_text("\n")
    with pytest.raises(KeystoreError, match="empty first line"):
        read_passphrase(cfg, env={})
    with pytest.raises(KeystoreError, match="cannot read"):
        read_passphrase({"passphrase_file": str(tmp_path / "missing")}, env={})
    with pytest.raises(KeystoreError, match="no keystore"):
        read_address(tmp_path / "none.json")


def test_deploy_cli_and_nothing_secret_anywhere(env, anvil, capsys, caplog, monkeypatch):
    """`hearth anchor deploy` on anvil with an imported key; then every log line, every output and
    every file of the data dir is searched for the key and the passphrase."""
    with caplog.at_level(logging.DEBUG):
        assert hearth("key", "import", "--data-dir", str(env), stdin=DEV_KEY, monkeypatch=monkeypatch) == 0
        assert hearth("anchor", "deploy", "--rpc", anvil.rpc_url, "--data-dir", str(env)) == 0
        out, err = capsys.readouterr()
        address = out.strip().splitlines()[-1]
        assert anvil.rpc("eth_getCode", [address, "latest"]) not in ("0x", "")
        assert f'anchor_contract = "{address}"' in err
        # through [chain] rpc_url, a dead URL first
        monkeypatch.setenv("HEARTH_CHAIN_RPC_URL", f"http://127.0.0.1:9,{anvil.rpc_url}")
        assert hearth("anchor", "deploy", "--data-dir", str(env)) == 0
        out2, err2 = capsys.readouterr()
        # embedded: refused, it deploys its own
        monkeypatch.setenv("HEARTH_CHAIN_RPC_URL", "embedded")
        assert hearth("anchor", "deploy", "--data-dir", str(env)) == 1
        out3, err3 = capsys.readouterr()
        assert "embedded" in err3
    text = caplog.text + out + err + out2 + err2 + out3 + err3
    for path in env.rglob("*"):
        if path.is_file():
            text += path.read_text(errors="replace")
    assert_no_secret(text, DEV_KEY[2:], PASS)
