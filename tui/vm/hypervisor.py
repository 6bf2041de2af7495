"""A hypervisor for the lab's VMs: the machine's own libvirtd where one runs, else one the lab starts.

Where no system libvirtd answers (a CI machine, a container without systemd), the lab runs
virtlogd and libvirtd itself, inside a network namespace of its own (ilab-<lab>-hv) and a private
mount namespace in which /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt
and /run/libvirt are the lab's own directories. So libvirt's bridges, dnsmasq and iptables chains
never touch the host's network namespace, its configuration (a qemu.conf that runs QEMU as root
without a security driver) never touches the host's /etc, and the storage pool lives under the
lab's state. Clients (virsh, vagrant-libvirt) reach it through its socket, from any namespace:
`qemu:///system?socket=<state>/run/libvirt-sock`.

`stop()` destroys the domains, stops the daemons by the PIDs they wrote (checked against their
command line), kills what is left in the namespace (only the lab's processes live there), deletes
the namespace and the lab's directories. It works after a `kill -9` of ipsec-lab: all it needs is
the state directory's path.

Acceleration is probed, not assumed (probe_accel): KVM where the box's stock kernel really boots
under it, else QEMU's TCG (KVM-PVM, as on this project's CI machines, hangs a stock kernel).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..lab.errors import LabError, UsageError

Line = Callable[[str], None]

POOL = "ipsec-lab"
DIRS = {"etc": "/etc/libvirt", "lib": "/var/lib/libvirt", "log": "/var/log/libvirt", "cache": "/var/cache/libvirt"}
QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
SYSTEM_SOCKET = Path("/run/libvirt/libvirt-sock")
TOOLS = {"libvirtd": "libvirt-daemon", "virtlogd": "libvirt-daemon", "virsh": "libvirt-clients",
         "qemu-system-x86_64": "qemu-system-x86", "dnsmasq": "dnsmasq-base"}
# libvirtd refuses to start without these users, even when qemu.conf runs QEMU as root;
# scripts/setup.sh --vm makes them (as libvirt-daemon-system's own scripts would).
USERS = ("libvirt-qemu", "libvirt-dnsmasq")

# Runs in `ip netns exec NS`, which already gives a private mount namespace: a private /run (so
# nothing lands in the host's), then the lab's directories over libvirt's, then the daemons.
# $1 is the state directory (the daemons write their PIDs there), $2 the directory that becomes
# /run/libvirt (its socket path must stay under the 108 bytes of a unix socket address).
WRAPPER = (
    'S="$1"; mount -t tmpfs -o mode=755 ipsec-lab-run /run && mkdir -p /run/libvirt && '
    'mount --bind "$2" /run/libvirt && '
    'mount --bind "$S/etc" /etc/libvirt && mount --bind "$S/lib" /var/lib/libvirt && '
    'mount --bind "$S/log" /var/log/libvirt && mount --bind "$S/cache" /var/cache/libvirt && '
    'virtlogd -d -p "$S/virtlogd.pid" && exec libvirtd -d -p "$S/libvirtd.pid"'
)


@dataclass(frozen=True)
class Hypervisor:
    """Where the lab's VMs run, as the Vagrantfile and virsh need it."""

    uri: str
    netns: str | None  # the namespace the VMs' networks live in; None: the host's (a system libvirtd)
    own: bool  # started by the lab (and stopped by `down`)
    accel: str  # "kvm" or "tcg"
    accel_why: str
    pool: str
    pool_dir: str

    @property
    def driver(self) -> str:
        """vagrant-libvirt's `driver`: libvirt's domain type."""
        return "kvm" if self.accel == "kvm" else "qemu"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def namespace(lab: str) -> str:
    return f"ilab-{lab}-hv"


def system_libvirtd() -> bool:
    """A libvirtd of the machine's own answers on the standard socket."""
    if not SYSTEM_SOCKET.exists() or shutil.which("virsh") is None:
        return False
    cp = subprocess.run(["virsh", "-c", "qemu:///system", "uri"], capture_output=True, text=True, timeout=15,
                        stdin=subprocess.DEVNULL)
    return cp.returncode == 0


def check_tools() -> None:
    for tool, pkg in TOOLS.items():
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is missing, and the lab's VMs need it: install the Debian package {pkg} "
                             "(scripts/setup.sh --vm)")
    import pwd

    for user in USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise UsageError(f"libvirtd needs the system user {user}: run scripts/setup.sh --vm, which makes it") from None


