"""Configuration: config.toml, overridden by HEARTH_<SECTION>_<KEY> variables."""
from __future__ import annotations

import copy
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {"host": "127.0.0.1", "port": 8787, "data_dir": "~/.hearth", "log_level": "info", "public_url": "",
               "header_timeout": 10, "body_idle_timeout": 30, "keepalive_timeout": 15, "max_connections": 1000, "workers": 0,
               "event_loop": "uvloop"},
    "storage": {"engine": "embedded", "kubo_api": "http://127.0.0.1:5001", "kubo_timeout": 60,
                "kubo_gateway": "", "max_upload_bytes": 10 * 1024**3, "max_concurrent_uploads": 128,
                "max_bytes": 10_000_000_000, "gc_watermark": 90, "gc_period": 3600, "fetch_gateways": [],
                "verify_on_read": "never", "scrub_rate": 8 * 1024**2},
    "gateway": {"serve": "local", "retrieval_timeout": 30, "cache_bytes": 64 * 1024**2, "cache_max_item": 1024**2},
    "outbound": {"allow_http": False, "allow_private": False, "timeout": 30, "max_response_bytes": 10 * 1024**2},
    "auth": {"anonymous_uploads": False},
    "pinning": {"workers": 4, "pin_timeout": 600},
}

CHOICES = {("server", "event_loop"): {"uvloop", "asyncio"}, ("storage", "engine"): {"embedded", "kubo"}, ("gateway", "serve"): {"local", "network"},
           ("storage", "verify_on_read"): {"never", "always"},
           ("server", "log_level"): {"debug", "info", "warning", "error"}}


# integer keys with a range beyond "not negative"
BOUNDS = {("storage", "gc_watermark"): (1, 100), ("server", "port"): (0, 65535),
          ("server", "max_connections"): (1, None), ("storage", "max_concurrent_uploads"): (1, None),
          ("server", "header_timeout"): (1, None), ("server", "body_idle_timeout"): (1, None)}


class ConfigError(ValueError):
    pass


def _coerce(section: str, key: str, value: Any, like: Any) -> Any:
    name = f"[{section}] {key}"
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
