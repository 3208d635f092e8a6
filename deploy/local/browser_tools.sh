#!/usr/bin/env bash
# Install Chromium from Debian's package for the backtest report test
# (tests/unit/test_replay_report_render.py renders `replay --report` headless).
#
#   deploy/local/browser_tools.sh          # install unless already there
#   deploy/local/browser_tools.sh --check  # exit 0 when chromium is present
#
# Same pattern as prometheus_tools.sh; chromium starts no service, so no
# policy-rc.d is needed.
set -euo pipefail

BINARIES=(chromium)
PACKAGES=(chromium)

missing() {
    local binary
    for binary in "${BINARIES[@]}"; do
        command -v "$binary" >/dev/null 2>&1 || return 0
    done
    return 1
}

if [[ "${1:-}" == "--check" ]]; then
    if missing; then exit 1; fi
    exit 0
fi

if ! missing; then
    echo "browser_tools: $(chromium --version 2>/dev/null | head -n1) already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser_tools: apt-get not found; install ${PACKAGES[*]} (Chromium or Chrome as 'chromium'" \
         "on PATH) by hand" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "browser_tools: need root (or sudo) to install ${PACKAGES[*]}" >&2
        exit 1
    fi
fi

install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"
}
if ! install; then
    # stale or missing package lists: refresh once and retry
    "${SUDO[@]}" apt-get update -q
    install
fi

if missing; then
    echo "browser_tools: installed ${PACKAGES[*]} but ${BINARIES[*]} is still not on PATH" >&2
    exit 1
fi
echo "browser_tools: installed $(chromium --version 2>/dev/null | head -n1)"
