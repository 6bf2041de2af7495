#!/usr/bin/env bash
# Installs everything ipsec-lab needs on a Debian/Ubuntu machine, idempotently:
# the Debian packages (strongSwan, CNI plugins, iproute2, iptables, tcpdump, ...) and
# a virtual environment at .venv with the project installed in editable mode.
# Safe to run again: it installs only what is missing and rebuilds the venv only
# when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (e.g. 'sudo make setup'): it installs Debian packages and the lab needs root" >&2
    exit 1
fi

DEBIAN_PACKAGES=(
    strongswan-charon strongswan-swanctl libcharon-extra-plugins strongswan-starter
    containernetworking-plugins iproute2 iptables tcpdump curl iputils-ping procps
    util-linux tmux python3 python3-venv
    # the Vagrant backend's tests: `vagrant validate` for both providers, shellcheck, and a real
    # OpenSSH server inside a netns node for the Fabric layer
    vagrant vagrant-libvirt shellcheck openssh-server
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # strongswan-starter would start a host-wide charon through systemd where systemd runs;
    # policy-rc.d keeps package scripts from starting any daemon on this host.
    had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
    if [ "$had_policy" -eq 0 ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    if [ "$had_policy" -eq 0 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

PYTHON=${PYTHON:-python3}
stamp=.venv/.ipsec-lab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: creating the virtual environment in .venv"
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/ipsec-lab)"
