"""Configuration: config.toml, overridden by HEARTH_<SECTION>_<KEY> variables."""
from __future__ import annotations

import copy
import ipaddress
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {"host": "127.0.0.1", "port": 8787, "data_dir": "~/.hearth", "log_level": "info", "public_url": "",
               "header_timeout": 10, "body_idle_timeout": 30, "keepalive_timeout": 15, "max_connections": 1000, "workers": 0,
               "event_loop": "uvloop",
               # the passphrase that seals private keys at rest (identity/keyring.py): $HEARTH_KEY_PASSPHRASE,
               # else this file's first line, else a generated <data_dir>/keystore.passphrase
               "key_passphrase_file": ""},
    "storage": {"engine": "embedded", "kubo_api": "http://127.0.0.1:5001", "kubo_timeout": 60,
                "kubo_gateway": "", "max_upload_bytes": 10 * 1024**3, "max_concurrent_uploads": 128,
                "max_bytes": 10_000_000_000, "gc_watermark": 90, "gc_period": 3600, "fetch_gateways": [],
                "verify_on_read": "never", "scrub_rate": 8 * 1024**2},
    "gateway": {"serve": "local", "retrieval_timeout": 30, "cache_bytes": 64 * 1024**2, "cache_max_item": 1024**2,
                # origins (gateway/origins.py): public gateway domains, as Kubo's Gateway.PublicGateways
                # (`localhost` built in, with subdomains), Kubo's Gateway.DeserializedResponses and
                # !NoDNSLink, and the CSP sandbox of the path gateway
                "domains": {}, "deserialized_responses": True, "dnslink_hosts": True, "sandbox_path_gateway": True},
    "outbound": {"allow_http": False, "allow_private": False, "timeout": 30, "max_response_bytes": 10 * 1024**2},
    "auth": {"anonymous_uploads": False},
    "pinning": {"workers": 4, "pin_timeout": 600},
    # IPNS (naming/ipns/): defaults of published records (seconds), how often the leader looks for
    # records to sign again, and PUT /routing/v1/ipns records accepted per minute per client address
    "ipns": {"lifetime": 48 * 3600, "ttl": 300, "republish_poll": 60, "put_per_minute": 60},
    # DNSLink (naming/dnslink.py): per-suffix DNS servers as Kubo's DNS.Resolvers, a static
    # map for air-gapped nodes, TTL bounds (seconds) and the per-query timeout
    "dns": {"resolvers": {}, "static": {}, "min_ttl": 10, "max_ttl": 3600, "negative_ttl": 10, "timeout": 5},
    # on-chain anchoring (chain/, README "Anchoring"): RPC URL(s) tried in order, or the in-process
    # ephemeral dev chain; expected chain id (0 = the RPC's); the Anchor contract ("" = deploy it,
    # embedded chain only); the node's keystore v3 file ("" = <data_dir>/chain/key.json) and its
    # passphrase file ($HEARTH_CHAIN_PASSPHRASE first); confirmations awaited (0 on embedded);
    # batches; the EIP-1559 max fee cap; seconds per RPC request
    # ENS (naming/ens.py): Ethereum JSON-RPC URL(s) ("" = ENS off: .eth names answer 503), the ENS
    # registry and Universal Resolver ("" = mainnet's, web3's), how long an answer is kept (seconds)
    # and how long past that the last good one is served while the RPC fails
    "ens": {"rpc_url": "", "registry": "", "universal_resolver": "", "cache_ttl_s": 300, "stale_s": 3600,
            "rpc_timeout": 10,
            # CCIP-read (naming/ccip_read.py): the guard is https-only, public addresses only; these
            # widen it for ENS gateways alone (tests, a private gateway), and bound time, size, depth
            "ccip_allow_http": False, "ccip_allow_private": False, "ccip_timeout": 10,
            "ccip_max_response_bytes": 1024**2, "ccip_max_depth": 4},
    "chain": {"rpc_url": "embedded", "chain_id": 0, "anchor_contract": "", "keystore": "", "passphrase_file": "",
              "confirmations": 2, "batch_max": 65536, "batch_interval_s": 60, "max_fee_gwei": 100,
              "rpc_timeout": 10},
}

CHOICES = {("server", "event_loop"): {"uvloop", "asyncio"}, ("storage", "engine"): {"embedded", "kubo"}, ("gateway", "serve"): {"local", "network"},
           ("storage", "verify_on_read"): {"never", "always"},
           ("server", "log_level"): {"debug", "info", "warning", "error"}}


