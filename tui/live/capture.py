"""Capture a node's interface with the node's own tcpdump: `ipsec-lab capture` and the TUI's
capture view share this.

tcpdump runs on the node (netns: in the node's namespace; VMs: on the VM) through Backend.stream, and
prints its own decoding, a line per packet, as packets arrive. Where the backend can put a file
of the node on this machine (Backend.capture_file), tcpdump also writes the packets to a pcap as
they arrive (--print -w): the file `-w` and Ctrl+S save, and the one the underlay verdict reads
(tui.lab.pcap, the reader the underlay-encrypted check uses). On VMs the pcap is written in the VM
and copied here (Backend.fetch_node_file) when it is read: for the verdict at most every
FETCH_EVERY_S, and once more when it is saved. The process is stopped by its PID
(RunningCommand.stop), never by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Callable, Iterator

from ..backends.base import Backend
from ..lab import commands, pcap
from ..lab.errors import LabError, UsageError
from ..lab.proc import RunningCommand, last_line

_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s")
_ADDR = re.compile(r"^\d+:\s+(\S+)\s+inet\s+([0-9.]+)/")


@dataclass(frozen=True)
class Interface:
    name: str
    kind: str  # underlay, pod bridge, pod veth, libipsec TUN, XFRM interface, other

    def label(self) -> str:
        return f"{self.name} ({self.kind})"


def classify_links(links: str, addresses: str, underlay_ip: str) -> list[Interface]:
    """The node's interfaces (`ip -o -d link show`, `ip -o -4 addr show`), underlay first; lo left out."""
    underlay = {m.group(1) for line in addresses.splitlines() if (m := _ADDR.match(line)) and m.group(2) == underlay_ip}
    found: list[Interface] = []
    for line in links.splitlines():
        m = _LINK.match(line)
        if not m or m.group(1) == "lo":
            continue
        name = m.group(1)
        if name in underlay:
            kind = "underlay"
        elif name == "cni0":
            kind = "pod bridge"
        elif " master cni0 " in line:
            kind = "pod veth"
        elif re.search(r"\sxfrm\s+if_id", line) or name.startswith("ipsec-n"):  # naming.xfrm_interface
            kind = "XFRM interface"
        elif name == "ipsec0":
            kind = "libipsec TUN"
        else:
            kind = "other"
        found.append(Interface(name, kind))
    order = ("underlay", "pod bridge", "XFRM interface", "libipsec TUN", "pod veth", "other")
    return sorted(found, key=lambda i: order.index(i.kind))


def interfaces(backend: Backend, node: str) -> list[Interface]:
    """What `node` has to capture on (one round trip each for links and addresses)."""
    n = backend.spec().node(node)  # UsageError for an unknown node
    links = backend.exec(node, commands.ip_links(), timeout=10)
    addrs = backend.exec(node, commands.ip_addresses(), timeout=10)
    if not links.ok:
        raise LabError(f"cannot list the interfaces of {node}: {last_line(links.stderr) or f'exit {links.returncode}'}")
    return classify_links(links.stdout, addrs.stdout, str(n.underlay_ip))


FETCH_EVERY_S = 3.0  # a VM's pcap copied here for the live verdict at most this often (one SSH command)


