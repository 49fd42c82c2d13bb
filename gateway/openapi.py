"""The OpenAPI 3.0 document for every endpoint Hearth serves (kept equal to the
router by tests/test_ops.py, validated by openapi-spec-validator in
tests/test_openapi_strict.py).

Strict on purpose, so a schema-based fuzzer finds every answer documented:
every status each operation can send has a response with a schema (and its
Retry-After / WWW-Authenticate / Allow headers), parameters carry the
patterns, bounds and enums the node checks. A pattern never refuses a value
the node accepts: where the node's check is finer than a regular expression
(a CID's varints and multihash length), the pattern is the looser superset
and the node answers the rest with a documented 400.
"""
from __future__ import annotations

import base64
import copy

from storage.metadata import MAX_CURSOR_ID

# --- patterns --------------------------------------------------------------------------------------
# What storage/cid.py's CID.parse takes: a CIDv0 (46 base58btc characters, "Qm...") or a
# multibase CIDv1. Its decoders are case-insensitive for base32/base36/base16, skip ASCII
# whitespace in base16 and discard characters outside the alphabet in base64url, so those
# branches are as loose as the decoder.
_B58 = "1-9A-HJ-NP-Za-km-z"
_CID_BRANCHES = (
    rf"Qm[NP-Za-f][{_B58}]{{43}}",  # CIDv0: 0x1220 + 32 bytes is QmNLei78... to QmfZy5bv...
    r"[bB][A-Za-z2-7=]+",      # base32 (lower case canonical: bafy..., bafk...)
    r"[kK][0-9A-Za-z]+",       # base36
    rf"z[{_B58}]+",            # base58btc
    r"[fF][0-9A-Fa-f\s]+",     # base16
    r"m[A-Za-z0-9+/=]+",       # base64
)
CID_PATTERN = "^(" + "|".join(_CID_BRANCHES + (r"u.+",)) + ")$"            # base64url
CID_PATH_PATTERN = "^(" + "|".join(_CID_BRANCHES + (r"u[^/]+",)) + ")$"
CID_LIST_ITEM_PATTERN = "^(" + "|".join(_CID_BRANCHES + (r"u[^,]+",)) + ")$"


def _b64_digits(sets: list[str]) -> str:
    """A regex for the unpadded base64url of the digit strings whose i-th digit is in
    sets[i]. Each base64 character of a 3-digit group depends on one digit only (ASCII
    digits are 0x30-0x39), so per-digit alternations compose; runs of identical groups
    are folded into {n}."""
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def alt(options) -> str:
        options = sorted(set(options))
        if all(len(o) == 1 for o in options):
            return options[0] if len(options) == 1 else "[" + "".join(options) + "]"
        return "(?:" + "|".join(options) + ")"

    def group(g: list[str]) -> str:
        if len(g) == 3:
            return alt(b64(d + "00")[:2] for d in g[0]) + alt(b64("0" + d + "0")[2] for d in g[1]) + \
                alt(b64("00" + d)[3] for d in g[2])
        if len(g) == 2:
            return alt(b64(d + "0")[:2] for d in g[0]) + alt(b64("0" + d)[2] for d in g[1])
        return alt(b64(d)[:2] for d in g[0])

    groups = [group(sets[i:i + 3]) for i in range(0, len(sets), 3)]
    out, i = [], 0
    while i < len(groups):
        j = i
        while j < len(groups) and groups[j] == groups[i]:
            j += 1
        out.append(groups[i] if j - i == 1 else f"(?:{groups[i]}){{{j - i}}}")
        i = j
    return "".join(out)


def _cursor_pattern(max_id: int = MAX_CURSOR_ID) -> str:
    """Exactly the cursors decode_cursor takes: base64url (unpadded) of a decimal id
    in 1..max_id without leading zeros."""
    digit, lead = "0123456789", "123456789"
    top = str(max_id)
    alts = [_b64_digits([lead] + [digit] * (n - 1)) for n in range(1, len(top))]  # fewer digits than max_id
    for i in range(len(top)):  # as many digits as max_id: below it at digit i, then max_id itself
        below = "".join(d for d in (lead if i == 0 else digit) if d < top[i])
        if below:
            alts.append(_b64_digits(list(top[:i]) + [below] + [digit] * (len(top) - i - 1)))
    alts.append(_b64_digits(list(top)))
    return "^(?:" + "|".join(alts) + ")$"


CURSOR_PATTERN = _cursor_pattern()
# a raw body's file name, as clean_relpath checks it: one segment, not '.' or '..', no
# backslash, no C0/C1 control character
_NAME_CHAR = r"[^/\\\x00-\x1f\x7f-\x9f]"
FILENAME_PATTERN = rf"^((?!\.{{1,2}}$){_NAME_CHAR}+)?$"  # one segment, or "" for no name
# Python's str.isspace(): what the node refuses inside a multiaddr
_SPACE = r"\t-\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
MULTIADDR_PATTERN = rf"^(/[^/{_SPACE}]+){{2,}}$"
# a Pin origin: a multiaddr, or an http(s) URL of a trustless gateway (a superset: the node
# also wants a host and a valid port)
ORIGIN_PATTERN = rf"^((/[^/{_SPACE}]+){{2,}}|[hH][tT][tT][pP][sS]?://[^{_SPACE}]+)$"
STATUSES = ["queued", "pinning", "pinned", "failed"]

BEARER = [{"bearer": []}]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    out = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _linked(response: dict, links: dict) -> dict:
    return {**response, "links": links}


