"""The node's IPNS keys and publishing with them.

Keys belong to an owner: the bearer token's name that created it through the API
(`POST /api/v1/keys`), or "@node" for keys the operator makes (`hearth key gen`,
the data dir's operator.key). A token publishes only with its own keys; the
operator publishes with "@node"'s, among them `self`: the node's peer key
(gateway/peer_id.py), so `hearth name publish /ipfs/...` without --key names the
node's peer ID, as Kubo does. Private keys are sealed at rest (identity/keyring.py).

Publishing (boxo's namesys rules): the new record's sequence is the stored record's,
plus one if the value changes (0 for a first record); the record is valid for
`lifetime` seconds and says to cache it for `ttl` seconds. The sequence is read, the
record signed and stored in one transaction, so two workers publishing at once never
make two records with the same sequence. The republisher (republisher.py) signs the
stored value again, same sequence, a new EOL, once half of the lifetime has passed.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Callable

from identity.keyring import Keyring
from storage.cid import CID, InvalidCID
from storage.metadata import MetadataStore

from ..resolver import InvalidName, split_value
from . import record as records
from . import store as db
from .keys import BadKey, IpnsName, PrivateKey
from .record import NS, Record

KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_TYPES = ("ed25519", "rsa", "secp256k1", "ecdsa")


class KeyNotFound(LookupError):
    pass


class KeyExists(ValueError):
    pass


def purpose(key_id: int) -> str:
    return f"ipns-key:{key_id}"


def normalize_value(value: str) -> str:
    """A content path to publish: /ipfs/{cid}[/path] or /ipns/{name}[/path]; a bare CID
    becomes /ipfs/{cid}. ValueError with the reason otherwise."""
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ValueError("value must be a content path, /ipfs/{cid}[/path] or /ipns/{name}[/path]")
    if not value.startswith("/"):
        try:
            CID.parse(value)
        except (InvalidCID, ValueError):
            raise ValueError(f"{value[:100]!r} is neither a content path nor a CID") from None
        value = f"/ipfs/{value}"
    try:
        namespace, root, segments = split_value(value)
    except InvalidName as exc:
        raise ValueError(str(exc)) from None
    if namespace == "ipfs":
        try:
            CID.parse(root)
        except (InvalidCID, ValueError) as exc:
            raise ValueError(f"{root[:100]!r} is not a valid CID: {exc}") from None
    if any(c in value for c in "\x00\r\n"):
        raise ValueError("value may not contain control characters")
    return value


class Keystore:
    def __init__(self, store: MetadataStore, keyring: Keyring, self_seed: Callable[[], bytes], *,
                 lifetime: int = 48 * 3600, ttl: int = 300):
        self.store = store
        self.keyring = keyring
        self.self_seed = self_seed  # the node's peer key seed (gateway/peer_id.py peer_seed)
        self.lifetime = lifetime  # seconds, default of a published record's validity
        self.ttl = ttl  # seconds, default cache hint
        self.on_published: Callable[[], None] = lambda: None  # the republisher's wake(), in its process

    # --- keys -----------------------------------------------------------------------------
    def _self_key(self) -> PrivateKey:
        return PrivateKey.from_ed25519_seed(self.self_seed())

    def _ensure_self_row(self, store: MetadataStore) -> dict:
        """The row of the node's peer key (its private half stays in peer.key)."""
        row = db.get_key(store, db.NODE_OWNER, db.SELF)
        if row is None:
            public = self._self_key().public_key()
            try:
                row = db.insert_key(store, db.NODE_OWNER, db.SELF, "ed25519", str(public.name()), public.to_proto(), "")
            except ValueError:  # another process made it meanwhile
                row = db.get_key(store, db.NODE_OWNER, db.SELF)
        return row

    async def generate(self, owner: str, name: str, key_type: str = "ed25519", bits: int = 2048) -> dict:
        if not KEY_NAME.match(name or "") or name == db.SELF:
            raise ValueError("a key name is 1-64 characters of letters, digits, '.', '_', '-' (not starting with "
                             "'.', '_' or '-'), and not 'self'")
        if key_type not in KEY_TYPES:
            raise ValueError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")
        private = await asyncio.to_thread(PrivateKey.generate, key_type, bits)  # RSA takes a while
        public = private.public_key()
        store = self.store

        def insert(store: MetadataStore) -> dict:
            # the sealed blob names the row it belongs to: insert, then seal under the row's id
            with store.transaction():
                if db.get_key(store, owner, name) is not None:
                    raise KeyExists(f"a key named {name!r} already exists")
                row = db.insert_key(store, owner, name, key_type, str(public.name()), public.to_proto(), "")
                db.reseal_key(store, row["id"], self.keyring.seal(private.to_proto(), purpose(row["id"])).decode())
            return db.get_key(store, owner, name)

        return await store.run(insert, store)

    async def list(self, owner: str | None) -> list[dict]:
        """The owner's keys (every key for None), each with its published record, if any."""
        store = self.store

        def work(store: MetadataStore) -> list[dict]:
            if owner in (None, db.NODE_OWNER):
                self._ensure_self_row(store)
            out = []
            for row in db.list_keys(store, owner):
                rec = db.get_record(store, row["ipns_name"])
                out.append({**row, "record": rec})
            return out

        return await store.run(work, store)

    def _private(self, store: MetadataStore, row: dict) -> PrivateKey:
        if row["owner"] == db.NODE_OWNER and row["name"] == db.SELF:
            return self._self_key()
        secret, stale = self.keyring.unseal(row["sealed_private"], purpose(row["id"]))
        if stale:
            db.reseal_key(store, row["id"], self.keyring.seal(secret, purpose(row["id"])).decode())
        key = PrivateKey.from_proto(secret)
        if str(key.public_key().name()) != row["ipns_name"]:
            raise BadKey(f"the sealed key {row['name']!r} does not match its public key")
        return key

    # --- publishing -----------------------------------------------------------------------
    async def publish(self, owner: str, key_name: str, value: str, lifetime: int | None = None,
                      ttl: int | None = None) -> dict:
        value = normalize_value(value)
        lifetime = self.lifetime if lifetime is None else int(lifetime)
        ttl = self.ttl if ttl is None else int(ttl)
        if not 1 <= lifetime <= 10 * 365 * 86400:
            raise ValueError("lifetime must be between 1 second and 10 years")
        if not 0 <= ttl <= 10 * 365 * 86400:
            raise ValueError("ttl must be between 0 and 10 years (seconds)")
        store = self.store

        def work(store: MetadataStore) -> dict:
            if owner == db.NODE_OWNER and key_name == db.SELF:
                self._ensure_self_row(store)
            row = db.get_key(store, owner, key_name)
            if row is None:
                raise KeyNotFound(f"no key named {key_name!r}" + ("" if owner == db.NODE_OWNER else " for this token"))
            private = self._private(store, row)
            with store.transaction():  # read the sequence, sign and store as one step across processes
                current = db.get_record(store, row["ipns_name"])
                sequence = 0
                if current is not None:
                    sequence = current["sequence"] + (0 if current["value"] == value else 1)
                rec = self._sign(private, row, value, sequence, lifetime, ttl * NS)
                db._write(store, row["ipns_name"], rec, "publish")
                db.set_republish(store, row["id"], lifetime, time.time_ns() + lifetime * NS // 2)
            return published_json(row, rec)

        result = await store.run(work, store)
        self.on_published()
        return result

    def _sign(self, private: PrivateKey, row: dict, value: str, sequence: int, lifetime: int, ttl_ns: int) -> Record:
        raw = records.create(private, value, sequence, time.time_ns() + lifetime * NS, ttl_ns)
        return records.verify(raw, IpnsName.parse(row["ipns_name"]))  # never store what would not verify

    def republish_due(self, store: MetadataStore, now_ns: int | None = None) -> list[str]:
        """Sign again the records of keys whose republish time has come (on the store's
        thread): the stored value and sequence, a new EOL. Names republished."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        done = []
        for row in db.due_keys(store, now_ns):
            private = self._private(store, row)
            lifetime = row["lifetime_s"] or self.lifetime
            with store.transaction():
                current = db.get_record(store, row["ipns_name"])
                if current is None:  # nothing to keep alive
                    db.set_republish(store, row["id"], lifetime, None)
                    continue
                rec = self._sign(private, row, current["value"], current["sequence"], lifetime, current["ttl_ns"])
                db._write(store, row["ipns_name"], rec, "republish")
                db.set_republish(store, row["id"], lifetime, time.time_ns() + lifetime * NS // 2)
            done.append(row["ipns_name"])
        return done


def key_json(row: dict) -> dict:
    out = {"name": row["name"], "id": row["ipns_name"], "type": row["type"], "created_at": row["created_at"]}
    rec = row.get("record")
    if rec is not None:
        out["published"] = {"value": rec["value"], "sequence": rec["sequence"],
                            "validity": records.format_rfc3339_ns(rec["eol_ns"]), "ttl": rec["ttl_ns"] / NS}
    return out


def published_json(row: dict, rec: Record) -> dict:
    return {"name": row["ipns_name"], "key": row["name"], "value": rec.value_text, "sequence": rec.sequence,
            "validity": rec.validity.decode(), "ttl": rec.ttl_ns / NS}
