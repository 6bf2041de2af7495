"""Preflight of the Vagrant backend: what the host offers (providers, memory, VirtualBox's
host-only ranges), each provider's probes as a data table, and the checks `up` makes before it
changes anything. Each failure is one UsageError line."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..lab.errors import UsageError
from ..lab.model import LabSpec
from ..vm import hypervisor
from .vagrant_files import CONTROL_PLANE_ROLE, VAGRANTFILE, WORKER_ROLE, vm_resources

PROVIDERS = ("virtualbox", "libvirt")
HOST_HEADROOM_MB = 1024  # what the host keeps for itself on top of the VMs
VIRTUALBOX_HOSTONLY = ipaddress.IPv4Network("192.168.56.0/21")  # VirtualBox >= 6.1.28 default
PROVIDER_NETWORKS = {  # addresses each provider already uses for its own NAT / management network
    "virtualbox": ipaddress.IPv4Network("10.0.2.0/24"),
    "libvirt": ipaddress.IPv4Network("192.168.121.0/24"),
}



@dataclass
class HostFacts:
    """What preflight looks at on the host; tests pass their own facts."""

    vagrant: str | None = field(default_factory=lambda: shutil.which("vagrant"))
    mem_available_mb: int | None = None
    provider_problems: dict[str, str | None] | None = None  # provider -> why unusable (None: usable)
    vbox_networks: list[ipaddress.IPv4Network] | None = None
    system_libvirtd: bool | None = None  # a libvirtd of the machine's own answers (None: ask it)

    def problems(self) -> dict[str, str | None]:
        if self.provider_problems is None:
            self.provider_problems = {p: provider_problem(p) for p in PROVIDERS}
        return self.provider_problems

    def memory_mb(self) -> int:
        if self.mem_available_mb is None:
            self.mem_available_mb = _mem_available_mb()
        return self.mem_available_mb

    def vbox_allowed(self) -> list[ipaddress.IPv4Network]:
        if self.vbox_networks is None:
            self.vbox_networks = _vbox_networks_conf()
        return self.vbox_networks


def _libvirt_plugin_installed() -> bool:
    plugins = Path("/usr/share/vagrant-plugins/plugins.d")
    user_plugins = Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d")) / "plugins.json"
    if plugins.is_dir() and any(plugins.glob("*libvirt*")):
        return True
    return user_plugins.exists() and "vagrant-libvirt" in user_plugins.read_text(errors="replace")


LIBVIRT_SOCKETS = ("/var/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock")


@dataclass(frozen=True)
class Probe:
    """One thing a provider needs on the host: how to see it, and the line when it is missing."""

    provider: str
    holds: Callable[[], bool]
    problem: str


# Each provider's probes, in order; the first that fails is the provider's problem.
PROBES: tuple[Probe, ...] = (
    Probe("virtualbox", lambda: shutil.which("VBoxManage") is not None, "VirtualBox is not installed (no VBoxManage)"),
    Probe("virtualbox", lambda: os.path.exists("/dev/vboxdrv"),
          "VirtualBox's kernel driver is not loaded (no /dev/vboxdrv)"),
    Probe("libvirt", _libvirt_plugin_installed, "the vagrant-libvirt plugin is not installed"),
    # A machine without a libvirtd of its own gets the lab's (tui/vm/hypervisor.py), and without
    # usable KVM the VMs run under QEMU's emulation: neither is a reason to refuse.
    Probe("libvirt", lambda: any(os.path.exists(s) for s in LIBVIRT_SOCKETS) or _can_start_libvirtd(),
          "libvirtd is not running and the lab cannot start its own (scripts/setup.sh --vm installs it)"),
)


def _can_start_libvirtd() -> bool:
    try:
        hypervisor.check_tools()
    except UsageError:
        return False
    return True


def provider_problem(provider: str, probes: tuple[Probe, ...] = PROBES) -> str | None:
    """Why `provider` cannot run VMs here (the first failed probe), or None when it can."""
    return next((p.problem for p in probes if p.provider == provider and not p.holds()), None)


def _mem_available_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def _vbox_networks_conf() -> list[ipaddress.IPv4Network]:
    """VirtualBox's host-only ranges: /etc/vbox/networks.conf lines `* 10.0.0.0/8 ...`."""
    try:
        lines = Path("/etc/vbox/networks.conf").read_text().splitlines()
    except OSError:
        return [VIRTUALBOX_HOSTONLY]
    nets: list[ipaddress.IPv4Network] = []
    for line in lines:
        if line.strip().startswith("*"):
            for tok in line.split()[1:]:
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(tok, strict=False))
    return nets


