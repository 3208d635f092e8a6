#!/usr/bin/env bash
# Install Prometheus, promtool and Alertmanager from Debian's packages for the
# deployment tests (tests/deploy): `prometheus` gives prometheus + promtool,
# `prometheus-alertmanager` gives prometheus-alertmanager + amtool.
#
#   deploy/local/prometheus_tools.sh          # install unless already there
#   deploy/local/prometheus_tools.sh --check  # exit 0 when all binaries are present
#
# The tests run the binaries themselves (loopback, temporary storage), so the
# packages' services must not start: Debian's maintainer scripts ask
# invoke-rc.d, which obeys /usr/sbin/policy-rc.d, and exit code 101 there means
# "do not start anything". We put such a policy in place for the duration of
# the install and restore whatever was there before.
set -euo pipefail

BINARIES=(prometheus promtool prometheus-alertmanager)
PACKAGES=(prometheus prometheus-alertmanager)

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
    echo "prometheus_tools: $(promtool --version 2>&1 | head -n1) and alertmanager already installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus_tools: apt-get not found; install ${PACKAGES[*]} (or the upstream" \
         "prometheus and alertmanager binaries) by hand" >&2
    exit 1
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "prometheus_tools: need root (or sudo) to install ${PACKAGES[*]}" >&2
        exit 1
    fi
fi

POLICY=/usr/sbin/policy-rc.d
BACKUP=""
restore_policy() {
    if [[ -n "$BACKUP" ]]; then
        "${SUDO[@]}" mv -f "$BACKUP" "$POLICY"
    else
        "${SUDO[@]}" rm -f "$POLICY"
    fi
}
if [[ -e "$POLICY" ]]; then
    BACKUP="$("${SUDO[@]}" mktemp /usr/sbin/policy-rc.d.stream-monitor.XXXXXX)"
    "${SUDO[@]}" cp -p "$POLICY" "$BACKUP"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# stream-monitor prometheus_tools.sh: do not start services while installing\nexit 101\n' \
    | "${SUDO[@]}" tee "$POLICY" >/dev/null
"${SUDO[@]}" chmod 755 "$POLICY"

export DEBIAN_FRONTEND=noninteractive
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
    echo "prometheus_tools: installed ${PACKAGES[*]} but a binary is still missing:" \
         "need ${BINARIES[*]} on PATH" >&2
    exit 1
fi
echo "prometheus_tools: installed $(promtool --version 2>&1 | head -n1)"