# what a created resource leads to (OpenAPI links, for stateful clients and fuzzers)
_BY_CID = {"cid": "$response.body#/cid"}
CONTENT_LINKS = {
    "GetRecord": {"operationId": "getContentRecord", "parameters": _BY_CID},
    "DeleteRecord": {"operationId": "deleteContentRecord", "parameters": _BY_CID},
    "GetContent": {"operationId": "getIpfsContent", "parameters": _BY_CID},
}
_BY_REQUESTID = {"requestid": "$response.body#/requestid"}
PIN_LINKS = {
    "GetPin": {"operationId": "getPin", "parameters": _BY_REQUESTID},
    "ReplacePin": {"operationId": "replacePin", "parameters": _BY_REQUESTID},
    "DeletePin": {"operationId": "deletePin", "parameters": _BY_REQUESTID},
}

RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
WWW_AUTH = {"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}}


def _err(desc: str, headers: dict | None = None) -> dict:
    return _json(_ref("Error"), desc, headers)


def _psa_err(desc: str, headers: dict | None = None) -> dict:
    return _json(_ref("Failure"), desc, headers)


def _server_errors(err=_err) -> dict:
    """What any operation may answer when the node itself is in trouble."""
    return {"503": err("the storage engine is unavailable, or the node has too many open connections",
                       RETRY_AFTER)}


def _engine_errors(err=_err) -> dict:
    """Operations that call the storage engine."""
    return {
        "502": err("the storage engine answered with an error", RETRY_AFTER),
        **_server_errors(err),
        "504": err("the storage engine timed out", RETRY_AFTER),
    }


def _auth_errors(err=_err) -> dict:
    return {"401": err("missing, invalid or revoked bearer token", WWW_AUTH)}


# --- parameters -------------------------------------------------------------------------------------
CID_PARAM = {"name": "cid", "in": "path", "required": True, "description": "a CIDv0 or a multibase CIDv1",
             "schema": {"type": "string", "pattern": CID_PATH_PATTERN, "example":
                        "bafkreihpmniadc5qsmax7wcwvklsnmi4go34yttcn67vtws3uizssctbz4"}}
PATH_PARAM = {"name": "path", "in": "path", "required": True, "description": "a path under the CID (no '.' or '..' segment)",
              "schema": {"type": "string"}}
REQID = {"name": "requestid", "in": "path", "required": True, "description": "a pin request's id (opaque)",
         "schema": {"type": "string", "minLength": 1}}

GATEWAY_PARAMS = [
    CID_PARAM,
    {"name": "format", "in": "query", "description": "response format: raw block or CAR ('' = as if absent)",
     "schema": {"type": "string", "enum": ["raw", "car", ""]}},
    {"name": "filename", "in": "query", "description": "name for Content-Disposition (no '/')",
     "schema": {"type": "string", "pattern": "^[^/\\x00]+$"}},
    {"name": "download", "in": "query", "description": "'true': Content-Disposition attachment; anything else: inline",
     "schema": {"type": "string"}},
    {"name": "dag-scope", "in": "query", "description": "CAR responses only (ignored otherwise)",
     "schema": {"type": "string", "enum": ["block", "entity", "all"]}},
    {"name": "entity-bytes", "in": "query", "description": "CAR responses only: from:to byte range of the entity",
     "schema": {"type": "string", "pattern": "^[^:]+:[^:]+$", "example": "0:1023"}},
    {"name": "car-version", "in": "query", "description": "CAR responses only", "schema": {"type": "string", "enum": ["1"]}},
    {"name": "car-order", "in": "query", "description": "CAR responses only", "schema": {"type": "string", "enum": ["dfs", "unk"]}},
    {"name": "car-dups", "in": "query", "description": "CAR responses only", "schema": {"type": "string", "enum": ["y", "n"]}},
    {"name": "Range", "in": "header", "description": "one range, or several (bytes=0-9,20-29) for a "
     "multipart/byteranges answer", "schema": {"type": "string", "example": "bytes=0-1023"}},
    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
    {"name": "Cache-Control", "in": "header", "description": "only-if-cached: 412 unless the root block is local",
     "schema": {"type": "string"}},
]

_IPFS_HEADERS = {
    "Etag": {"schema": {"type": "string"}},
    "X-Ipfs-Path": {"schema": {"type": "string"}},
    "X-Ipfs-Roots": {"schema": {"type": "string"}},
}
_BYTES = {"schema": {"type": "string", "format": "binary"}}
GATEWAY_RESPONSES = {
    "200": {"description": "file bytes, directory listing, raw block or CAR stream", "headers": _IPFS_HEADERS,
            "content": {"*/*": _BYTES}},
    "206": {"description": "a byte range (one range: Content-Range; several ranges of a file: "
                           "multipart/byteranges, one part per range)", "headers": _IPFS_HEADERS,
            "content": {"*/*": _BYTES}},
    "301": {"description": "directory requested without a trailing slash",
            "headers": {"Location": {"required": True, "schema": {"type": "string"}}}},
    "304": {"description": "If-None-Match matched the Etag"},
    "400": _err("invalid CID, path or parameter"),
    "404": _err("content not on this node, or no such path under it"),
    "412": _err("Cache-Control: only-if-cached and the root block is not local"),
    "416": _err("range not satisfiable"),
    "501": _err("a codec this gateway cannot render (ask for format=raw or car)"),
    **_engine_errors(),
}


NAME_PARAM = {"name": "name", "in": "path", "required": True,
              "description": "a name: an IPNS name (libp2p key, CIDv1 base36 k51...), a DNSLink domain or an ENS "
                             "name (`*.eth`)",
              "schema": {"type": "string", "minLength": 1}}
NAME_RESPONSES = {
    "404": _err("the name has no value (no valid record; an ENS name without a resolver or without a "
                "contenthash, the message says which), or the content is not on this node"),
    "422": _err("an ENS name whose contenthash points to content this node does not serve (swarm, arweave, "
                "onion...: the message names the protocol)"),
    "502": {**_err("the name system could not answer (Retry-After)"),
            "headers": {"Retry-After": {"required": True, "schema": {"type": "string"}}}},
    "503": _err("the storage engine is unavailable, ENS is not configured ([ens] rpc_url), or the node has too many "
                "open connections", RETRY_AFTER),
    "504": _err("the storage engine or the name system (DNS, the Ethereum RPC) timed out", RETRY_AFTER),
}


def _gateway_op(summary: str, extra_params: list | None = None, head: bool = False, named: bool = False) -> dict:
    responses = GATEWAY_RESPONSES
    params = GATEWAY_PARAMS
    if named:  # /ipns/{name}: a name instead of a CID, and what a name system may answer
        responses = {**responses, **{k: v for k, v in NAME_RESPONSES.items()
                                     if k not in responses or k in ("502", "503", "504")},
                     "404": NAME_RESPONSES["404"]}
        params = [NAME_PARAM] + [_ipns_format(p) for p in GATEWAY_PARAMS if p is not CID_PARAM]
        responses["301"] = {**responses["301"], "description": responses["301"]["description"] + "; or an IPNS "
                            "name not in its canonical form (a base58 peer ID, base32...): Location has CIDv1 base36"}
    if head:  # no body, same statuses and headers
        responses = {k: {kk: vv for kk, vv in v.items() if kk != "content"} for k, v in responses.items()}
    return {"summary": summary, "tags": ["gateway"], "parameters": params + (extra_params or []),
            "responses": dict(sorted(responses.items()))}


def _ipns_format(param: dict) -> dict:
    """/ipns/: format=ipns-record (or Accept: application/vnd.ipfs.ipns-record) answers the
    verified IPNS record itself (no path; 400 for a name that is not a libp2p key)."""
    if param.get("name") != "format":
        return param
    return {**param, "description": param.get("description", "") + "; ipns-record: the name's signed record",
            "schema": {**param["schema"], "enum": [*param["schema"]["enum"], "ipns-record"]}}


# --- IPNS: the Delegated Routing API and the node's keys and names ---------------------------------
IPNS_NAME_PATTERN = "^[^./]+$"  # a libp2p-key name: a CIDv1 in any multibase (k51...), or a base58 peer ID
IPNS_NAME_PARAM = {"name": "name", "in": "path", "required": True,
                   "description": "an IPNS name: a CIDv1 with the libp2p-key codec (canonical: base36 k51...), or a "
                                  "legacy base58btc peer ID",
                   "schema": {"type": "string", "pattern": IPNS_NAME_PATTERN,
                              "example": "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"}}
IPNS_RECORD_BODY = {"application/vnd.ipfs.ipns-record": {"schema": {"type": "string", "format": "binary",
                                                                    "maxLength": 10240}}}
RECORD_RULES = ("size, malformed, signature, data, public_key, v1_mismatch, validity, expired, sequence")


def _ipns_paths() -> dict:
    owner = {"name": "owner", "in": "query", "description": "operator.key only: act on this token's keys",
             "schema": {"type": "string", "minLength": 1}}
    bad_body = _err("invalid JSON, unknown field, bad key name, type, value, lifetime or ttl")
    return {
        "/routing/v1/ipns/{name}": {
            "parameters": [IPNS_NAME_PARAM],
            "get": {"summary": "The best valid IPNS record this node has for a name (Delegated Routing V1)",
                    "description": "With the Kubo engine, a name this node has no record of is asked of Kubo; "
                                   "every record is verified before it is returned.",
                    "tags": ["routing"],
                    "parameters": [{"name": "Accept", "in": "header", "required": True,
                                    "schema": {"type": "string", "example": "application/vnd.ipfs.ipns-record"}}],
                    "responses": {
                        "200": {"description": "the record; Cache-Control max-age from its TTL (60 if 0), never past "
                                               "its EOL", "headers": {"Etag": {"schema": {"type": "string"}},
                                                                      "Cache-Control": {"schema": {"type": "string"}}},
                                "content": IPNS_RECORD_BODY},
                        "304": {"description": "If-None-Match matched the Etag"},
                        "400": _err("not an IPNS name"),
                        "404": _err("no valid record for this name"),
                        "406": _err("Accept does not include application/vnd.ipfs.ipns-record"),
                        "502": _err("Kubo could not be asked", RETRY_AFTER),
                        **_server_errors()}},
            "put": {"summary": "Keep a signed IPNS record for a name (Delegated Routing V1)",
                    "description": "The record's signature is its authorization. Refused with 400 and a code naming "
                                   f"the broken rule, ipns_{{rule}} ({RECORD_RULES}); an older record never replaces "
                                   "a newer one (ipns_sequence).",
                    "tags": ["routing"],
                    "requestBody": {"required": True, "content": IPNS_RECORD_BODY},
                    "responses": {
                        "200": _json({"type": "object", "required": ["Name", "Sequence", "Outcome"], "properties": {
                            "Name": {"type": "string"}, "Sequence": {"type": "integer", "minimum": 0},
                            "Outcome": {"type": "string", "enum": ["stored", "unchanged"]}}}, "kept (or already kept)"),
                        "400": _err("not an IPNS name, or the record breaks a rule (the code names it)"),
                        "406": _err("Content-Type is not application/vnd.ipfs.ipns-record"),
                        "429": _err("too many records from this address ([ipns] put_per_minute)", RETRY_AFTER),
                        **_server_errors()}},
        },
        "/routing/v1/providers/{cid}": {
            "parameters": [CID_PARAM],
            "get": {"summary": "This node as an HTTP gateway provider of content it has (Delegated Routing V1)",
                    "tags": ["routing"],
                    "parameters": [{"name": "Accept", "in": "header", "description": "application/x-ndjson: one "
                                    "provider per line", "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the node: peer schema, its public URL, transport-ipfs-gateway-http",
                                "content": {"application/json": {"schema": _ref("Providers")},
                                            "application/x-ndjson": {"schema": {"type": "string"}}}},
                        "400": _err("invalid CID"),
                        "404": _err("the node does not have this content"),
                        **_engine_errors()}},
        },
        "/api/v1/keys": {
            "get": {"summary": "The caller's IPNS keys, with what each has published", "tags": ["names"],
                    "security": BEARER,
                    "parameters": [owner, {"name": "all", "in": "query", "description": "operator.key only: 'true' "
                                           "lists every owner's keys", "schema": {"type": "string"}}],
                    "responses": {"200": _json({"type": "object", "required": ["keys"], "properties": {
                        "keys": {"type": "array", "items": _ref("IpnsKey")}}}, "the keys"),
                        **_auth_errors(), **_server_errors()}},
            "post": {"summary": "Make an IPNS key owned by the caller", "tags": ["names"], "security": BEARER,
                     "parameters": [owner],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["name"], "additionalProperties": False, "properties": {
                             "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                             "type": {"type": "string", "enum": ["ed25519", "rsa", "secp256k1", "ecdsa"],
                                      "default": "ed25519"},
                             "size": {"type": "integer", "minimum": 2048, "maximum": 8192,
                                      "description": "RSA key size in bits"}}}}}},
                     "responses": {"201": _json(_ref("IpnsKey"), "made"), "400": bad_body, **_auth_errors(),
                                   "409": _err("the caller has a key of this name"), "413": _err("body over 64 KiB"),
                                   **_server_errors()}},
        },
        "/api/v1/names": {
            "get": {"summary": "The names the caller's keys have published", "tags": ["names"], "security": BEARER,
                    "parameters": [owner],
                    "responses": {"200": _json({"type": "object", "required": ["names"], "properties": {
                        "names": {"type": "array", "items": _ref("Published")}}}, "the names"),
                        **_auth_errors(), **_server_errors()}},
            "post": {"summary": "Publish a content path under one of the caller's keys (a new signed IPNS record)",
                     "description": "The sequence grows by one when the value changes; the record is valid for "
                                    "`lifetime` seconds ([ipns] lifetime) and republished before it expires.",
                     "tags": ["names"], "security": BEARER, "parameters": [owner],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["value"], "additionalProperties": False, "properties": {
                             "key": {"type": "string", "default": "self",
                                     "description": "a key name; self (the node's peer key) for the operator"},
                             "value": {"type": "string", "example": "/ipfs/bafkqaaa"},
                             "lifetime": {"type": "integer", "minimum": 1}, "ttl": {"type": "integer", "minimum": 0}}}}}},
                     "responses": {"200": _json(_ref("Published"), "published"), "400": bad_body, **_auth_errors(),
                                   "404": _err("the caller has no key of this name"), "413": _err("body over 64 KiB"),
                                   "500": _err("the key cannot be opened (wrong key passphrase?)"),
                                   **_server_errors()}},
        },
    }


