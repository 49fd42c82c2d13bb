#!/usr/bin/env bash
# Install what the test suite needs, idempotently:
#   - a Python virtualenv at .venv with Hearth and its test extras
#   - Kubo (built from its Go module, cached in ~/.cache/hearth/tools)
#   - for the browser tests: Debian's chromium (apt, when root) and npm
#     playwright-core (cached in ~/.cache/hearth/pwcore)
#   - for the HTTP-only IPFS client test: Node 22 and npm @helia/verified-fetch (cached in
#     ~/.cache/hearth/verified-fetch)
#   - for anchoring: npm anvil, solc-js and @openzeppelin/merkle-tree (cached in ~/.cache/hearth/chain)
#   - for SIWE: npm viem (cached in ~/.cache/hearth/siwe)
set -euo pipefail
cd "$(dirname "$0")/.."

KUBO_VERSION="${HEARTH_KUBO_VERSION:-v0.42.0}"
TOOLS="${HEARTH_TOOLS_DIR:-$HOME/.cache/hearth/tools}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(0 if (3,11) <= sys.version_info[:2] < (3,13) else 1)' 2>/dev/null; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "need Python 3.11 or 3.12" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.hearth-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi

mkdir -p "$TOOLS"
KUBO="$TOOLS/ipfs-$KUBO_VERSION"
if [ ! -x "$KUBO" ]; then
  command -v go >/dev/null || { echo "Go is needed to build Kubo $KUBO_VERSION" >&2; exit 1; }
  echo "building Kubo $KUBO_VERSION (first run only, a few minutes)..." >&2
  # Recent Kubo go.mod files carry exclude/replace directives that `go install pkg@v`
  # refuses, so build inside the downloaded module instead.
  dir="$(go mod download -json "github.com/ipfs/kubo@$KUBO_VERSION" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  (cd "$dir" && GOFLAGS=-mod=mod go build -o "$KUBO.tmp" ./cmd/ipfs)
  mv "$KUBO.tmp" "$KUBO"
fi
"$KUBO" version >/dev/null

# Browser tests (a dApp on another origin calling the API): Debian's chromium, driven
# by npm playwright-core (its own browser download cannot work offline). Without them
# those tests are skipped, and say why.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian chromium for the browser tests (first run only)..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "could not install chromium: browser tests will be skipped" >&2
fi
PW="${HEARTH_PLAYWRIGHT_DIR:-$HOME/.cache/hearth/pwcore}"
if [ ! -f "$PW/node_modules/playwright-core/package.json" ] && command -v npm >/dev/null; then
  mkdir -p "$PW"
  [ -f "$PW/package.json" ] || echo '{"name": "hearth-pwcore", "private": true}' > "$PW/package.json"
  npm install --prefix "$PW" --no-audit --no-fund --loglevel=error playwright-core@1.65.1 >/dev/null 2>&1 \
    || echo "could not install playwright-core: browser tests will be skipped" >&2
fi

# The HTTP-only IPFS client test (tests/test_verified_fetch.py): npm @helia/verified-fetch and
# the HTTP-only Helia stack, run with a Node 22 binary that comes from the npm registry too
# (verified-fetch 8 needs Node >= 22). Cached in ~/.cache/hearth/verified-fetch, never in the
# repo; the stamp holds the pins, so changing one reinstalls. Without it that test is skipped.
VF="${HEARTH_VERIFIED_FETCH_DIR:-$HOME/.cache/hearth/verified-fetch}"
VF_PKGS="node@22.23.3 @helia/verified-fetch@8.0.4 @helia/http@4.0.7 helia@7.1.15 @multiformats/dns@1.0.15"
if [ "$(cat "$VF/.hearth-installed" 2>/dev/null)" != "$VF_PKGS" ] && command -v npm >/dev/null; then
  echo "installing npm $VF_PKGS into $VF (first run only)..." >&2
  mkdir -p "$VF"
  echo '{"name": "hearth-verified-fetch", "private": true, "type": "module"}' > "$VF/package.json"
  # shellcheck disable=SC2086
  if npm install --prefix "$VF" --save-exact --no-audit --no-fund --loglevel=error $VF_PKGS >/dev/null 2>&1 \
      && "$VF/node_modules/.bin/node" -e 'process.exit(parseInt(process.versions.node) >= 22 ? 0 : 1)'; then
    echo "$VF_PKGS" > "$VF/.hearth-installed"
  else
    echo "could not install verified-fetch and Node 22: its test will be skipped" >&2
  fi
