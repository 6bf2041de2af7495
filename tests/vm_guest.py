"""One VM from the offline box, for tests that need a stock Debian kernel (tests/test_netns_in_vm.py).

Plain QEMU, nothing else: the box's disk image (box.img, extracted from the cached box tar into a
temporary directory of the test's own, so the cache is never written), `-accel tcg,thread=multi
-cpu max` (or KVM where tui.vm.hypervisor.probe_accel says a stock kernel boots under it), user-mode
networking with `hostfwd=tcp:127.0.0.1:2222-:22`, all inside a network namespace of the VM's own
(ilab-<name>-vm), so the forwarded port lives there and nothing touches the host's namespace. SSH
goes as `vagrant` with Vagrant's insecure key, through a socket opened inside that namespace
(tui.vm.netns.connect) and handed to paramiko. The VM has no network beyond that port.

Cleanup (close(), an ExitStack, also after a failed step): kill QEMU by the PID it wrote (checked to
be a qemu process), delete the namespace, remove the temporary directory. leftovers() lists what
would have been left.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko

from tui.vm import box as vmbox
from tui.vm import hypervisor, netns

TMP_PARENT = Path("/var/tmp")
TMP_PREFIX = "ipsec-lab-vmguest-"
SSH_PORT = 2222
BOOT_TIMEOUT = 240.0  # under TCG on 2 busy cores a boot to SSH takes 25-60 s

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Run:
    cmd: str
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def tail(self, n: int = 40) -> str:
        lines = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).splitlines()
        return "\n".join(lines[-n:])

    def why(self) -> str:
        return "timed out" if self.rc == -1 else f"exit {self.rc}"


def insecure_private_key() -> Path:
    """Vagrant's insecure private key, beside keys/vagrant.pub in the installed Vagrant."""
    key = vmbox.vagrant_insecure_key().with_suffix("")
    if not key.is_file():
        raise FileNotFoundError(f"{key}: Vagrant's insecure private key is not beside {key}.pub")
    return key