def _psa_list_params() -> list[dict]:
    return [
        {"name": "cid", "in": "query", "style": "form", "explode": False,
         "description": "return pin objects for these CIDs (comma-separated, up to 10)",
         "schema": {"type": "array", "minItems": 1, "maxItems": 10, "uniqueItems": True,
                    "items": {"type": "string", "pattern": CID_LIST_ITEM_PATTERN}}},
        {"name": "name", "in": "query", "description": "by name (see match)",
         "schema": {"type": "string", "maxLength": 255}},
        {"name": "match", "in": "query", "schema": _ref("TextMatchingStrategy")},
        {"name": "status", "in": "query", "style": "form", "explode": False,
         "description": "comma-separated statuses; without any filter (cid, name, status, before, after, meta) "
                        "only pinned requests are listed",
         "schema": {"type": "array", "minItems": 1, "maxItems": 4, "uniqueItems": True, "items": _ref("Status")}},
        {"name": "before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}},
        {"name": "meta", "in": "query", "description": "a JSON object: pins whose meta has these key/values",
         "content": {"application/json": {"schema": _ref("PinMeta")}}},
    ]


def _schemas() -> dict:
    cid = {"type": "string", "minLength": 1, "pattern": CID_PATTERN}
    record = {"type": "object", "required": ["cid", "size", "name", "created_at", "pinned"],
              "properties": {"cid": cid, "size": {"type": "integer", "minimum": 0}, "name": {"type": "string"},
                             "created_at": {"type": "string", "format": "date-time"}, "pinned": {"type": "boolean"},
                             "removed_at": {"type": "string", "format": "date-time"}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": {"type": "string"}}}}},
        "ContentRecord": record,
        "Published": {"type": "object", "required": ["name", "key", "value", "sequence", "validity", "ttl"],
                      "properties": {"name": {"type": "string", "description": "the IPNS name (k51...)"},
                                     "key": {"type": "string"}, "value": {"type": "string"},
                                     "sequence": {"type": "integer", "minimum": 0},
                                     "validity": {"type": "string", "description": "RFC 3339 EOL"},
                                     "ttl": {"type": "number", "minimum": 0}}},
        "IpnsKey": {"type": "object", "required": ["name", "id", "type", "created_at"], "properties": {
            "name": {"type": "string"}, "id": {"type": "string", "description": "its IPNS name (k51...)"},
            "type": {"type": "string", "enum": ["ed25519", "rsa", "secp256k1", "ecdsa"]},
            "created_at": {"type": "string", "format": "date-time"}, "owner": {"type": "string"},
            "published": {"type": "object", "properties": {
                "value": {"type": "string"}, "sequence": {"type": "integer"}, "validity": {"type": "string"},
                "ttl": {"type": "number"}}}}},
        "Providers": {"type": "object", "required": ["Providers"], "properties": {"Providers": {
            "type": "array", "items": {"type": "object", "required": ["Schema", "ID"], "properties": {
                "Schema": {"type": "string"}, "ID": {"type": "string"},
                "Addrs": {"type": "array", "items": {"type": "string"}},
                "Protocols": {"type": "array", "items": {"type": "string"}}}}}}},
        "UploadResult": {"allOf": [_ref("ContentRecord"), {"type": "object", "properties": {
            "roots": {"type": "array", "items": cid, "minItems": 1, "description": "a CAR upload's roots"}}}]},
        "ContentPage": {"type": "object", "required": ["results", "next_cursor"], "properties": {
            "results": {"type": "array", "items": _ref("ContentRecord"), "maxItems": 1000},
            "next_cursor": {"type": "string", "nullable": True, "pattern": CURSOR_PATTERN}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Readiness": {"type": "object", "required": ["status", "engine", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ready", "not ready"]}, "engine": {"type": "string"},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "OperatorState": {"type": "object", "description": "engine, repo size, gc, reconciliation and scrub state",
                          "additionalProperties": True},
        # Pinning Services API v1.0.0 (its own schemas, tightened where the node is stricter)
        "Failure": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string", "description": "mandatory string identifying the type of error",
                                      "example": "BAD_REQUEST"},
                           "details": {"type": "string"}}}}},
        "Status": {"type": "string", "enum": STATUSES},
        "TextMatchingStrategy": {"type": "string", "default": "exact", "enum": ["exact", "iexact", "partial", "ipartial"]},
        "PinMeta": {"type": "object", "maxProperties": 1000, "additionalProperties": {"type": "string"}},
        "StatusInfo": {"type": "object", "maxProperties": 1000, "additionalProperties": {"type": "string"}},
        "Origins": {"type": "array", "maxItems": 20, "uniqueItems": True,
                    "items": {"type": "string", "maxLength": 1024, "pattern": ORIGIN_PATTERN}},
        "Delegates": {"type": "array", "maxItems": 20, "uniqueItems": True, "items": {"type": "string"}},
        "Pin": {"type": "object", "required": ["cid"], "properties": {
            "cid": cid, "name": {"type": "string", "maxLength": 255}, "origins": _ref("Origins"), "meta": _ref("PinMeta")}},
        "PinStatus": {"type": "object", "required": ["requestid", "status", "created", "pin", "delegates"],
                      "properties": {"requestid": {"type": "string"}, "status": _ref("Status"),
                                     "created": {"type": "string", "format": "date-time"}, "pin": _ref("Pin"),
                                     "delegates": _ref("Delegates"), "info": _ref("StatusInfo")}},
        "PinResults": {"type": "object", "required": ["count", "results"], "properties": {
            "count": {"type": "integer", "minimum": 0},
            "results": {"type": "array", "items": _ref("PinStatus"), "maxItems": 1000}}},
    }


