"""Sign-In with Ethereum (EIP-4361): parse, print and verify SIWE messages.

Written here rather than taken from PyPI: the `siwe` (4.4.0) and `signinwithethereum`
(5.0.2) packages pin web3<8 and eth-account<0.14, so they cannot be installed beside
Hearth's web3 8, and their verifiers are synchronous (they would block the event loop
for the RPC calls smart-contract wallets need). This module needs only eth-account
(EIP-191 recovery) and eth-utils (EIP-55), and `verify` is a coroutine.

`parse_message(text)` follows the EIP's ABNF line by line:

    [ scheme "://" ] domain " wants you to sign in with your Ethereum account:" LF
    address LF                      ; 0x + 40 hex, EIP-55 checksum required
    LF
    [ statement LF ]                ; reserved / unreserved / " " (RFC 3986), no LF
    LF
    "URI: " URI LF                  ; RFC 3986 URI
    "Version: 1" LF
    "Chain ID: " 1*DIGIT LF
    "Nonce: " 8*( ALPHA / DIGIT ) LF
    "Issued At: " date-time         ; RFC 3339
    [ LF "Expiration Time: " date-time ]
    [ LF "Not Before: " date-time ]
    [ LF "Request ID: " *pchar ]
    [ LF "Resources:" *( LF "- " URI ) ]

Every failure raises a `SiweError` subclass whose `reason` is machine-readable
("malformed" for anything the grammar refuses). Deliberate strictness beyond the
ABNF: a chain id with a leading zero ("01") is refused, so one chain has one
spelling and `SiweMessage.to_text()` reproduces the parsed text byte for byte; an
empty statement (a zero-length line, which the ABNF allows) is refused since it
cannot be told from a missing one by most wallets. CR is never accepted (LF only).

`verify(...)` checks, in this order: version, domain (and the scheme when the
message has one), the URI's origin, the chain id, issued-at / expiration /
not-before with a clock skew, the signature, and last the nonce through the
caller's `nonce_check` (last, so that an unsigned or forged message cannot spend
a nonce). Refusals: malformed, wrong_domain, wrong_uri, wrong_chain, expired,
not_yet_valid, issued_in_future, bad_signature, nonce_unknown.

Signatures follow ERC-6492's order: ERC-6492 (a signature ending in the 32-byte
0x6492...6492 suffix: a counterfactual wallet, checked by a deployless validator)
-> ERC-1271 (`isValidSignature` when the address has code) -> ecrecover (EIP-191
personal_sign recovered with eth-account). The first two need a chain and are a
hook, `contract_verifier` (None by default, to be added): an async callable
`(message, text, signature_bytes) -> bool | None` answering True/False when it
decided (6492 suffix, or code at the address) and None to fall through to
ecrecover. Without the hook a 6492 signature is refused (bad_signature) and
everything else goes straight to ecrecover.

Speed (bench/bench_siwe.py, one core, parse + EOA verify of a full message with every
optional field): ~8,200/s, p50 0.117 ms, p99 0.16-0.19 ms, with coincurve (recovery
called directly, EIP-55 with pycryptodome's keccak). coincurve is not yet a declared
dependency: without it eth-keys falls back to pure-Python recovery, ~160/s (p99 7.4 ms).
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Collection, Iterable, Optional, Union

from eth_account import Account
from eth_account.messages import encode_defunct

try:  # the fast path: eth-hash's pycryptodome backend is what eth-account uses anyway
    from Crypto.Hash import keccak as _keccak_mod

    def _keccak(data: bytes) -> bytes:
        return _keccak_mod.new(data=data, digest_bits=256).digest()
except ImportError:  # pragma: no cover
    from eth_utils import keccak as _keccak

try:  # eth-keys picks coincurve itself when installed; calling it directly skips ~0.15 ms
    import coincurve as _coincurve
except ImportError:  # pragma: no cover - eth-account's pure-Python recovery (~7 ms)
    _coincurve = None

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def to_checksum_address(address: str) -> str:
    """EIP-55 mixed-case form of a 0x + 40 hex address."""
    h = address[2:].lower()
    digest = _keccak(h.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if d >= "8" else c for c, d in zip(h, digest))

__all__ = [
    "SiweError", "SiweMalformed", "SiweWrongDomain", "SiweWrongUri", "SiweWrongChain",
    "SiweExpired", "SiweNotYetValid", "SiweIssuedInFuture", "SiweBadSignature",
    "SiweNonceUnknown", "SiweMessage", "VerifiedLogin", "parse_message", "verify",
    "ERC6492_SUFFIX",
]

ERC6492_SUFFIX = bytes.fromhex("6492" * 16)


# --- errors ---------------------------------------------------------------------------


class SiweError(Exception):
    """A refused SIWE message; `reason` is machine-readable, `message` says why.

    `SiweError(reason, message)`; each subclass fixes its reason, so `SiweExpired(message)`.
    """

    reason = "malformed"

    def __init__(self, *args: str):
        if len(args) == 2:
            reason, message = args
        elif len(args) == 1:
            reason, message = type(self).reason, args[0]
        else:
            raise TypeError("SiweError(reason, message) or a subclass with (message)")
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class SiweMalformed(SiweError):
    reason = "malformed"


class SiweWrongDomain(SiweError):
    reason = "wrong_domain"


class SiweWrongUri(SiweError):
    reason = "wrong_uri"


class SiweWrongChain(SiweError):
    reason = "wrong_chain"


class SiweExpired(SiweError):
    reason = "expired"


class SiweNotYetValid(SiweError):
    reason = "not_yet_valid"


class SiweIssuedInFuture(SiweError):
    reason = "issued_in_future"


class SiweBadSignature(SiweError):
    reason = "bad_signature"


class SiweNonceUnknown(SiweError):
    reason = "nonce_unknown"


# --- RFC 3986 / RFC 3339 pieces ---------------------------------------------------------

_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT = r"%[0-9A-Fa-f]{2}"
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_DEC_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IPV4 = rf"{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}}"
_H16 = r"[0-9A-Fa-f]{1,4}"
_LS32 = rf"(?:{_H16}:{_H16}|{_IPV4})"
_IPV6 = (
    rf"(?:(?:{_H16}:){{6}}{_LS32}"
    rf"|::(?:{_H16}:){{5}}{_LS32}"
    rf"|(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}"
    rf"|(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}"
    rf"|(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}"
    rf"|(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}"
    rf"|(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}"
    rf"|(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}"
    rf"|(?:(?:{_H16}:){{0,6}}{_H16})?::)"
)
_IPVFUTURE = rf"v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+"
_IP_LITERAL = rf"\[(?:{_IPV6}|{_IPVFUTURE})\]"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_HOST = rf"(?:{_IP_LITERAL}|{_IPV4}|{_REG_NAME})"
_AUTHORITY = rf"(?:{_USERINFO}@)?{_HOST}(?::[0-9]*)?"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT = rf"{_PCHAR}*"
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*"
_PATH_ABSOLUTE = rf"/(?:{_PCHAR}+(?:/{_SEGMENT})*)?"
_PATH_ROOTLESS = rf"{_PCHAR}+(?:/{_SEGMENT})*"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_URI = (
    rf"(?P<scheme>{_SCHEME}):"
    rf"(?://(?P<authority>{_AUTHORITY}){_PATH_ABEMPTY}|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|)"
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
)
_URI_RE = re.compile(_URI)
_AUTHORITY_RE = re.compile(_AUTHORITY)
_SCHEME_RE = re.compile(_SCHEME)
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}:/?#\[\]@{_SUB_DELIMS} ]+")
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_RE = re.compile(r"0|[1-9][0-9]*")
_ADDRESS_RE = re.compile(r"0x[0-9A-Fa-f]{40}")
_DATE_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)

_PREAMBLE = " wants you to sign in with your Ethereum account:"


def is_uri(text: str) -> bool:
    """An RFC 3986 `URI` (absolute, with a scheme; fragment allowed)."""
    return _URI_RE.fullmatch(text) is not None


def parse_date_time(text: str) -> float:
    """RFC 3339 `date-time` -> POSIX seconds; raises ValueError when it is not one."""
    m = _DATE_TIME_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if h > 23 or mi > 59 or s > 60:
        raise ValueError(f"time out of range: {text!r}")
    if m.group(8):
        offset = 0
    else:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 23 or om > 59:
            raise ValueError(f"offset out of range: {text!r}")
        offset = (oh * 60 + om) * 60 * (1 if m.group(9) == "+" else -1)
    leap = s == 60  # RFC 3339 leap second: counted as the last second of the minute
    dt = datetime(y, mo, d, h, mi, 59 if leap else s, tzinfo=timezone.utc)  # ValueError on 02-30
    frac = float(m.group(7)) if m.group(7) else 0.0
    return dt.timestamp() + frac - offset


def _origin_of(scheme: str, authority: str) -> str:
    return f"{scheme.lower()}://{authority.lower()}"


# --- the message ------------------------------------------------------------------------


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    version: str = "1"
    scheme: Optional[str] = None
    statement: Optional[str] = None
    expiration_time: Optional[str] = None
    not_before: Optional[str] = None
    request_id: Optional[str] = None
    resources: Optional[tuple[str, ...]] = None
    # POSIX seconds of the three dates, filled by parse_message / validate()
    issued_at_s: float = field(default=0.0, compare=False, repr=False)
    expiration_time_s: Optional[float] = field(default=None, compare=False, repr=False)
    not_before_s: Optional[float] = field(default=None, compare=False, repr=False)

    def to_text(self) -> str:
        """The message as EIP-4361 prints it (exactly the text parse_message read)."""
        origin = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        parts = [origin, _PREAMBLE, "\n", self.address, "\n\n"]
        if self.statement is not None:
            parts += [self.statement, "\n"]
        parts += [
            "\nURI: ", self.uri, "\nVersion: ", self.version, "\nChain ID: ",
            str(self.chain_id), "\nNonce: ", self.nonce, "\nIssued At: ", self.issued_at,
        ]
        if self.expiration_time is not None:
            parts += ["\nExpiration Time: ", self.expiration_time]
        if self.not_before is not None:
            parts += ["\nNot Before: ", self.not_before]
        if self.request_id is not None:
            parts += ["\nRequest ID: ", self.request_id]
        if self.resources is not None:
            parts.append("\nResources:")
            for r in self.resources:
                parts += ["\n- ", r]
        return "".join(parts)

    @property
    def did(self) -> str:
        return f"did:pkh:eip155:{self.chain_id}:{self.address}"

    @classmethod
    def build(cls, **fields: Any) -> "SiweMessage":
        """A message from fields, checked by printing and parsing it again."""
        if fields.get("resources") is not None:
            fields["resources"] = tuple(fields["resources"])
        return parse_message(cls(**fields).to_text())


def _bad(msg: str) -> SiweMalformed:
    return SiweMalformed(msg)


def _date(text: str, what: str) -> float:
    try:
        return parse_date_time(text)
    except (ValueError, OverflowError) as e:
        raise _bad(f"{what}: {e}") from None


def parse_message(text: str) -> SiweMessage:
    """Parse an EIP-4361 message; raises SiweMalformed for anything off the grammar."""
    if not isinstance(text, str):
        raise _bad("message is not a string")
    if "\r" in text:
        raise _bad("CR in message (lines end with LF)")
    lines = text.split("\n")
    n = len(lines)
    if n < 9:
        raise _bad("message too short: missing lines")

    # line 1: [ scheme "://" ] domain " wants you to sign in with your Ethereum account:"
    head = lines[0]
    if not head.endswith(_PREAMBLE):
        raise _bad("first line is not '<domain> wants you to sign in with your Ethereum account:'")
    origin = head[: -len(_PREAMBLE)]
    scheme: Optional[str] = None
    sep = origin.find("://")
    if sep >= 0:
        scheme, domain = origin[:sep], origin[sep + 3:]
        if not _SCHEME_RE.fullmatch(scheme):
            raise _bad(f"bad scheme {scheme!r}")
    else:
        domain = origin
    if not domain or not _AUTHORITY_RE.fullmatch(domain):
        raise _bad(f"domain is not an RFC 3986 authority: {domain!r}")

    # line 2: address, EIP-55
    address = lines[1]
    if not _ADDRESS_RE.fullmatch(address):
        raise _bad(f"not an address: {address!r}")
    if to_checksum_address(address) != address:
        raise _bad(f"address fails its EIP-55 checksum: {address!r}")

    # LF [ statement LF ] LF
    if lines[2] != "":
        raise _bad("missing blank line after the address")
    i = 3
    statement: Optional[str] = None
    if lines[3] != "":
        statement = lines[3]
        if not _STATEMENT_RE.fullmatch(statement):
            raise _bad("statement has characters outside RFC 3986 reserved/unreserved/space")
        if n < 10 or lines[4] != "":
            raise _bad("missing blank line after the statement")
        i = 5
    else:
        i = 4

    def tagged(tag: str) -> str:
        nonlocal i
        if i >= n:
            raise _bad(f"missing '{tag}' line")
        line = lines[i]
        if not line.startswith(tag):
            raise _bad(f"expected '{tag}' at line {i + 1}")
        i += 1
        return line[len(tag):]

    uri = tagged("URI: ")
    if not is_uri(uri):
        raise _bad(f"URI is not an RFC 3986 URI: {uri!r}")
    version = tagged("Version: ")
    if version != "1":
        raise _bad(f"version must be 1, not {version!r}")
    chain = tagged("Chain ID: ")
    if not _CHAIN_RE.fullmatch(chain):
        raise _bad(f"bad chain id {chain!r}")
    nonce = tagged("Nonce: ")
    if not _NONCE_RE.fullmatch(nonce):
        raise _bad("nonce must be at least 8 letters or digits")
    issued_at = tagged("Issued At: ")
    issued_at_s = _date(issued_at, "Issued At")

    def optional(tag: str) -> Optional[str]:
        if i < n and lines[i].startswith(tag):
            return tagged(tag)
        return None

    expiration_time = optional("Expiration Time: ")
    expiration_s = _date(expiration_time, "Expiration Time") if expiration_time is not None else None
    not_before = optional("Not Before: ")
    not_before_s = _date(not_before, "Not Before") if not_before is not None else None
    request_id = optional("Request ID: ")
    if request_id is not None and not _REQUEST_ID_RE.fullmatch(request_id):
        raise _bad("request id has characters outside pchar")
    resources: Optional[tuple[str, ...]] = None
    if i < n and lines[i] == "Resources:":
        i += 1
        res = []
        while i < n and lines[i].startswith("- "):
            r = lines[i][2:]
            if not is_uri(r):
                raise _bad(f"resource is not an RFC 3986 URI: {r!r}")
            res.append(r)
            i += 1
        resources = tuple(res)
    if i != n:
        raise _bad(f"unexpected line {i + 1}: {lines[i][:80]!r}")

    return SiweMessage(
        domain=domain, address=address, uri=uri, chain_id=int(chain), nonce=nonce,
        issued_at=issued_at, version=version, scheme=scheme, statement=statement,
        expiration_time=expiration_time, not_before=not_before, request_id=request_id,
        resources=resources, issued_at_s=issued_at_s, expiration_time_s=expiration_s,
        not_before_s=not_before_s,
    )


# --- verification -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedLogin:
    address: str
    did: str
    chain_id: int
    message: SiweMessage
    expires_at: Optional[float]  # the message's Expiration Time (POSIX seconds), if any


NonceCheck = Callable[[str], Union[bool, Awaitable[bool]]]
ContractVerifier = Callable[[SiweMessage, str, bytes], Awaitable[Optional[bool]]]


def _signature_bytes(signature: Union[str, bytes]) -> bytes:
    if isinstance(signature, (bytes, bytearray)):
        return bytes(signature)
    if not isinstance(signature, str):
        raise SiweBadSignature("signature is not hex or bytes")
    s = signature[2:] if signature[:2] in ("0x", "0X") else signature
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise SiweBadSignature("signature is not hex") from None


def recover_address(text: str, signature: bytes) -> Optional[str]:
    """EIP-191 personal_sign recovery of `text` (what eth-account's
    `Account.recover_message(encode_defunct(text=...))` answers, and what it runs when
    coincurve is missing), lowercase; None when the signature is unusable."""
    if len(signature) != 65:
        return None
    if _coincurve is None:
        return recover_address_eth_account(text, signature)
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1) or not (0 < r < _SECP256K1_N) or not (0 < s < _SECP256K1_N):
        return None
    data = text.encode("utf-8")
    digest = _keccak(b"\x19Ethereum Signed Message:\n" + str(len(data)).encode() + data)
    try:
        pub = _coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes((v,)), digest, hasher=None)
    except Exception:  # no point for this r
        return None
    return "0x" + _keccak(pub.format(compressed=False)[1:])[-20:].hex()


def recover_address_eth_account(text: str, signature: bytes) -> Optional[str]:
    """The same recovery through eth-account (the reference; slower), lowercase."""
    if len(signature) != 65:
        return None
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature).lower()
    except Exception:  # bad v, s out of range, point not on the curve...
        return None


def _now_s(now: Union[None, float, int, datetime]) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return now.timestamp()
    return float(now)


async def verify(
    message: Union[str, SiweMessage],
    signature: Union[str, bytes],
    *,
    domains: Collection[str],
    uris: Optional[Iterable[str]] = None,
    chain_ids: Collection[int],
    now: Union[None, float, int, datetime] = None,
    skew_s: float = 60.0,
    nonce_check: NonceCheck,
    schemes: Collection[str] = ("https",),
    contract_verifier: Optional[ContractVerifier] = None,
) -> VerifiedLogin:
    """Verify a signed SIWE message; return the login or raise a SiweError.

    domains: the authorities (host[:port]) this node serves; compared case-insensitively.
    uris: allowed origins ("https://host[:port]") for the URI line; None = the URI's
      origin must be <scheme>://<the message's domain> with a scheme in `schemes`.
    schemes: the schemes allowed in the message's optional scheme (and, when `uris` is
      None, in its URI).
    chain_ids: the chains a login may name.
    now, skew_s: the clock (POSIX seconds or aware datetime; default time.time()) and
      the tolerance applied to issued-at, expiration and not-before.
    nonce_check: called last with the nonce, sync or async; True when the nonce was
      issued and is now spent (the callback owns single use), else nonce_unknown.
    contract_verifier: the ERC-6492 / ERC-1271 hook (see the module docstring).
    """
    if isinstance(message, SiweMessage):
        msg = message
        text = msg.to_text()
        msg = parse_message(text)  # a hand-built message is checked like a received one
    else:
        text = message
        msg = parse_message(text)

    if msg.version != "1":
        raise SiweMalformed(f"version {msg.version!r}")
    allowed_domains = {d.lower() for d in domains}
    if msg.domain.lower() not in allowed_domains:
        raise SiweWrongDomain(f"domain {msg.domain!r} is not one this node serves")
    allowed_schemes = {s.lower() for s in schemes}
    if msg.scheme is not None and msg.scheme.lower() not in allowed_schemes:
        raise SiweWrongDomain(f"scheme {msg.scheme!r} is not allowed")
    m = _URI_RE.fullmatch(msg.uri)
    authority = m.group("authority") if m else None
    if authority is None:
        raise SiweWrongUri(f"URI {msg.uri!r} has no origin")
    uri_origin = _origin_of(m.group("scheme"), authority)
    if uris is not None:
        allowed_uris = {u.lower().rstrip("/") for u in uris}
        if uri_origin not in allowed_uris:
            raise SiweWrongUri(f"URI origin {uri_origin!r} is not allowed")
    else:
        if m.group("scheme").lower() not in allowed_schemes or authority.lower() != msg.domain.lower():
            raise SiweWrongUri(f"URI origin {uri_origin!r} does not match the domain")
    if msg.chain_id not in chain_ids:
        raise SiweWrongChain(f"chain id {msg.chain_id} is not accepted")

    t = _now_s(now)
    if msg.expiration_time_s is not None and t - skew_s >= msg.expiration_time_s:
        raise SiweExpired(f"expired at {msg.expiration_time}")
    if msg.not_before_s is not None and t + skew_s < msg.not_before_s:
        raise SiweNotYetValid(f"not valid before {msg.not_before}")
    if msg.issued_at_s > t + skew_s:
        raise SiweIssuedInFuture(f"issued in the future ({msg.issued_at})")

    sig = _signature_bytes(signature)
    ok: Optional[bool] = None
    if contract_verifier is not None:
        # ERC-6492 (suffix) then ERC-1271 (code at the address): the hook decides or
        # answers None to fall through to ecrecover.
        ok = await contract_verifier(msg, text, sig)
    elif sig.endswith(ERC6492_SUFFIX):
        raise SiweBadSignature("ERC-6492 signature and no contract verifier")
    if ok is None:
        ok = recover_address(text, sig) == msg.address.lower()
    if not ok:
        raise SiweBadSignature(f"signature is not {msg.address}'s")

    known = nonce_check(msg.nonce)
    if inspect.isawaitable(known):
        known = await known
    if not known:
        raise SiweNonceUnknown("nonce unknown or already used")

    return VerifiedLogin(
        address=msg.address, did=msg.did, chain_id=msg.chain_id, message=msg,
        expires_at=msg.expiration_time_s,
    )