def qemu_pids_of(pidfile_dir: Path) -> list[int]:
    """QEMU processes whose command line names a file under `pidfile_dir` (ours, whatever the PID file says)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"qemu-system" in argv[0] and any(str(pidfile_dir).encode() in a for a in argv):
            found.append(int(d))
    return found


class GuestVM:
    """One VM booted from the box; a context manager that always cleans up."""

    def __init__(self, name: str, box: Path, *, memory_mb: int = 2048, cpus: int = 2, log: Log = _quiet) -> None:
        self.name, self.box, self.memory_mb, self.cpus, self.log = name, box, memory_mb, cpus, log
        self.ns = f"ilab-{name}-vm"
        self.dir: Path | None = None
        self.pid: int | None = None
        self.accel = ""
        self.accel_why = ""
        self.client: paramiko.SSHClient | None = None
        self.timings: dict[str, float] = {}
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "GuestVM":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def start(self) -> None:
        t0 = time.monotonic()
        self.dir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=TMP_PARENT))
        self._stack.callback(self._remove_dir)
        subprocess.run(["tar", "-xf", str(self.box), "-C", str(self.dir), "box.img"], check=True, timeout=300)
        self.timings["extract_s"] = time.monotonic() - t0

        kernel = vmbox.kernel_file(vmbox.Recipe())
        self.accel, self.accel_why = hypervisor.probe_accel(kernel, cache=vmbox.cache_dir() / "accel-probe.json")
        self.log(f"vm: acceleration {self.accel} ({self.accel_why})")

        self._stack.callback(self._delete_namespace)
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, timeout=30)

        self._stack.callback(self._kill_qemu)
        t0 = time.monotonic()
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
        argv = ["ip", "netns", "exec", self.ns, "qemu-system-x86_64", *accel, "-machine", "q35",
                "-smp", str(self.cpus), "-m", str(self.memory_mb),
                "-drive", f"file={self.dir / 'box.img'},if=virtio,format=qcow2",
                "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{SSH_PORT}-:22",
                "-display", "none", "-serial", f"file:{self.dir / 'serial.log'}",
                "-pidfile", str(self.dir / "qemu.pid"), "-daemonize"]
        self.log("vm: $ " + shlex.join(argv))
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            raise RuntimeError(f"qemu did not start (exit {cp.returncode}): {cp.stderr.strip()[-2000:]}")
        self.pid = int((self.dir / "qemu.pid").read_text().strip())
        self._connect(time.monotonic() + BOOT_TIMEOUT)
        self.timings["boot_s"] = time.monotonic() - t0
        self.log(f"vm: SSH answered {self.timings['boot_s']:.1f} s after QEMU started (pid {self.pid})")

    def _connect(self, deadline: float) -> None:
        key = paramiko.RSAKey.from_private_key_file(str(insecure_private_key()))
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.pid is not None and not Path(f"/proc/{self.pid}").exists():
                raise RuntimeError(f"qemu (pid {self.pid}) exited during boot; serial console:\n{self.serial_tail()}")
            sock: socket.socket | None = None
            try:
                sock = netns.connect(self.ns, "127.0.0.1", SSH_PORT, timeout=10)
                client = paramiko.SSHClient()
                client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # host keys are made at first boot
                client.connect("127.0.0.1", port=SSH_PORT, username="vagrant", pkey=key, sock=sock, timeout=15,
                               banner_timeout=30, auth_timeout=30, allow_agent=False, look_for_keys=False)
                self.client = client
                self._stack.callback(client.close)
                return
            except (OSError, paramiko.SSHException, EOFError) as exc:
                last = exc
                if sock is not None:
                    sock.close()
                time.sleep(2)
        raise TimeoutError(f"no SSH login to the VM within {BOOT_TIMEOUT:.0f} s (last: {last!r}); serial console:\n"
                           f"{self.serial_tail()}")

    def serial_tail(self, n: int = 30) -> str:
        if self.dir is None:
            return ""
        try:
            return "\n".join((self.dir / "serial.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no serial log)"

    # ------------------------------------------------------------------ commands and files
    def run(self, cmd: str, *, timeout: float, on_line: Log | None = None) -> Run:
        """`cmd` in a shell on the VM as vagrant; its output streamed line by line; rc -1 on timeout."""
        assert self.client is not None, "not connected"
        on_line = on_line if on_line is not None else (lambda s: self.log(f"  | {s}"))
        self.log(f"vm $ {cmd}")
        t0 = time.monotonic()
        transport = self.client.get_transport()
        assert transport is not None
        chan = transport.open_session()
        chan.exec_command(cmd)
        out, err = bytearray(), bytearray()
        pending = b""
        deadline = t0 + timeout
        timed_out = False
        while True:
            got = False
            if chan.recv_ready():
                data = chan.recv(65536)
                out += data
                pending += data
                got = True
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip("\r"))
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                err += data
                got = True
                for line in data.decode(errors="replace").splitlines():
                    on_line(line)
            if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if time.monotonic() > deadline:
                timed_out = True
                break
            if not got:
                time.sleep(0.05)
        if pending:
            on_line(pending.decode(errors="replace"))
        rc = -1 if timed_out else chan.recv_exit_status()
        chan.close()
        return Run(cmd, rc, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - t0)

    def put(self, local: Path, remote: str) -> None:
        assert self.client is not None, "not connected"
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        assert self.client is not None, "not connected"
        with self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))

    # ------------------------------------------------------------------ cleanup
    def _kill_qemu(self) -> None:
        if self.client is not None:
            self.client.close()
        pid = self.pid
        if pid is None and self.dir is not None:
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.dir / "qemu.pid").read_text().strip())
        if pid is not None:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                comm = ""
            if comm.startswith("qemu"):
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
            elif comm:
                self.log(f"vm: pid {pid} is {comm!r}, not qemu: not killed")
        if self.dir is not None:  # a QEMU that wrote no PID file yet: found by its command line
            for other in qemu_pids_of(self.dir):
                os.kill(other, signal.SIGKILL)

    def _delete_namespace(self) -> None:
        if not Path(f"/run/netns/{self.ns}").exists():
            return
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, timeout=30).stdout.split()
        if pids:
            self.log(f"vm: processes still in {self.ns}: {pids}; not deleting it")
            return
        subprocess.run(["ip", "netns", "del", self.ns], check=False, timeout=30)

    def _remove_dir(self) -> None:
        if self.dir is None or not self.dir.is_dir():
            return
        assert self.dir.parent == TMP_PARENT and self.dir.name.startswith(TMP_PREFIX), self.dir
        if qemu_pids_of(self.dir):
            self.log(f"vm: a qemu still uses {self.dir}; not removing it")
            return
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(self.dir)], check=False, timeout=120)

    def leftovers(self) -> list[str]:
        left = []
        if self.pid is not None and Path(f"/proc/{self.pid}").exists():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{self.pid}/comm").read_text().startswith("qemu"):
                    left.append(f"qemu pid {self.pid}")
        if self.dir is not None:
            left += [f"qemu pid {p}" for p in qemu_pids_of(self.dir)]
            if self.dir.exists():
                left.append(f"directory {self.dir}")
        if Path(f"/run/netns/{self.ns}").exists():
            left.append(f"namespace {self.ns}")
        return left