class CaptureSession:
    """One tcpdump on one node's interface. start(), then lines() until it ends (count reached,
    stop(), the node gone); summary() reads what it wrote so far; save() copies the pcap; close()
    stops it and removes its file."""

    def __init__(self, backend: Backend, node: str, iface: str | None = None, bpf: str = "",
                 count: int | None = None) -> None:
        self.backend, self.node, self.bpf, self.count = backend, node, bpf, count
        self.iface = iface or ""
        self.kind = ""
        self.proc: RunningCommand | None = None
        self.file: tuple[str, Path] | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._fetched_at = 0.0

    @property
    def pcap_path(self) -> Path | None:
        """The pcap here (on VMs, its last copy), or None where the backend keeps no pcap."""
        return self.file[1] if self.file else None

    def _fresh_pcap(self, *, force: bool) -> Path | None:
        """The pcap here, copied from the node first where it lives elsewhere (VMs): always with
        `force`, else when the last copy is older than FETCH_EVERY_S."""
        if self.file is None:
            return None
        remote, here = self.file
        if not self.backend.node_files_are_local and (force or time.monotonic() - self._fetched_at >= FETCH_EVERY_S):
            self.backend.fetch_node_file(self.node, remote, here)
            self._fetched_at = time.monotonic()
        return here

    def start(self) -> None:
        """Check the node, interface and filter (UsageError: one line), then start tcpdump."""
        ifaces = interfaces(self.backend, self.node)
        if not self.iface:
            under = [i for i in ifaces if i.kind == "underlay"]
            if not under:
                raise LabError(f"{self.node} has no interface with its underlay address; give --iface")
            self.iface = under[0].name
        match = [i for i in ifaces if i.name == self.iface]
        if not match:
            raise UsageError(f"{self.node} has no interface {self.iface!r}; it has "
                             + ", ".join(i.label() for i in ifaces))
        self.kind = match[0].kind
        if self.bpf:
            res = self.backend.exec(self.node, commands.tcpdump_compile(self.iface, self.bpf), timeout=10)
            if not res.ok:
                raise UsageError(f"bad --filter {self.bpf!r}: {last_line(res.stderr) or f'exit {res.returncode}'}")
        self.file = self.backend.capture_file(self.node, f"ipsec-lab-capture-{secrets.token_hex(4)}")
        argv = commands.tcpdump(self.iface, self.bpf, count=self.count, write=self.file[0] if self.file else None)
        with self._lock:
            if not self._stopped:  # stop() before tcpdump started: it never starts
                self.proc = self.backend.stream(self.node, argv)

    def lines(self) -> Iterator[str]:
        """tcpdump's decoded lines (without newlines) as packets arrive, until it ends."""
        if self.proc is None:
            return
        for line in self.proc.lines():
            yield line.rstrip("\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop tcpdump (by its PID: SIGTERM, SIGKILL after 5 s); idempotent, from any thread."""
        with self._lock:
            self._stopped = True
            if self.proc is not None:
                self.proc.stop()

    def summary(self, pod_net: IPv4Network | str) -> pcap.WireSummary | None:
        """What the pcap holds so far (ESP, UDP 4500, IKE, cleartext pod addresses); None without one."""
        try:
            path = self._fresh_pcap(force=False)
        except LabError:  # the node did not answer this time (rebooting): no newer copy
            path = self.pcap_path
        if path is None or not path.exists():
            return None
        try:
            return pcap.summarize(str(path), pod_net)
        except ValueError:  # tcpdump has not written the file header yet
            return None

    def save(self, dest: str | os.PathLike[str]) -> Path:
        """Copy the pcap (what was captured so far) to `dest`; returns its absolute path."""
        if self.file is None:
            raise UsageError(f"a pcap is not supported yet on {self.backend.name} nodes; the decoded lines are shown")
        try:
            path = self._fresh_pcap(force=True)
        except LabError as exc:
            raise LabError(f"cannot bring the capture's pcap here from {self.node}: {exc}") from None
        if path is None or not path.exists():
            raise LabError(f"the capture on {self.node} wrote no file (did tcpdump start?)")
        out = Path(dest).expanduser().resolve()
        shutil.copyfile(path, out)
        return out

    def close(self) -> None:
        """Stop tcpdump and remove its pcap from the node (and its copy here)."""
        self.stop()
        if self.file is None:
            return
        remote, here = self.file
        with contextlib.suppress(OSError):
            here.unlink()
        if not self.backend.node_files_are_local:
            with contextlib.suppress(LabError):  # a node that is gone took the file with it
                self.backend.exec(self.node, ["rm", "-f", remote], timeout=20)


def capture_during(session: CaptureSession, act: Callable[[], object], settle: float = 0.2,
                   start_timeout: float = 10.0) -> list[str]:
    """Start `session`, run `act` under it, stop it; returns the lines it printed. Waits until the
    capture is running (tcpdump's socket open, or its file written) before `act`, so nothing is missed."""
    lines: list[str] = []
    session.start()
    reader = threading.Thread(target=lambda: lines.extend(session.lines()), daemon=True, name="capture lines")
    reader.start()
    try:
        _wait_listening(session, start_timeout)
        act()
        time.sleep(settle)
    finally:
        session.stop()
        reader.join(timeout=10)
    return lines


def _wait_listening(session: CaptureSession, timeout: float) -> None:
    """tcpdump writes the pcap's header once its socket is open; where the file is not here (VMs), a
    short wait."""
    path = session.pcap_path
    if path is None or not session.backend.node_files_are_local:
        time.sleep(1.0)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and session.running:
        with contextlib.suppress(OSError):
            if path.stat().st_size >= 24:
                return
        time.sleep(0.02)
    if not session.running:
        raise LabError(f"tcpdump on {session.node} {session.iface} ended at once")


def describe(s: pcap.WireSummary | None) -> str:
    """One line of what an underlay capture saw."""
    if s is None:
        return "no pcap yet"
    return (f"{s.packets} packets: ESP {s.esp}, UDP 4500 {s.udp4500}, IKE {s.ike}, "
            f"cleartext pod address {s.cleartext_pod}")
