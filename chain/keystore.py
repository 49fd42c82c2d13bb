"""The node's Ethereum key: one keystore v3 file (the format geth, MetaMask and every wallet
import; eth-account encrypts and decrypts it: scrypt n=2^18, AES-128-CTR), by default
`<data_dir>/chain/key.json`, mode 0600, written atomically and never overwritten.

The passphrase comes from `$HEARTH_CHAIN_PASSPHRASE`, else the first line of `[chain]
passphrase_file`; there is no default (a key sealed with a passphrase stored beside it would be a
key in plain text on disk). Neither the passphrase nor the private key ever reaches a log line,
an exception message or a file outside the keystore: every error here is one line, a
KeystoreError, naming the file and what is wrong.

Cost: decrypting takes ~0.7 s and ~256 MiB of transient memory (scrypt as geth's "standard"
parameters), once per process that signs.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

PASSPHRASE_ENV = "HEARTH_CHAIN_PASSPHRASE"


class KeystoreError(RuntimeError):
    """A one-line, secret-free error about the node's Ethereum key."""


def keystore_path(chain_cfg: Mapping[str, Any], data_dir: str | Path) -> Path:
    """`[chain] keystore`, or `<data_dir>/chain/key.json` when it is ""."""
    configured = (chain_cfg.get("keystore") or "").strip()
    if configured:
        return Path(os.path.expanduser(configured))
    return Path(data_dir) / "chain" / "key.json"


def read_passphrase(chain_cfg: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str:
    """$HEARTH_CHAIN_PASSPHRASE, else the first line of [chain] passphrase_file."""
    env = os.environ if env is None else env
    value = env.get(PASSPHRASE_ENV)
    if value:
        return value
    path = (chain_cfg.get("passphrase_file") or "").strip()
    if path:
        path = os.path.expanduser(path)
        try:
            with open(path, encoding="utf-8") as f:
                line = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise KeystoreError(f"cannot read [chain] passphrase_file {path}: {exc.strerror or exc}") from None
        if not line:
            raise KeystoreError(f"[chain] passphrase_file {path} has an empty first line")
        return line
    raise KeystoreError(f"no passphrase for the node's Ethereum key: set ${PASSPHRASE_ENV} or [chain] passphrase_file")


def _parse_private_key(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        if len(text) == 32:
            return text
        text = text.decode("ascii", "replace")
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        # never echo the input: it may be a key with a typo
        raise KeystoreError("not a private key: expected 64 hex digits (optionally 0x-prefixed)")
    key = bytes.fromhex(text)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # secp256k1 order
    if not 0 < int.from_bytes(key, "big") < n:
        raise KeystoreError("not a private key: out of the secp256k1 range")
    return key


def _write(path: Path, keyfile: dict, overwrite: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not overwrite:
        raise KeystoreError(f"{path} already exists (the node has a key: `hearth key address`); "
                            "move it away first to replace it")
    fd, tmp = tempfile.mkstemp(prefix=".key-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(keyfile, f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if another process created it meanwhile
            except FileExistsError:
                raise KeystoreError(f"{path} already exists") from None
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _encrypt(key: bytes, passphrase: str) -> dict:
    from eth_account import Account

    if not passphrase:
        raise KeystoreError("refusing an empty passphrase")
    return Account.encrypt(key, passphrase)


def create_key(path: str | Path, passphrase: str, overwrite: bool = False) -> str:
    """A new random key, sealed in a keystore v3 file at path; its checksum address."""
    from eth_account import Account

    account = Account.create()
    _write(Path(path), _encrypt(account.key, passphrase), overwrite)
    return account.address


def import_private_key(path: str | Path, private_key: str | bytes, passphrase: str, overwrite: bool = False) -> str:
    """Seal an existing private key (hex, or 32 bytes) at path; its checksum address."""
    from eth_account import Account

    key = _parse_private_key(private_key)
    address = Account.from_key(key).address
    _write(Path(path), _encrypt(key, passphrase), overwrite)
    return address


def import_keystore(path: str | Path, source: str | Path, source_passphrase: str, passphrase: str,
                    overwrite: bool = False) -> str:
    """Re-seal another keystore file's key (opened with source_passphrase) at path."""
    from eth_account import Account

    key = _decrypt(_read_json(Path(source)), source_passphrase, Path(source))
    address = Account.from_key(key).address
    _write(Path(path), _encrypt(key, passphrase), overwrite)
    return address


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path} (create one: `hearth key create`)") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise KeystoreError(f"{path} is not a keystore file (not JSON)") from None
    if not isinstance(data, dict) or "crypto" not in data and "Crypto" not in data:
        raise KeystoreError(f"{path} is not a keystore v3 file")
    return data


def _decrypt(keyfile: dict, passphrase: str, path: Path) -> bytes:
    from eth_account import Account

    try:
        return bytes(Account.decrypt(keyfile, passphrase))
    except Exception as exc:  # noqa: BLE001 - never let the library's message through
        if "MAC mismatch" in str(exc):
            raise KeystoreError(f"wrong passphrase for the keystore {path}") from None
        raise KeystoreError(f"cannot decrypt the keystore {path}: unsupported or damaged "
                            f"({type(exc).__name__})") from None


def read_address(path: str | Path) -> str:
    """The key's checksum address, read from the keystore's `address` field (no passphrase)."""
    from eth_utils import to_checksum_address

    path = Path(path)
    data = _read_json(path)
    try:
        return to_checksum_address("0x" + str(data["address"]).removeprefix("0x"))
    except (KeyError, ValueError):
        raise KeystoreError(f"{path} has no address field; decrypt it to learn the address") from None


def load_account(path: str | Path, passphrase: str):
    """The eth-account LocalAccount sealed at path. Its repr shows no key."""
    from eth_account import Account

    path = Path(path)
    account = Account.from_key(_decrypt(_read_json(path), passphrase, path))
    data = _read_json(path)
    recorded = str(data.get("address", "")).lower().removeprefix("0x")
    if recorded and recorded != account.address.lower()[2:]:
        raise KeystoreError(f"{path}: the address field does not match the sealed key")
    return account


def load_node_account(chain_cfg: Mapping[str, Any], data_dir: str | Path, env: Mapping[str, str] | None = None):
    """The node's LocalAccount from [chain] keystore and its passphrase."""
    return load_account(keystore_path(chain_cfg, data_dir), read_passphrase(chain_cfg, env))