# integer keys with a range beyond "not negative"
BOUNDS = {("storage", "gc_watermark"): (1, 100), ("server", "port"): (0, 65535),
          ("server", "max_connections"): (1, None), ("storage", "max_concurrent_uploads"): (1, None),
          ("server", "header_timeout"): (1, None), ("server", "body_idle_timeout"): (1, None),
          ("dns", "timeout"): (1, None), ("ipns", "lifetime"): (1, 10 * 365 * 86400),
          ("ipns", "ttl"): (0, 10 * 365 * 86400), ("ipns", "republish_poll"): (1, None),
          ("ipns", "put_per_minute"): (1, None),
          ("chain", "confirmations"): (0, 10_000), ("chain", "batch_max"): (1, 1 << 20),
          ("chain", "batch_interval_s"): (1, None), ("chain", "max_fee_gwei"): (1, None),
          ("chain", "rpc_timeout"): (1, 600)}


class ConfigError(ValueError):
    pass


def _dns_table(which: str):
    def validate(value: Any) -> dict[str, str]:
        from naming.dnslink import config_resolvers, config_static

        return (config_resolvers if which == "resolvers" else config_static)(value)
    return validate


# `[gateway.domains."NAME"]`: the keys of one public gateway domain and their defaults (Kubo's
# Gateway.PublicGateways: Paths, UseSubdomains, InlineDNSLink, DeserializedResponses; None = the
# `[gateway] deserialized_responses` value). `localhost` is always there, with subdomains on, as
# Kubo's implicit default; a table naming it replaces it.
DOMAIN_KEYS: dict[str, Any] = {"paths": ["/ipfs", "/ipns"], "use_subdomains": False, "inline_dnslink": False,
                               "deserialized_responses": None}
DEFAULT_DOMAINS = {"localhost": dict(DOMAIN_KEYS, use_subdomains=True)}
DOMAIN_PATHS = ("/ipfs", "/ipns")
DEFAULTS["gateway"]["domains"] = copy.deepcopy(DEFAULT_DOMAINS)


def gateway_domains(value: Any) -> dict[str, dict[str, Any]]:
    """Validate `[gateway] domains` (TOML: `[gateway.domains."example.org"]` tables; from the
    environment, HEARTH_GATEWAY_DOMAINS: a JSON object of the same shape). The result always
    holds the built-in `localhost` entry unless the value names `localhost` itself."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text else {}
        except ValueError:
            raise ValueError('from the environment: a JSON object like {"example.org": {"use_subdomains": true}}, '
                             f"got {text[:100]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f'must be a table of domains ([gateway.domains."example.org"] ...), got {value!r:.200}')
    out = copy.deepcopy(DEFAULT_DOMAINS)
    for name, entry in value.items():
        domain = name.strip().lower() if isinstance(name, str) else ""
        where = f'[gateway.domains."{name}"]'
        if not _domain_name_ok(domain):
            raise ValueError(f"{where}: {name!r} is not a domain name (letters, digits and hyphens in dot-separated "
                             "labels of at most 63; no port, no scheme, no wildcard)")
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a table of {', '.join(DOMAIN_KEYS)}, got {entry!r:.100}")
        spec = copy.deepcopy(DOMAIN_KEYS)
        for key, item in entry.items():
            if key not in DOMAIN_KEYS:
                raise ValueError(f"{where}: unknown key {key!r} (known: {', '.join(DOMAIN_KEYS)})")
            if key == "paths":
                if not isinstance(item, list) or not all(isinstance(p, str) for p in item):
                    raise ValueError(f"{where} paths must be a list of path prefixes, got {item!r:.100}")
                paths = [p.rstrip("/") for p in item]
                bad = [p for p in paths if p not in DOMAIN_PATHS]
                if bad:
                    raise ValueError(f"{where} paths: {bad[0]!r} is not one of {list(DOMAIN_PATHS)}")
                item = sorted(set(paths), key=paths.index)
            elif not isinstance(item, bool):
                raise ValueError(f"{where} {key} must be true or false, got {item!r:.100}")
            spec[key] = item
        if spec["use_subdomains"] and _is_ip(domain):
            raise ValueError(f"{where}: use_subdomains needs a domain name, not an IP address")
        out[domain] = spec
    return out


def _domain_name_ok(name: str) -> bool:
    if not name or len(name) > 253:
        return False
    return all(0 < len(label) <= 63 and label.isascii() and all(c.isalnum() or c == "-" for c in label)
               and not label.startswith("-") and not label.endswith("-") for label in name.split("."))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def chain_rpc_urls(value: Any) -> str | list[str]:
    """`[chain] rpc_url`: one URL or a list (tried in order on failure), or "embedded" alone.
    From the environment: comma-separated, or a JSON list. One URL stays a string, several are
    a list (chain.provider.rpc_urls reads both)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(f"not a JSON list: {text[:100]!r}") from None
        else:
            value = [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f'must be "embedded", an http(s) URL or a list of them, got {value!r:.200}')
    urls = [v.strip() for v in value]
    if "embedded" in urls:
        if len(urls) > 1:
            raise ValueError('"embedded" (the in-process dev chain) cannot be listed with RPC URLs')
        return "embedded"
    for url in urls:
        if not url.lower().startswith(("http://", "https://")) or len(url) < 10:
            raise ValueError(f"{url[:200]!r} is not an http(s) RPC URL")
    return urls[0] if len(urls) == 1 else urls


