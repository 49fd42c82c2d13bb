"""EIP-3668 CCIP-read, performed by Hearth itself through the guarded outbound client.

A contract that needs offchain data reverts with

    error OffchainLookup(address sender, string[] urls, bytes callData,
                         bytes4 callbackFunction, bytes extraData)    // selector 0x556f1830

and the client asks a gateway at one of `urls`, then calls `callbackFunction(response,
extraData)` on `sender`, which may revert with OffchainLookup again. The URLs are chosen by
whoever deployed the contract, i.e. by anyone who owns a name: fetched naively they make the
node an SSRF proxy into its own network. web3's own CCIP-read refuses http and loopback with no
setting (so it cannot be tested locally) and uses its own HTTP stack; Hearth does the lookups
itself with `outbound.GuardedClient`: https only, no loopback/private/link-local/multicast/
reserved address (checked on every address a name resolves to, and the connector dials only
those: no DNS rebinding), redirects bounded and each hop checked again, a deadline and a size cap
on every gateway answer, at most `max_depth` lookups per call.

The client follows the EIP: the revert's `sender` must be the contract that was called (a
lookup bubbled up from a nested call is refused); URLs are tried in order, `{sender}` and
`{data}` substituted (lower-case 0x hex); GET when the URL holds `{data}`, else POST of JSON
`{"data", "sender"}`; a 2xx answer is JSON `{"data": "0x..."}`; a 4xx stops the lookup (the
gateway's `message` reported); a 5xx, a network error, a refused target or a malformed answer
moves on to the next URL.

    result = await ccip_call(w3, to, data, client)          # AsyncWeb3; eth_call + lookups
    result = await offchain_lookup(call, sender, urls, call_data, callback, extra_data, client)

Settings (the `[ens]` section; the `[outbound]` keys widen too):
    ccip_allow_http, ccip_allow_private   false: widen the guard for CCIP-read only (tests)
    ccip_timeout                          10 s per gateway request (never above [outbound] timeout)
    ccip_max_response_bytes               1 MiB per gateway answer (never above [outbound]'s)
    ccip_max_depth                        4 lookups per call
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

from outbound import GuardedClient, OutboundError, OutboundRefused

log = logging.getLogger("hearth.ccip")

OFFCHAIN_LOOKUP_SELECTOR = bytes.fromhex("556f1830")
DEFAULT_MAX_DEPTH = 4
MAX_URLS = 8                       # gateways tried per lookup, at most
CCIP_DEFAULTS: dict[str, Any] = {"ccip_allow_http": False, "ccip_allow_private": False, "ccip_timeout": 10,
                                 "ccip_max_response_bytes": 1024 * 1024, "ccip_max_depth": DEFAULT_MAX_DEPTH}
_HEX = re.compile(r"^0x([0-9a-fA-F]{2})*$")

Call = Callable[[str, bytes], Awaitable[bytes]]


# --- errors ------------------------------------------------------------------------------------------
class CcipReadError(Exception):
    """An offchain lookup failed; the message says why."""


class CcipSenderMismatch(CcipReadError):
    """The OffchainLookup's sender is not the contract that was called (a nested call's lookup)."""


class CcipGatewayError(CcipReadError):
    """A gateway answered 4xx: the lookup stops there (EIP-3668)."""

    def __init__(self, message: str, url: str, status: int):
        super().__init__(message)
        self.url, self.status = url, status


class CcipGatewaysFailed(CcipReadError):
    """No gateway gave an answer: each URL's reason (refused, 5xx, unreachable...) is in `failures`."""

    def __init__(self, message: str, failures: list[tuple[str, str]]):
        super().__init__(message)
        self.failures = failures


class CcipTooDeep(CcipReadError):
    """More than max_depth lookups for one call."""


class ContractReverted(Exception):
    """What a `call` function may raise on a revert: the raw revert data."""

    def __init__(self, data: bytes, message: str = "execution reverted"):
        super().__init__(message)
        self.data = bytes(data)


# --- decoding ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OffchainLookup:
    sender: str                 # 0x-prefixed, lower case
    urls: tuple[str, ...]
    call_data: bytes
    callback: bytes             # 4-byte selector
    extra_data: bytes