def _content_paths() -> dict:
    record = _ref("ContentRecord")
    bool_param = {"type": "string", "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|0|1)$"}
    return {
        "/api/v1/content": {
            "post": {
                "summary": "Upload files (multipart 'file' parts, a raw body, or a CAR) and pin them",
                "description": "Multipart filenames are taken as sent (never percent-decoded; `filename*` per "
                               "RFC 5987 is decoded): a relative path, no control characters, no backslash.",
                "tags": ["content"], "security": BEARER,
                "parameters": [
                    {"name": "cid_version", "in": "query", "schema": {"type": "string", "enum": ["0", "1"], "default": "1"}},
                    {"name": "raw_leaves", "in": "query", "schema": bool_param},
                    {"name": "wrap", "in": "query", "schema": bool_param},
                    {"name": "filename", "in": "query",
                     "description": "a raw body's file name (one segment); a CAR upload's record name",
                     "schema": {"type": "string", "pattern": FILENAME_PATTERN}},
                ],
                "requestBody": {"required": False, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                                       "additionalProperties": False, "properties": {
                        "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "application/vnd.ipld.car": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "201": _linked(_json(_ref("UploadResult"), "created (a CAR upload also lists its roots)"),
                                   CONTENT_LINKS),
                    "400": _err("bad input: parameter, file name, multipart body, CAR"),
                    **_auth_errors(),
                    "413": _err("over max_upload_bytes (nothing is kept)"),
                    **_engine_errors(),
                },
            },
            "get": {
                "summary": "The caller's content records, newest first", "tags": ["content"], "security": BEARER,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}},
                    {"name": "cursor", "in": "query", "description": "next_cursor of the previous page",
                     "schema": {"type": "string", "pattern": CURSOR_PATTERN}}],
                "responses": {"200": _json(_ref("ContentPage"), "a page"), "400": _err("bad parameter or cursor"),
                              **_auth_errors(), **_server_errors()},
            },
        },
        "/api/v1/content/{cid}": {
            "parameters": [CID_PARAM],
            "get": {"summary": "One content record", "operationId": "getContentRecord", "tags": ["content"],
                    "security": BEARER,
                    "responses": {"200": _json(record, "the record"), "400": _err("invalid CID"), **_auth_errors(),
                                  "404": _err("no record for this CID"), **_server_errors()}},
            "delete": {"summary": "Unpin; the record is kept, marked removed", "operationId": "deleteContentRecord",
                       "tags": ["content"], "security": BEARER,
                       "responses": {"200": _json(record, "the removed record"), "400": _err("invalid CID"),
                                     **_auth_errors(), "404": _err("no record for this CID"), **_server_errors()}},
        },
    }