def ens_rpc_urls(value: Any) -> str | list[str]:
    """`[ens] rpc_url`: "" (ENS off), one http(s) URL or a list (tried in order on failure)."""
    if value == "" or value == []:
        return ""
    urls = chain_rpc_urls(value)
    if urls == "embedded":
        raise ValueError("ENS needs a real chain's RPC URL (ENS lives on Ethereum mainnet), not the embedded one")
    return urls


def chain_address(value: Any) -> str:
    """`[chain] anchor_contract`: "" or a 0x-prefixed 20-byte hex address."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r:.100}")
    text = value.strip()
    if text and (len(text) != 42 or text[:2] != "0x" or any(c not in "0123456789abcdefABCDEF" for c in text[2:])):
        raise ValueError(f"{text[:100]!r} is not an address (0x and 40 hex digits)")
    return text


# keys whose values are tables, each with its own validator (ValueError -> ConfigError)
TABLES = {("dns", "resolvers"): _dns_table("resolvers"), ("dns", "static"): _dns_table("static"),
          ("gateway", "domains"): gateway_domains, ("chain", "rpc_url"): chain_rpc_urls,
          ("chain", "anchor_contract"): chain_address, ("ens", "rpc_url"): ens_rpc_urls,
          ("ens", "registry"): chain_address, ("ens", "universal_resolver"): chain_address}


def _coerce(section: str, key: str, value: Any, like: Any) -> Any:
    name = f"[{section}] {key}"
    if (section, key) in TABLES:
        try:
            return TABLES[(section, key)](value)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if isinstance(like, list):
        if isinstance(value, str):  # from the environment: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        return list(value)
    if isinstance(like, int):
        try:
            out = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if out < 0:
            raise ConfigError(f"{name} must not be negative")
        low, high = BOUNDS.get((section, key), (0, None))
        if out < low or (high is not None and out > high):
            raise ConfigError(f"{name} must be between {low} and {high if high is not None else 'any'}, got {out}")
        return out
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    allowed = CHOICES.get((section, key))
    if allowed and value not in allowed:
        raise ConfigError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
    return value


@dataclass
class Config:
    values: dict[str, dict[str, Any]]
    source: Path | None = None

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]

    @property
    def data_dir(self) -> Path:
        return Path(os.path.expanduser(self.values["server"]["data_dir"])).resolve()

    def set(self, section: str, key: str, value: Any) -> None:
        self.values[section][key] = _coerce(section, key, value, DEFAULTS[section][key])


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults < config file < HEARTH_<SECTION>_<KEY> environment variables."""
    env = os.environ if env is None else env
    values = copy.deepcopy(DEFAULTS)
    source = None
    if path is None and env.get("HEARTH_CONFIG"):
        path = env["HEARTH_CONFIG"]
    if path is not None:
        source = Path(path)
        try:
            data = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
        for section, items in data.items():
            if section not in DEFAULTS or not isinstance(items, dict):
                raise ConfigError(f"unknown config section [{section}] in {source}")
            for key, value in items.items():
                if key not in DEFAULTS[section]:
                    raise ConfigError(f"unknown config key [{section}] {key} in {source}")
                values[section][key] = _coerce(section, key, value, DEFAULTS[section][key])
    for section, items in DEFAULTS.items():
        for key, like in items.items():
            var = f"HEARTH_{section.upper()}_{key.upper()}"
            if var in env:
                values[section][key] = _coerce(section, key, env[var], like)
    return Config(values, source)
