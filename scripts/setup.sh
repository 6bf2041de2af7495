#!/usr/bin/env bash
# Installs everything ipsec-lab needs on a Debian/Ubuntu machine, idempotently, from nothing but
# the distribution's packages and PyPI: nothing may rely on what a machine happens to have.
#
#   scripts/setup.sh          the lab, the checks and the TUI (what `scripts/lab` needs)
#   scripts/setup.sh --vm     also what the Vagrant backend's VMs need (QEMU, libvirt, Vagrant)
#   scripts/setup.sh --test   also what the test suite needs (what `scripts/test` needs; VMs included)
#
# Safe to run again: it installs only what is missing and rebuilds .venv only when
# pyproject.toml (or the wanted extras) changed. The fresh-machine test (tests/test_fresh_machine.py)
# runs this script in a minimal Debian root, so a package missing here fails the suite.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=lab
case "${1:-}" in
    "") ;;
    --test) profile=test ;;
    --vm) profile=vm ;;
    *) echo "setup: unknown option '$1' (--vm: the Vagrant backend's VMs; --test: the test suite's)" >&2; exit 3 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root: it installs Debian packages, and the lab needs root (namespaces, mounts)" >&2
    exit 1
fi

# What the lab, the checks and the TUI run. Keep in step with tui/lab/preflight.py, which names
# the same packages when something is missing.
LAB_PACKAGES=(
    # strongSwan: the daemon, swanctl, the seed's `ipsec` command, and the plugins the rendered
    # strongswan.conf loads: openssl (standard-plugins) and kernel-libipsec (extra-plugins)
    strongswan-charon strongswan-swanctl strongswan-starter
    libstrongswan-standard-plugins libcharon-extra-plugins
    # strongSwan's `pki`: the lab CA and the node certificates of `up --auth x509`
    strongswan-pki
    # the CNI plugins (bridge, host-local, loopback) and what the node scripts and checks call
    containernetworking-plugins iproute2 iptables tcpdump curl iputils-ping procps util-linux mount
    # the Python the app runs on, and the trust store pip needs
    python3 python3-venv ca-certificates
    # `ipsec-lab web` serves DejaVu Sans Mono to browsers, for the glyphs Roboto Mono lacks
    fonts-dejavu-core
)
# What the Vagrant backend's VMs need on this machine: Vagrant with its libvirt provider, QEMU and
# a libvirt the lab can run itself (no systemd needed), and what builds the offline box from
# Debian packages (mmdebstrap, an ext4 image, GRUB for BIOS boot).
VM_PACKAGES=(
    vagrant vagrant-libvirt qemu-system-x86 qemu-utils
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base
    mmdebstrap e2fsprogs fdisk grub-pc-bin grub2-common
)
# What only the tests use: the TUI test drives the app in tmux, the Vagrant backend's tests run
# `vagrant validate` and a real sshd, the fresh-machine test builds a Debian root, and the web
# test opens `ipsec-lab web` in Debian's Chromium (Playwright drives it; it downloads no browser)
# and reads the served fonts' coverage with fontconfig.
TEST_PACKAGES=(
    tmux shellcheck openssh-server git chromium fontconfig "${VM_PACKAGES[@]}"
)

wanted=("${LAB_PACKAGES[@]}")
[ "$profile" = test ] && wanted+=("${TEST_PACKAGES[@]}")
[ "$profile" = vm ] && wanted+=("${VM_PACKAGES[@]}")

missing=()
for pkg in "${wanted[@]}"; do
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
    trap '[ "$had_policy" -eq 0 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

if [ "$profile" != lab ]; then
    # What libvirt-daemon-system's scripts would make, for the libvirtd a lab runs itself
    # (tui/vm/hypervisor.py): its two system users, and libvirt's directories as mount points
    # (the lab binds its own directories over them, inside its own mount namespace).
    getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
    getent passwd libvirt-dnsmasq >/dev/null || useradd -r -U -d /var/lib/libvirt/dnsmasq -s /usr/sbin/nologin libvirt-dnsmasq
    install -d /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
fi

PYTHON=${PYTHON:-python3}
extras=""; [ "$profile" = test ] && extras="[test]"
stamp=.venv/.ipsec-lab-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $profile"
have="$(cat "$stamp" 2>/dev/null || true)"
# A venv made for the tests serves the lab too.
ok=0
if [ -x .venv/bin/python ]; then
    [ "$have" = "$want" ] && ok=1
    [ "$profile" != test ] && [ "$have" = "${want% *} test" ] && ok=1
fi
if [ "$ok" -eq 0 ]; then
    echo "setup: creating the virtual environment in .venv"
    rm -rf .venv
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".$extras"
    echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/ipsec-lab)"