def decode_offchain_lookup(revert_data: bytes | str) -> OffchainLookup | None:
    """The OffchainLookup in raw revert data (bytes or 0x hex), None if the revert is something
    else; CcipReadError if it has the selector but does not decode."""
    from eth_abi import decode

    data = _to_bytes(revert_data)
    if data[:4] != OFFCHAIN_LOOKUP_SELECTOR:
        return None
    try:
        sender, urls, call_data, callback, extra = decode(["address", "string[]", "bytes", "bytes4", "bytes"],
                                                          data[4:])
    except Exception as exc:  # eth_abi raises several kinds
        raise CcipReadError(f"malformed OffchainLookup revert: {exc}") from None
    return OffchainLookup(str(sender).lower(), tuple(urls), bytes(call_data), bytes(callback), bytes(extra))


def lookup_from_error(exc: BaseException) -> OffchainLookup | None:
    """The OffchainLookup an eth_call error carries: web3's `OffchainLookup` exception (raised
    when CCIP-read is disabled on the call; `.payload` decoded, `.data` raw), any web3
    `ContractLogicError` or ContractReverted with revert data, or None."""
    payload = getattr(exc, "payload", None)
    if isinstance(payload, Mapping) and "callbackFunction" in payload:
        return OffchainLookup(str(payload["sender"]).lower(), tuple(payload["urls"]), bytes(payload["callData"]),
                              bytes(payload["callbackFunction"]), bytes(payload["extraData"]))
    data = getattr(exc, "data", None)
    if isinstance(data, (bytes, bytearray)) or (isinstance(data, str) and data.startswith("0x")):
        try:
            return decode_offchain_lookup(data)
        except ValueError:
            return None
    return None


def _to_bytes(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value)
    return bytes(value)


def _addr(value: str | bytes) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return str(value).lower()


def callback_data(callback: bytes, response: bytes, extra_data: bytes) -> bytes:
    """callbackFunction(bytes response, bytes extraData) calldata."""
    from eth_abi import encode

    return bytes(callback) + encode(["bytes", "bytes"], [bytes(response), bytes(extra_data)])


# --- the gateway request -------------------------------------------------------------------------------
async def gateway_request(client: GuardedClient, sender: str, urls: Sequence[str], call_data: bytes) -> bytes:
    """Ask the gateways in order; the first good answer's bytes. 4xx -> CcipGatewayError at once;
    everything else that fails moves on; none left -> CcipGatewaysFailed listing each reason."""
    sender_hex = _addr(sender)
    data_hex = "0x" + bytes(call_data).hex()
    failures: list[tuple[str, str]] = []
    if not urls:
        raise CcipGatewaysFailed("OffchainLookup names no gateway URL", failures)
    for template in list(urls)[:MAX_URLS]:
        template = str(template)
        url = template.replace("{sender}", sender_hex).replace("{data}", data_hex)
        shown = template[:200]
        try:
            if "{data}" in template:
                resp = await client.get(url, headers={"Accept": "application/json"})
            else:
                body = json.dumps({"data": data_hex, "sender": sender_hex}).encode()
                resp = await client.post(url, body, headers={"Accept": "application/json"})
        except OutboundRefused as exc:
            log.info("ccip-read: gateway %s refused: %s", shown, exc)
            failures.append((shown, f"refused: {exc}"))
            continue
        except OutboundError as exc:
            log.info("ccip-read: gateway %s failed: %s", shown, exc)
            failures.append((shown, f"{exc.__class__.__name__}: {exc}"))
            continue
        if 400 <= resp.status <= 499:
            message = _json_field(resp.body, "message") or resp.body[:200].decode("utf-8", "replace")
            raise CcipGatewayError(f"gateway {shown} answered {resp.status}: {message}", shown, resp.status)
        if not 200 <= resp.status <= 299:
            failures.append((shown, f"HTTP {resp.status}"))
            continue
        data = _json_field(resp.body, "data")
        if not isinstance(data, str) or not _HEX.match(data):
            failures.append((shown, "malformed answer: not JSON {\"data\": \"0x...\"}"))
            continue
        return bytes.fromhex(data[2:])
    reasons = "; ".join(f"{u}: {why}" for u, why in failures)
    raise CcipGatewaysFailed(f"no CCIP-read gateway answered ({reasons})", failures)


