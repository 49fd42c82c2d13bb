"""Secrets at rest: the node's private keys (its libp2p peer key, IPNS keys) are
stored sealed, never in the clear.

A sealed secret is AES-256-GCM ciphertext under a key-encryption key (KEK) derived
from the node's passphrase, with the secret's purpose (e.g. "ipns-key:blog") as
associated data, so a sealed blob moved to another slot does not open. Each blob is
a small JSON document that says how to open it:

    {"hearth_sealed": 1, "kdf": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "...",
     "aead": "AES-256-GCM", "nonce": "...", "ciphertext": "..."}

The passphrase comes from, in order:

 1. the environment variable HEARTH_KEY_PASSPHRASE;
 2. the file `[server] key_passphrase_file` (its first line; e.g. a Docker/Kubernetes
    secret or a systemd credential, outside the data dir);
 3. otherwise `<data_dir>/keystore.passphrase`, a random 256-bit passphrase the node
    writes once (mode 0600) and logs a warning about.

KDF: scrypt (N=2^15, r=8, p=1) for a passphrase the operator gives (1, 2), since it
may be a human one; HKDF-SHA256 for the generated one (3), which is already a
uniformly random 256-bit secret, so stretching it would add start-up time and no
security. A KEK is derived once per (salt, parameters) per process.

The trade-off of 3, plainly: the passphrase then sits in the same directory as the
sealed keys, so anyone who can read the whole data dir can open them. What it does
protect: a copy of the database or of `peer.key` alone (a backup, a support bundle,
a leaked volume snapshot of the store without the passphrase file) reveals no
private key. Set 1 or 2 to keep the passphrase off the data dir. Changing the
passphrase later makes existing keys unreadable (there is no re-key command yet).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .secret_file import create_secret_file

log = logging.getLogger("hearth.keyring")

ENV_PASSPHRASE = "HEARTH_KEY_PASSPHRASE"
GENERATED_FILE = "keystore.passphrase"
SCRYPT = {"n": 2**15, "r": 8, "p": 1}
MAGIC = "hearth_sealed"


class KeyringError(Exception):
    """A sealed secret that cannot be opened (wrong passphrase, damaged), or no passphrase."""


def is_sealed(blob: bytes) -> bool:
    return blob.lstrip()[:20].startswith(b'{"' + MAGIC.encode())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Keyring:
    def __init__(self, passphrase: bytes, source: str, generated: bool = False, fallback: "Keyring | None" = None):
        if not passphrase:
            raise KeyringError(f"the key passphrase from {source} is empty")
        self._passphrase = passphrase
        self.source = source  # for messages: where the passphrase came from
        self.generated = generated
        self._keks: dict[tuple, bytes] = {}
        self._lock = threading.Lock()
        self._salt = os.urandom(16)  # what this process seals with (one KEK derivation per process)
        # the generated passphrase a node used before the operator set one: what it sealed
        # still opens, and callers seal it again under the operator's passphrase (unseal)
        self._fallback = fallback

    # --- where the passphrase comes from -----------------------------------------------------
    @classmethod
    def for_data_dir(cls, data_dir: Path | str, passphrase_file: str = "", env=None) -> "Keyring":
        """The node's keyring (see the module docstring for the order); one instance per
        (data dir, source) per process, so KEKs are derived once."""
        env = os.environ if env is None else env
        data_dir = Path(data_dir)
        if env.get(ENV_PASSPHRASE):
            cache_key = (str(data_dir), "env", env[ENV_PASSPHRASE])
        elif passphrase_file:
            cache_key = (str(data_dir), "file", str(Path(passphrase_file).expanduser()))
        else:
            cache_key = (str(data_dir), "generated", "")
        with _CACHE_LOCK:
            ring = _CACHE.get(cache_key)
            if ring is None:
                ring = _CACHE[cache_key] = cls._load(data_dir, passphrase_file, env)
            return ring

    @classmethod
    def _load(cls, data_dir: Path, passphrase_file: str, env) -> "Keyring":
        generated = data_dir / GENERATED_FILE
        fallback = None
        if (env.get(ENV_PASSPHRASE) or passphrase_file) and generated.exists():
            fallback = cls(generated.read_text().strip().encode(), str(generated), generated=True)
        if env.get(ENV_PASSPHRASE):
            return cls(env[ENV_PASSPHRASE].encode(), f"${ENV_PASSPHRASE}", fallback=fallback)
        if passphrase_file:
            path = Path(passphrase_file).expanduser()
            try:
                text = path.read_text().splitlines()
            except OSError as exc:
                raise KeyringError(f"cannot read the key passphrase file {path}: {exc.strerror or exc}") from None
            return cls((text[0] if text else "").encode(), str(path), fallback=fallback)
        path = generated
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            value = create_secret_file(path)
            log.info("private keys are sealed with a generated passphrase kept in %s: anyone who can read the "
                        "data dir can open them. Set %s or [server] key_passphrase_file to keep the passphrase "
                        "elsewhere", path, ENV_PASSPHRASE)
        return cls(value.encode(), str(path), generated=True)

    # --- sealing ---------------------------------------------------------------------------------
    def _kek(self, kdf: str, salt: bytes, params: dict) -> bytes:
        cache_key = (kdf, salt, tuple(sorted(params.items())))
        with self._lock:
            kek = self._keks.get(cache_key)
            if kek is None:
                if kdf == "scrypt":
                    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
                    if not (2**10 <= n <= 2**20 and 1 <= r <= 32 and 1 <= p <= 16):
                        raise KeyringError("scrypt parameters out of range")
                    kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(self._passphrase)
                elif kdf == "hkdf-sha256":
                    kek = HKDF(hashes.SHA256(), 32, salt, b"hearth keyring v1").derive(self._passphrase)
                else:
                    raise KeyringError(f"unknown key derivation {kdf!r}")
                self._keks[cache_key] = kek
            return kek

    def seal(self, secret: bytes, purpose: str) -> bytes:
        kdf, params = ("hkdf-sha256", {}) if self.generated else ("scrypt", dict(SCRYPT))
        nonce = os.urandom(12)
        ciphertext = AESGCM(self._kek(kdf, self._salt, params)).encrypt(nonce, secret, purpose.encode())
        doc = {MAGIC: 1, "kdf": kdf, **params, "salt": _b64(self._salt), "aead": "AES-256-GCM",
               "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        return json.dumps(doc, separators=(", ", ": ")).encode()

    def open(self, blob: bytes | str, purpose: str) -> bytes:
        return self.unseal(blob, purpose)[0]

    def unseal(self, blob: bytes | str, purpose: str) -> tuple[bytes, bool]:
        """(secret, stale): stale when it opened only with the generated passphrase the
        node used before the operator set one; the caller should seal it again."""
        try:
            return self._open(blob, purpose), False
        except KeyringError:
            if self._fallback is None:
                raise
            try:
                return self._fallback._open(blob, purpose), True
            except KeyringError:
                pass
            raise

    def _open(self, blob: bytes | str, purpose: str) -> bytes:
        try:
            doc = json.loads(blob)
            if doc.get(MAGIC) != 1 or doc.get("aead") != "AES-256-GCM":
                raise ValueError("not a sealed secret of a known version")
            params = {k: doc[k] for k in ("n", "r", "p")} if doc["kdf"] == "scrypt" else {}
            salt, nonce, ciphertext = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "ciphertext"))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyringError(f"the sealed {purpose} is damaged: {exc}") from None
        try:
            return AESGCM(self._kek(doc["kdf"], salt, params)).decrypt(nonce, ciphertext, purpose.encode())
        except InvalidTag:
            raise KeyringError(f"cannot open the sealed {purpose}: wrong passphrase (from {self.source}) "
                               "or damaged data") from None


_CACHE: dict[tuple, Keyring] = {}
_CACHE_LOCK = threading.Lock()


def keyring_for(config) -> Keyring:
    """The keyring of a gateway Config."""
    return Keyring.for_data_dir(config.data_dir, config["server"].get("key_passphrase_file", ""))


def write_sealed_file(path: Path, blob: bytes, replace: bool) -> bool:
    """Write a sealed blob (mode 0600) atomically. replace=False: never over an existing
    file (returns False if one appeared meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    finally:
        if tmp.exists():
            tmp.unlink()