def lab_memory_mb(spec: LabSpec, provider: str, mode: str = "none") -> int:
    res = vm_resources(mode)[provider]
    return res[CONTROL_PLANE_ROLE]["memory_mb"] + (spec.nodes - 1) * res[WORKER_ROLE]["memory_mb"]


def preflight(spec: LabSpec, facts: HostFacts, other_labs: dict[str, ipaddress.IPv4Network],
              mode: str = "none") -> str:
    """Checks before `up`; returns the provider to use. Each failure is one UsageError line.
    Reads only: nothing on the host is changed."""
    if facts.vagrant is None:
        raise UsageError("vagrant is not installed: install Vagrant (Debian: `apt-get install vagrant`, "
                         "plus vagrant-libvirt for libvirt) or use the netns backend")
    if not VAGRANTFILE.exists():
        raise UsageError(f"{VAGRANTFILE} is missing: the Vagrant backend needs the project's Vagrantfile")
    problems = facts.problems()
    wanted = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
    if wanted:
        if wanted not in PROVIDERS:
            raise UsageError(f"provider {wanted!r} (VAGRANT_DEFAULT_PROVIDER) is not supported: "
                             f"use {' or '.join(PROVIDERS)}")
        if problems.get(wanted):
            raise UsageError(f"provider {wanted} cannot run VMs here: {problems[wanted]}")
        provider = wanted
    else:
        order = ("libvirt", "virtualbox") if mode == "none" else PROVIDERS  # the offline box is libvirt's
        usable = [p for p in order if not problems.get(p)]
        if not usable:
            why = "; ".join(f"{p}: {problems[p]}" for p in order)
            raise UsageError(f"no Vagrant provider can run VMs here ({why})")
        provider = usable[0]
    if mode == "none" and provider != "libvirt":
        raise UsageError(f"node mode none boots the offline box, which is built for libvirt, not {provider}: "
                         "install vagrant-libvirt (scripts/setup.sh --vm), or use --kubernetes kubeadm")
    if provider == "virtualbox":
        allowed = facts.vbox_allowed()
        if not any(spec.underlay.subnet_of(n) for n in allowed):
            raise UsageError(f"underlay {spec.underlay} is outside VirtualBox's host-only ranges "
                             f"({', '.join(map(str, allowed))}); pick one inside 192.168.56.0/21 or "
                             f"list it in /etc/vbox/networks.conf")
    if spec.underlay.overlaps(PROVIDER_NETWORKS[provider]):
        raise UsageError(f"underlay {spec.underlay} overlaps {provider}'s own network "
                         f"{PROVIDER_NETWORKS[provider]}; pick another subnet")
    for lab, net in sorted(other_labs.items()):
        if lab != spec.name and spec.underlay.overlaps(net):
            raise UsageError(f"underlay {spec.underlay} overlaps Vagrant lab {lab!r} ({net}); "
                             f"pick another subnet with `up --underlay`")
    need = lab_memory_mb(spec, provider, mode) + HOST_HEADROOM_MB
    have = facts.memory_mb()
    if have < need:
        raise UsageError(f"not enough memory for {spec.nodes} VMs: they need {need} MB with headroom, "
                         f"{have} MB are available")
    return provider