fi
# On-chain anchoring (chain/, tests/test_anchor_contract.py, test_merkle.py): anvil (its npm
# package ships the linux binary; npm 11 skips the postinstall, the binary still arrives), solc-js
# for scripts/compile-contracts, and @openzeppelin/merkle-tree as the reference Merkle tree.
# Cached in ~/.cache/hearth/chain, never in the repo; the stamp holds the pins.
CHAIN="${HEARTH_CHAIN_TOOLS_DIR:-$HOME/.cache/hearth/chain}"
CHAIN_PKGS="@foundry-rs/anvil@1.7.1 solc@0.8.37 @openzeppelin/merkle-tree@1.0.8"
if [ "$(cat "$CHAIN/.hearth-installed" 2>/dev/null)" != "$CHAIN_PKGS" ] && command -v npm >/dev/null; then
  echo "installing npm $CHAIN_PKGS into $CHAIN (first run only)..." >&2
  mkdir -p "$CHAIN"
  echo '{"name": "hearth-chain", "private": true}' > "$CHAIN/package.json"
  # shellcheck disable=SC2086
  if npm install --prefix "$CHAIN" --save-exact --no-audit --no-fund --loglevel=error $CHAIN_PKGS >/dev/null 2>&1 \
      && "$CHAIN/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" --version >/dev/null 2>&1; then
    echo "$CHAIN_PKGS" > "$CHAIN/.hearth-installed"
  else
    echo "could not install $CHAIN_PKGS: the anchoring tests will fail" >&2
  fi
fi
# ENS tests (tests/support/ens.py): the ENSRegistry and PublicResolver artifacts, `npm pack`ed
# (installing them would pull an ancient solc) into the same chain tools dir.
ENS_PACKS="@ensdomains/ens@0.6.2 @ensdomains/resolver@0.3.1"
if [ "$(cat "$CHAIN/ens-artifacts/.hearth-installed" 2>/dev/null)" != "$ENS_PACKS" ] && command -v npm >/dev/null; then
  mkdir -p "$CHAIN/ens-artifacts"
  # shellcheck disable=SC2086
  if (cd "$CHAIN/ens-artifacts" && npm pack --loglevel=error $ENS_PACKS >/dev/null 2>&1); then
    echo "$ENS_PACKS" > "$CHAIN/ens-artifacts/.hearth-installed"
  else
    echo "could not npm pack $ENS_PACKS: the ENS tests will fail" >&2
  fi
fi
# SIWE (tests/test_siwe.py): viem as the JavaScript wallet that signs the same messages and
# cross-checks createSiweMessage / parseSiweMessage against identity/siwe.py. Cached in
# ~/.cache/hearth/siwe, never in the repo; the stamp holds the pin. Without it that test is skipped.
SIWE_JS="${HEARTH_SIWE_JS_DIR:-$HOME/.cache/hearth/siwe}"
SIWE_PKGS="viem@2.57.20"
if [ "$(cat "$SIWE_JS/.hearth-installed" 2>/dev/null)" != "$SIWE_PKGS" ] && command -v npm >/dev/null; then
  echo "installing npm $SIWE_PKGS into $SIWE_JS (first run only)..." >&2
  mkdir -p "$SIWE_JS"
  echo '{"name": "hearth-siwe", "private": true, "type": "module"}' > "$SIWE_JS/package.json"
  # shellcheck disable=SC2086
  if npm install --prefix "$SIWE_JS" --save-exact --no-audit --no-fund --loglevel=error $SIWE_PKGS >/dev/null 2>&1; then
    echo "$SIWE_PKGS" > "$SIWE_JS/.hearth-installed"
  else
    echo "could not install $SIWE_PKGS: the viem SIWE test will be skipped" >&2
  fi
fi
echo "test dependencies ready: $(.venv/bin/python --version), $("$KUBO" version)" >&2