def _operator_paths() -> dict:
    auth = {**_auth_errors(), "403": _err("the token is not an operator token")}
    return {
        "/api/v1/operator/gc": {"post": {
            "summary": "Collect garbage now", "tags": ["operator"], "security": BEARER,
            "responses": {"200": _json(_ref("OperatorState"), "the gc result"), **auth, **_engine_errors()}}},
        "/api/v1/operator/repo": {"get": {
            "summary": "Repo size, blocks, pins, records, gc, reconciliation and scrub state", "tags": ["operator"],
            "security": BEARER,
            "responses": {"200": _json(_ref("OperatorState"), "the node's state"), **auth, **_engine_errors()}}},
    }


def _psa_paths() -> dict:
    pin_status = _ref("PinStatus")
    body = {"required": True, "content": {"application/json": {"schema": _ref("Pin")}}}
    bad = _psa_err("bad request: invalid JSON (at most 1 MiB, 32 levels deep, no duplicate keys, no NaN), "
                   "or an invalid Pin or parameter")
    auth = _auth_errors(_psa_err)
    too_large = _psa_err("the body is over 1 MiB")
    return {
        "/psa/pins": {
            "get": {"summary": "List pin objects", "tags": ["pinning"], "security": BEARER,
                    "description": "Newest first. When no filter is given (cid, name, status, before, after, meta), "
                                   "only successful pins are returned.",
                    "parameters": _psa_list_params(),
                    "responses": {"200": _json(_ref("PinResults"), "Successful response (PinResults object)"),
                                  "400": bad, **auth, **_server_errors(_psa_err)}},
            "post": {"summary": "Add pin object", "tags": ["pinning"], "security": BEARER, "requestBody": body,
                     "responses": {"202": _linked(_json(pin_status, "Successful response (PinStatus object)"),
                                                  PIN_LINKS), "400": bad,
                                   **auth, "413": too_large, **_server_errors(_psa_err)}},
        },
        "/psa/pins/{requestid}": {
            "parameters": [REQID],
            "get": {"summary": "Get pin object", "operationId": "getPin", "tags": ["pinning"], "security": BEARER,
                    "responses": {"200": _json(pin_status, "Successful response (PinStatus object)"), **auth,
                                  "404": _psa_err("no such pin request for this token"), **_server_errors(_psa_err)}},
            "post": {"summary": "Replace pin object", "operationId": "replacePin", "tags": ["pinning"],
                     "security": BEARER, "requestBody": body,
                     "responses": {"202": _linked(_json(pin_status, "Successful response (the new PinStatus)"),
                                                  PIN_LINKS), "400": bad,
                                   **auth, "404": _psa_err("no such pin request for this token"), "413": too_large,
                                   **_server_errors(_psa_err)}},
            "delete": {"summary": "Remove pin object", "operationId": "deletePin", "tags": ["pinning"],
                       "security": BEARER,
                       "responses": {"202": {"description": "removed (no body)"}, **auth,
                                     "404": _psa_err("no such pin request for this token"), **_server_errors(_psa_err)}},
        },
    }


