"""Preflight: does this machine have every piece the lab will use? Asked before anything is created.

Probes are data (what to look for, where, and which Debian package provides it), so `up` can stop
at the first missing piece with one line, and `ipsec-lab doctor` can print all of them at once.
What is looked for comes from the lab's own rendered files where it can: the strongSwan plugins
named on the `load =` lines of strongswan.conf and the CNI plugins named in the conflist, so a
template that starts to load a new plugin is checked without anyone remembering to add it here.
(The fresh-machine test, tests/test_fresh_machine.py, proves the packages named here are the ones
scripts/setup.sh installs.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .errors import UsageError

PLUGIN_DIR_ENV = "IPSEC_LAB_PLUGIN_DIR"
CNI_BIN_DIR_ENV = "IPSEC_LAB_CNI_BIN_DIR"
DEFAULT_PLUGIN_DIR = "/usr/lib/ipsec/plugins"
DEFAULT_CNI_BIN_DIR = "/usr/lib/cni"

# strongSwan plugin -> the Debian package that ships libstrongswan-<plugin>.so (Debian 12, `dpkg -S`).
PLUGIN_PACKAGES: dict[str, str] = {
    "aes": "libstrongswan", "random": "libstrongswan", "nonce": "libstrongswan", "kdf": "libstrongswan",
    "pem": "libstrongswan", "pkcs1": "libstrongswan", "x509": "libstrongswan", "pubkey": "libstrongswan",
    "sha1": "libstrongswan", "sha2": "libstrongswan", "hmac": "libstrongswan", "gmp": "libstrongswan",
    "kernel-netlink": "libstrongswan", "revocation": "libstrongswan", "constraints": "libstrongswan",
    "openssl": "libstrongswan-standard-plugins", "gcm": "libstrongswan-standard-plugins",
    "agent": "libstrongswan-standard-plugins",
    "kernel-libipsec": "libcharon-extra-plugins",
    "socket-default": "strongswan-libcharon", "updown": "strongswan-libcharon",
    "vici": "strongswan-swanctl",
    "stroke": "strongswan-starter",
}

# Programs the node scripts, the backend and the checks run -> their Debian package.
PROGRAMS: dict[str, str] = {
    "ip": "iproute2",
    "iptables": "iptables",
    "iptables-restore": "iptables",
    "swanctl": "strongswan-swanctl",
    "ipsec": "strongswan-starter",  # the seed's `ipsec down mesh-left`
    "pki": "strongswan-pki",  # the lab CA and node certificates of `up --auth x509`
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "sysctl": "procps",
    "tcpdump": "tcpdump",  # the capture checks
    "curl": "curl",
    "ping": "iputils-ping",
    "sh": "dash",
}

# Files that are no program on PATH -> their Debian package.
FILES: dict[str, str] = {
    "/usr/lib/ipsec/charon": "strongswan-charon",
    "/etc/strongswan.conf": "strongswan-libcharon",
    "/etc/swanctl": "strongswan-swanctl",
}


@dataclass(frozen=True)
class Finding:
    """One probe's answer. `package` is the Debian package that provides what was looked for."""

    kind: str  # "program", "file", "strongSwan plugin", "CNI plugin", "kernel", "privilege"
    name: str
    ok: bool
    detail: str  # where it was found, or where it was looked for
    package: str | None = None
    optional: bool = False  # a lab runs without it (a feature is missing): reported, never blocking

    def line(self) -> str:
        """The one line `up` prints when this is missing: what, where, and how to fix it."""
        fix = (f"install the Debian package {self.package} (`ipsec-lab doctor --install`, or scripts/setup.sh)"
               if self.package else self.detail)
        where = f" ({self.detail})" if self.package else ""
        return f"{self.kind} {self.name} is missing{where}: {fix}"


def plugin_dir() -> Path:
    return Path(os.environ.get(PLUGIN_DIR_ENV, DEFAULT_PLUGIN_DIR))


def cni_bin_dir(default: str = DEFAULT_CNI_BIN_DIR) -> Path:
    return Path(os.environ.get(CNI_BIN_DIR_ENV, default))


_LOAD = re.compile(r"^\s*load\s*=\s*(.+?)\s*$", re.MULTILINE)


def loaded_plugins(strongswan_conf: str) -> list[str]:
    """Every plugin named on a `load =` line (charon's and swanctl's), in order, once."""
    seen: dict[str, None] = {}
    for m in _LOAD.finditer(strongswan_conf):
        for name in m.group(1).split():
            seen.setdefault(name.rstrip("!"), None)  # a trailing ! marks a critical plugin
    return list(seen)


def cni_plugins(conflist: str) -> list[str]:
    """Every plugin type a CNI network config list names, IPAM plugins included."""
    doc = json.loads(conflist)
    names: dict[str, None] = {}
    for plugin in doc.get("plugins", []):
        names.setdefault(plugin["type"], None)
        ipam = plugin.get("ipam") or {}
        if "type" in ipam:
            names.setdefault(ipam["type"], None)
    return list(names)