def _json_field(body: bytes, key: str):
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return doc.get(key) if isinstance(doc, dict) else None


# --- the lookup loop ---------------------------------------------------------------------------------------
async def offchain_lookup(call: Call, sender: str, urls: Sequence[str], call_data: bytes, callback: bytes,
                          extra_data: bytes, client: GuardedClient, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Complete an OffchainLookup raised by the contract `sender` (the caller has checked that it
    is the contract it called): gateway, then `callback(response, extraData)` on `sender` by
    `call(to, data) -> bytes`, again while the callback reverts with OffchainLookup, at most
    max_depth lookups in all. `call` raises on a revert; the error's OffchainLookup is read with
    lookup_from_error (web3's exceptions and ContractReverted)."""
    target = _addr(sender)
    lookup = OffchainLookup(target, tuple(urls), bytes(call_data), bytes(callback), bytes(extra_data))
    for _ in range(max(1, int(max_depth))):
        if lookup.sender != target:
            raise CcipSenderMismatch(f"OffchainLookup sender {lookup.sender} is not the called contract {target}")
        response = await gateway_request(client, lookup.sender, lookup.urls, lookup.call_data)
        try:
            return await call(target, callback_data(lookup.callback, response, lookup.extra_data))
        except Exception as exc:
            nxt = lookup_from_error(exc)
            if nxt is None:
                raise
            lookup = nxt
    raise CcipTooDeep(f"more than {max_depth} offchain lookups for one call to {target}")


def web3_call(w3) -> Call:
    """call(to, data) -> bytes over an AsyncWeb3, with web3's own CCIP-read off."""
    async def call(to: str, data: bytes) -> bytes:
        from eth_utils import to_checksum_address

        out = await w3.eth.call({"to": to_checksum_address(to), "data": "0x" + bytes(data).hex()},
                                ccip_read_enabled=False)
        return bytes(out)
    return call


async def ccip_call(w3, to: str, data: bytes, client: GuardedClient, max_depth: int = DEFAULT_MAX_DEPTH,
                    call: Call | None = None) -> bytes:
    """eth_call `data` on `to` (web3's CCIP-read disabled); an OffchainLookup revert is followed
    through the guarded client. Other reverts propagate as web3 raised them."""
    call = call or web3_call(w3)
    target = _addr(to)
    try:
        return await call(target, data)
    except Exception as exc:
        lookup = lookup_from_error(exc)
        if lookup is None:
            raise
    if lookup.sender != target:
        raise CcipSenderMismatch(f"OffchainLookup sender {lookup.sender} is not the called contract {target} "
                                 "(a lookup from a nested call is refused, EIP-3668)")
    return await offchain_lookup(call, lookup.sender, lookup.urls, lookup.call_data, lookup.callback,
                                 lookup.extra_data, client, max_depth)


# --- settings -------------------------------------------------------------------------------------------------
def ccip_settings(ens: Mapping | None = None) -> dict[str, Any]:
    out = dict(CCIP_DEFAULTS)
    for key in CCIP_DEFAULTS:
        if ens and ens.get(key) is not None:
            out[key] = ens[key]
    return out


def ccip_client(outbound: Mapping | None = None, ens: Mapping | None = None, resolver=None) -> GuardedClient:
    """The guarded client for CCIP-read gateways: `[outbound]` as for every outbound request,
    widened only by `[outbound] allow_http/allow_private` or `[ens] ccip_allow_http/
    ccip_allow_private`, with CCIP's own (smaller) time and size limits."""
    outbound = outbound or {}
    s = ccip_settings(ens)
    base = GuardedClient.from_settings(outbound)
    return GuardedClient(allow_http=base.allow_http or bool(s["ccip_allow_http"]),
                         allow_private=base.allow_private or bool(s["ccip_allow_private"]),
                         timeout=min(base.timeout, float(s["ccip_timeout"])),
                         max_response_bytes=min(base.max_response_bytes, int(s["ccip_max_response_bytes"])),
                         resolver=resolver)