# ---------------------------------------------------------------------------------- acceleration
def probe_accel(kernel: Path | None, *, timeout: float = 20.0, cache: Path | None = None) -> tuple[str, str]:
    """("kvm", why) where the box's kernel boots under KVM here, else ("tcg", why).

    The probe boots the kernel with no root file system under `-enable-kvm`: a kernel that works
    gets as far as looking for its root and panics; under KVM-PVM a stock kernel hangs early. The
    answer is cached per host kernel and guest kernel, since a hang costs the whole timeout."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm: QEMU emulates the CPU (TCG)"
    if kernel is None or not kernel.exists():
        return "tcg", "no box kernel to probe KVM with: QEMU emulates the CPU (TCG)"
    key = f"{os.uname().release}:{kernel.name}:{kernel.stat().st_size}"
    if cache is not None and cache.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            doc = json.loads(cache.read_text())
            if doc["key"] == key:
                return doc["accel"], doc["why"]
    argv = ["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        text = out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        text = out.decode(errors="replace")
    if "Kernel panic" in text or "VFS:" in text:
        result = ("kvm", "a stock kernel boots under /dev/kvm here")
    else:
        pvm = " (this /dev/kvm is KVM-PVM, which runs only PVM-aware guest kernels)" if Path("/sys/module/kvm_pvm").exists() else ""
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no output")[:120]
        result = ("tcg", f"a stock kernel does not boot under /dev/kvm here{pvm}, last line {last!r}: "
                         "QEMU emulates the CPU (TCG)")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "accel": result[0], "why": result[1]}))
    return result


# ---------------------------------------------------------------------------------- the lab's libvirtd
class PrivateLibvirt:
    """virtlogd + libvirtd of one lab, in its namespace, with its own directories under `state`."""

    def __init__(self, lab: str, state: Path, run: Path | None = None) -> None:
        self.lab, self.state, self.ns = lab, state, namespace(lab)
        self.run = run or state / "run"  # libvirtd's /run/libvirt: a short path (its socket is there)

    @property
    def socket(self) -> Path:
        return self.run / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    @property
    def pool_dir(self) -> Path:
        return self.state / "pool"

    def virsh(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cp = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
        if check and cp.returncode != 0:
            raise LabError(f"virsh {' '.join(args)} failed: {(cp.stderr or cp.stdout).strip().splitlines()[-1:]}")
        return cp

    def start(self, on_line: Line) -> None:
        check_tools()
        for sub in ("etc", "lib", "log", "cache", "pool"):
            (self.state / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.run.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.state / "etc" / "qemu.conf").write_text(QEMU_CONF)
        for target in DIRS.values():  # mount points: scripts/setup.sh --vm makes them, as libvirt's packages would
            if not Path(target).is_dir():
                raise UsageError(f"{target} is missing: run scripts/setup.sh --vm, which makes libvirt's directories")
        if subprocess.run(["ip", "netns", "add", self.ns], capture_output=True, text=True).returncode != 0:
            raise LabError(f"network namespace {self.ns} exists already: `ipsec-lab --backend vagrant --lab {self.lab} down` removes it")
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        cp = subprocess.run(["ip", "netns", "exec", self.ns, "sh", "-c", WRAPPER, "sh", str(self.state), str(self.run)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if cp.returncode != 0:
            raise LabError(f"the lab's libvirtd did not start: {(cp.stderr or cp.stdout).strip()[-300:] or 'no output'}")
        deadline = time.monotonic() + 30
        while self.virsh("uri", check=False, timeout=10).returncode != 0:
            if time.monotonic() > deadline:
                raise LabError(f"the lab's libvirtd does not answer on {self.socket}; see {self.state / 'log'}")
            time.sleep(0.2)
        on_line(f"libvirtd of lab {self.lab} runs in namespace {self.ns} (pid {self._pid('libvirtd')})")
        pool_xml = (f"<pool type='dir'><name>{POOL}</name><target><path>{self.pool_dir}</path></target></pool>")
        xml = self.state / "pool.xml"
        xml.write_text(pool_xml)
        self.virsh("pool-define", str(xml))
        self.virsh("pool-start", POOL)

    def _pid(self, daemon: str) -> int | None:
        """The PID a daemon wrote, if that process is still that daemon (PIDs are reused)."""
        try:
            pid = int((self.state / f"{daemon}.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if cmdline and Path(cmdline[0].decode(errors="replace")).name == daemon else None

    def running(self) -> bool:
        return self._pid("libvirtd") is not None

    def stop(self, on_line: Line) -> list[str]:
        """Everything of the lab's hypervisor, gone; safe to call twice, and after a crash."""
        removed: list[str] = []
        if self.running():
            cp = self.virsh("list", "--name", check=False, timeout=20)
            for dom in [d for d in cp.stdout.split() if d]:
                self.virsh("destroy", dom, check=False, timeout=30)
                removed.append(f"domain {dom}")
        for daemon in ("libvirtd", "virtlogd"):
            pid = self._pid(daemon)
            if pid is not None:
                os.kill(pid, signal.SIGTERM)
                removed.append(f"{daemon} (pid {pid})")
        deadline = time.monotonic() + 10
        while (self._pid("libvirtd") or self._pid("virtlogd")) and time.monotonic() < deadline:
            time.sleep(0.1)
        removed += self._kill_namespace()
        if os.path.exists(f"/run/netns/{self.ns}"):
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            removed.append(f"namespace {self.ns}")
        if self.state.exists():
            shutil.rmtree(self.state, ignore_errors=True)
            removed.append(f"hypervisor state {self.state}")
        if self.run.exists():
            shutil.rmtree(self.run, ignore_errors=True)
        for r in removed:
            on_line(f"removed {r}")
        return removed

    def _kill_namespace(self) -> list[str]:
        """Whatever still runs in the lab's namespace (QEMU, dnsmasq): only the lab's processes live there."""
        if not os.path.exists(f"/run/netns/{self.ns}"):
            return []
        killed: list[str] = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            cp = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
            pids = [int(p) for p in cp.stdout.split()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    if sig == signal.SIGTERM:
                        killed.append(f"process {pid} in {self.ns}")
            if not pids:
                break
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True,
                                                                 text=True).stdout.strip():
                time.sleep(0.1)
        return killed

    def hypervisor(self, accel: tuple[str, str]) -> Hypervisor:
        return Hypervisor(self.uri, self.ns, True, accel[0], accel[1], POOL, str(self.pool_dir))