def check_programs(programs: Mapping[str, str] = PROGRAMS) -> list[Finding]:
    out = []
    for prog, pkg in programs.items():
        found = shutil.which(prog)
        out.append(Finding("program", prog, found is not None, found or "not on PATH", pkg))
    return out


def check_files(files: Mapping[str, str] = FILES) -> list[Finding]:
    return [Finding("file", path, os.path.exists(path), path, pkg) for path, pkg in files.items()]


def check_strongswan_plugins(strongswan_conf: str, directory: Path | None = None) -> list[Finding]:
    directory = directory or plugin_dir()
    out = []
    for name in loaded_plugins(strongswan_conf):
        path = directory / f"libstrongswan-{name}.so"
        out.append(Finding("strongSwan plugin", name, path.exists(), str(path), PLUGIN_PACKAGES.get(name, "strongswan")))
    return out


def check_cni_plugins(conflist: str, directory: Path) -> list[Finding]:
    out = []
    for name in cni_plugins(conflist):
        path = directory / name
        out.append(Finding("CNI plugin", name, os.access(path, os.X_OK), str(path), "containernetworking-plugins"))
    return out


def check_root() -> Finding:
    ok = os.geteuid() == 0
    return Finding("privilege", "root", ok,
                   "running as root" if ok else "the lab needs root (namespaces, mounts, iptables): run it as root")


def check_tun() -> Finding:
    """kernel-libipsec sends ESP through a TUN device."""
    ok = os.path.exists("/dev/net/tun")
    return Finding("kernel", "TUN device", ok, "/dev/net/tun" if ok else
                   "/dev/net/tun is missing: the kernel-libipsec data path needs TUN (modprobe tun)")


def check_netem() -> Finding:
    """The kernel's netem qdisc (`ipsec-lab link --delay/--jitter`), asked in a network namespace
    of its own that ends with the probe (unshare -n): this machine's interfaces are not touched."""
    import subprocess

    if shutil.which("unshare") is None or shutil.which("tc") is None or os.geteuid() != 0:
        return Finding("kernel", "netem qdisc", True, "not probed (needs root, unshare and tc)", optional=True)
    p = subprocess.run(["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                       capture_output=True, text=True, timeout=10)
    if p.returncode == 0:
        return Finding("kernel", "netem qdisc", True, "this kernel has netem: link --delay/--jitter/--loss use it",
                       optional=True)
    why = (p.stderr.strip().splitlines() or ["tc failed"])[-1]
    return Finding("kernel", "netem qdisc", False, f"this kernel has no netem ({why}): `ipsec-lab link` cannot "
                   "--delay or --jitter here; --loss uses an iptables random drop, --rate tbf", optional=True)


def missing(findings: Iterable[Finding]) -> list[Finding]:
    """What blocks a lab (an optional finding never does)."""
    return [f for f in findings if not f.ok and not f.optional]


def require(findings: Iterable[Finding]) -> None:
    """Raise the first missing piece as a UsageError (one line, exit code 3, nothing changed)."""
    gaps = missing(findings)
    if gaps:
        more = f" (and {len(gaps) - 1} more: `ipsec-lab doctor` lists them)" if len(gaps) > 1 else ""
        raise UsageError(gaps[0].line() + more)


def packages_to_install(findings: Iterable[Finding]) -> list[str]:
    """The Debian packages that would fill every gap, each once, in the order found."""
    return list(dict.fromkeys(f.package for f in findings if not f.ok and f.package))


# A policy-rc.d that forbids starting services: strongswan-starter would otherwise start a
# host-wide charon where systemd runs. scripts/setup.sh does the same.
_POLICY_RC = Path("/usr/sbin/policy-rc.d")


def install_packages(packages: list[str], on_line: Callable[[str], None]) -> int:
    """apt-get install the packages (for `ipsec-lab doctor --install`); returns apt's exit code.

    For those who came through pip rather than the README's scripts/setup.sh."""
    import subprocess

    if os.geteuid() != 0:
        raise UsageError("installing Debian packages needs root: run `ipsec-lab doctor --install` as root")
    if shutil.which("apt-get") is None:
        raise UsageError("apt-get is not here: install these packages with your system's tools: " + " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    placed = False
    if not _POLICY_RC.exists():
        _POLICY_RC.write_text("#!/bin/sh\nexit 101\n")
        _POLICY_RC.chmod(0o755)
        placed = True
    try:
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
            on_line("$ " + " ".join(argv))
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env)
            assert p.stdout is not None
            for line in p.stdout:
                on_line(line.rstrip("\n"))
            if p.wait() != 0:
                return p.returncode
        return 0
    finally:
        if placed:
            _POLICY_RC.unlink(missing_ok=True)