def _anchor_schemas() -> dict:
    b32 = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}
    nullable_b32 = {**b32, "nullable": True}
    check = {"type": "boolean", "nullable": True, "description": "true passed, false failed, null not reached"}
    proof = {
            "type": "object", "description": "An anchor proof: checkable with nothing but an RPC URL "
                                             "(`hearth anchor verify PROOF.json --rpc URL`, or POST /api/v1/anchors/verify)",
            "required": ["format", "tree", "leaf", "root", "path", "chain_id", "genesis_hash", "contract", "tx_hash",
                         "block_number", "block_hash", "dev"],
            "properties": {
                "format": {"type": "string", "enum": ["hearth-anchor-proof/1"]},
                "tree": {"type": "string"},
                "leaf": {"type": "string", "description": "the content root's CIDv1 (its binary form is the leaf value)"},
                "root": b32, "path": {"type": "array", "items": b32, "maxItems": 256},
                "chain_id": {"type": "integer", "nullable": True}, "genesis_hash": nullable_b32,
                "contract": {"type": "string", "nullable": True, "pattern": "^0x[0-9a-fA-F]{40}$"},
                "tx_hash": nullable_b32, "block_number": {"type": "integer", "nullable": True},
                "block_hash": nullable_b32,
                "dev": {"type": "boolean", "description": "anchored on the node's ephemeral embedded dev chain"},
                "note": {"type": "string"}}}
    return {
        "AnchorProof": proof,
        "AnchorStatus": {
            "type": "object", "required": ["cid", "status", "proof"],
            "properties": {
                "cid": {"type": "string", "description": "the CIDv1 (a CIDv0 and its CIDv1 answer the same)"},
                "status": {"type": "string", "enum": ["queued", "submitted", "confirmed", "stale"]},
                "proof": {**proof, "nullable": True,
                          "description": "the AnchorProof; null while queued and not in a batch; chain fields null "
                                         "until mined"},
                "enqueued_at": {"type": "number"},
                "batch": {"type": "object", "nullable": True, "properties": {
                    "id": {"type": "integer"}, "state": {"type": "string"}, "leaves": {"type": "integer"}}},
                "chain": {"type": "object", "nullable": True, "properties": {
                    "chain_id": {"type": "integer"}, "genesis_hash": b32, "contract": {"type": "string"},
                    "dev": {"type": "boolean"}, "confirmations": {"type": "integer"},
                    "live": {"type": "boolean", "description": "false: a dev chain whose process is gone (the new "
                                                               "leader has not opened its own yet)"}}},
                "requeued": {"type": "boolean"}, "warning": {"type": "string"}}},
        "AnchorVerification": {
            "type": "object", "required": ["verified", "checks", "error"],
            "properties": {
                "verified": {"type": "boolean"},
                "checks": {"type": "object", "required": ["format", "path", "chain", "root_on_chain", "block",
                                                          "confirmations"],
                           "properties": {k: check for k in ("format", "path", "chain", "root_on_chain", "block",
                                                             "confirmations")}},
                "error": {"type": "string", "nullable": True, "description": "<check>: <reason> of the first failure"},
                "details": {"type": "object"}}},
    }


def _anchor_paths() -> dict:
    return {
        "/api/v1/anchors/{cid}": {"get": {
            "summary": "A stored CID's on-chain anchoring: status and proof", "tags": ["anchors"], "security": BEARER,
            "description": "stale: anchored on a chain that is not the node's any more (a new embedded dev chain after "
                           "a restart); the old proof is shown, never valid, and the CID is queued again.",
            "parameters": [CID_PARAM],
            "responses": {"200": _json(_ref("AnchorStatus"), "the anchoring"), "400": _err("invalid CID"),
                          **_auth_errors(), "404": _err("the CID is not stored on this node"), **_server_errors()}}},
        "/api/v1/anchors/verify": {"post": {
            "summary": "Check an anchor proof against the node's chain", "tags": ["anchors"], "security": BEARER,
            "parameters": [{"name": "min_confirmations", "in": "query", "description": "default: the node's [chain] "
                            "confirmations", "schema": {"type": "string", "pattern": "^[0-9]{1,5}$"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AnchorProof")}}},
            "responses": {"200": _json(_ref("AnchorVerification"), "the verdict, with the check that failed"),
                          "400": _err("not a JSON object, or a bad parameter"), **_auth_errors(),
                          "413": _err("the body is over 64 KiB"), **_server_errors(),
                          "503": _err("the node's chain is not open yet, or the node has too many open connections",
                                       RETRY_AFTER)}}},
    }


def _ens_paths() -> dict:
    name_param = {"name": "name", "in": "path", "required": True, "description": "an ENS name (normalized with "
                  "ENSIP-15: upper case folded, emoji kept)", "schema": {"type": "string", "example": "mysite.eth"}}
    nullable = {"type": "string", "nullable": True}
    contenthash = {"type": "object", "nullable": True, "required": ["protocol", "cid", "uri", "raw"],
                   "properties": {"protocol": {"type": "string", "example": "ipfs"}, "cid": nullable, "uri": nullable,
                                  "raw": {"type": "string", "pattern": "^0x([0-9a-f]{2})*$"}}}
    name_out = {"type": "object", "required": ["name", "normalized", "resolver", "address", "contenthash", "texts",
                                               "coins", "resolved_at", "ttl", "stale"],
                "properties": {"name": {"type": "string"}, "normalized": {"type": "string"},
                               "resolver": {"type": "string"}, "address": nullable, "contenthash": contenthash,
                               "texts": {"type": "object", "additionalProperties": nullable},
                               "coins": {"type": "object", "additionalProperties": nullable},
                               "resolved_at": {"type": "string", "format": "date-time"},
                               "ttl": {"type": "integer", "minimum": 0}, "stale": {"type": "boolean"}}}
    reverse_out = {"type": "object", "required": ["address", "name", "claimed", "forward_address", "verified"],
                   "properties": {"address": {"type": "string"}, "name": nullable, "claimed": nullable,
                                  "forward_address": nullable, "verified": {"type": "boolean"}}}
    unavailable = {"502": _err("the Ethereum RPC failed and no answer within [ens] stale_s is kept", RETRY_AFTER),
                   "503": _err("ENS is not configured ([ens] rpc_url), or the node has too many open connections",
                               RETRY_AFTER),
                   "504": _err("the Ethereum RPC timed out", RETRY_AFTER)}
    return {
        "/api/v1/ens/{name}": {"get": {
            "summary": "An ENS name's resolver, address, contenthash and text records", "tags": ["ens"],
            "security": BEARER,
            "parameters": [name_param,
                           {"name": "text", "in": "query", "description": "a text record key (repeat for several)",
                            "schema": {"type": "string"}},
                           {"name": "coin_type", "in": "query", "description": "an ENSIP-9/11 coin type (repeat for "
                            "several)", "schema": {"type": "string", "pattern": "^[0-9]{1,78}$"}}],
            "responses": {"200": _json(name_out, "the name's records (contenthash null: none set)"),
                          "400": _err("not a valid ENS name (ENSIP-15; the message says why), or a bad parameter"),
                          **_auth_errors(), "404": _err("the name has no resolver"), **unavailable}}},
        "/api/v1/ens/reverse/{address}": {"get": {
            "summary": "An address's primary ENS name, accepted only if it resolves back to the address",
            "tags": ["ens"], "security": BEARER,
            "parameters": [{"name": "address", "in": "path", "required": True,
                            "schema": {"type": "string", "example": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}}],
            "responses": {"200": _json(reverse_out, "the primary name (null when none, or when it does not resolve "
                                                    "forward to the address: `claimed` says what the reverse record "
                                                    "holds)"),
                          "400": _err("not an Ethereum address"), **_auth_errors(), **unavailable}}},
        "/api/v1/operator/ens/{name}": {"delete": {
            "summary": "Forget an ENS name's cached answer (memory and store)", "tags": ["operator"],
            "security": BEARER, "parameters": [name_param],
            "responses": {"200": _json({"type": "object", "required": ["name", "purged"], "properties": {
                "name": {"type": "string"}, "purged": {"type": "boolean"}}}, "purged (false: nothing was cached)"),
                "400": _err("not a valid ENS name"), **_auth_errors(), "403": _err("the token is not an operator token"),
                **_server_errors()}}},
    }


PARSER_400 = ("or a request the HTTP parser refuses before the app sees it (request line or a header "
              "over 8190 bytes, malformed syntax), answered in the node's Error shape whatever the path")


def _with_parser_errors(doc: dict) -> dict:
    """Any request can be refused by aiohttp's HTTP parser with a 400 before routing
    (gateway/server.py answers it as JSON, in the node's Error shape)."""
    doc = copy.deepcopy(doc)  # parts of it are module-level constants shared between operations
    error = {"$ref": "#/components/schemas/Error"}
    for item in doc["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            resp = op["responses"].get("400")
            if resp is None:
                resp = op["responses"]["400"] = {"description": PARSER_400[len("or "):]}
                if method != "head":
                    resp["content"] = {"application/json": {"schema": error}}
            else:
                resp = op["responses"]["400"] = {**resp, "description": f"{resp['description']}; {PARSER_400}"}
                if method != "head":
                    schema = resp.get("content", {}).get("application/json", {}).get("schema")
                    if schema != error:
                        schema = {"oneOf": [schema, error]} if schema else error
                    resp["content"] = {"application/json": {"schema": schema}}
            op["responses"] = dict(sorted(op["responses"].items()))
    return doc


def openapi_document() -> dict:
    return _with_parser_errors({
        "openapi": "3.0.3",
        "info": {"title": "Hearth", "version": "0.1.0",
                 "description": "Self-hosted IPFS node: upload API, IPFS path/trustless gateway, Pinning Services API. "
                                "Errors are JSON, {\"error\": {\"code\", \"message\"}} (the Pinning Services API: "
                                "{\"error\": {\"reason\", \"details\"}}). The bearer-token API (/api/v1/..., /psa/...) "
                                "answers CORS preflights and allows any origin, without credentials."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": {
                "RetryAfter": {"description": "seconds to wait before retrying", "required": True,
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                "WWWAuthenticate": {"required": True, "schema": {"type": "string"}},
            },
            "schemas": {**_schemas(), **_anchor_schemas()},
        },
        "paths": {
            "/healthz": {"get": {"summary": "Liveness", "tags": ["ops"],
                                 "responses": {"200": _json(_ref("Health"), "alive")}}},
            "/readyz": {"get": {"summary": "Readiness (database and storage engine)", "tags": ["ops"],
                                "responses": {"200": _json(_ref("Readiness"), "ready"),
                                              "503": _json(_ref("Readiness"), "not ready", RETRY_AFTER)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format 0.0.4)", "tags": ["ops"],
                                 "responses": {"200": {"description": "metrics", "content": {
                                     "text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "tags": ["ops"],
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
            **_content_paths(),
            **_operator_paths(),
            "/ipfs/": {"get": {"summary": "No CID; ?uri=ipfs://{cid}/{path} redirects to /ipfs/{cid}/{path}",
                               "tags": ["gateway"],
                               "parameters": [{"name": "uri", "in": "query", "required": True, "schema": {
                                   "type": "string", "pattern": "^([iI][pP][fF][sS]|[iI][pP][nN][sS])://.+$",
                                   "example": "ipfs://bafkqaaa/"}}],
                               "responses": {"301": {"description": "redirect for ?uri=", "headers": {
                                   "Location": {"required": True, "schema": {"type": "string"}}}},
                                   "400": _err("a CID is required, or the uri is not ipfs:// or ipns://")}}},
            "/ipns/": {"get": {"summary": "No name; ?uri=ipns://{name}/{path} redirects to /ipns/{name}/{path}",
                               "tags": ["gateway"],
                               "parameters": [{"name": "uri", "in": "query", "required": True, "schema": {
                                   "type": "string", "pattern": "^([iI][pP][fF][sS]|[iI][pP][nN][sS])://.+$",
                                   "example": "ipns://example.org/"}}],
                               "responses": {"301": {"description": "redirect for ?uri=", "headers": {
                                   "Location": {"required": True, "schema": {"type": "string"}}}},
                                   "400": _err("a name is required, or the uri is not ipfs:// or ipns://")}}},
            "/ipfs/{cid}": {"get": {**_gateway_op("Content by CID"), "operationId": "getIpfsContent"},
                            "head": _gateway_op("Headers of content by CID", head=True)},
            "/ipfs/{cid}/{path}": {"get": _gateway_op("Content by CID and path", [PATH_PARAM]),
                                   "head": _gateway_op("Headers of content by CID and path", [PATH_PARAM], head=True)},
            "/ipns/{name}": {"get": _gateway_op("Content a name points to", named=True),
                             "head": _gateway_op("Headers of content a name points to", head=True, named=True)},
            "/ipns/{name}/{path}": {"get": _gateway_op("Content a name points to, and a path under it", [PATH_PARAM],
                                                       named=True),
                                    "head": _gateway_op("Headers of content a name points to, and a path under it",
                                                        [PATH_PARAM], head=True, named=True)},
            **_psa_paths(),
            **_ipns_paths(),
            **_anchor_paths(),
            **_ens_paths(),
        },
    })
