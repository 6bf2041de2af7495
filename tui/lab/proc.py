"""Running commands and tracking the processes a lab starts.

A process is identified by (pid, start time), read from /proc, so a later command never signals
a recycled PID that now belongs to someone else. Processes are stopped by PID, never by name.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

from .errors import LabError

_libc = ctypes.CDLL(None, use_errno=True)
MNT_DETACH = 2


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    what: str | None = None,
) -> Result:
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed (run scripts/setup.sh, or `ipsec-lab doctor --install`)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what or ' '.join(argv)} did not finish within {timeout:.0f} s") from None
    res = Result(tuple(argv), cp.returncode, cp.stdout, cp.stderr)
    if check and not res.ok:
        raise LabError(f"{what or ' '.join(argv)} failed: {last_line(cp.stderr or cp.stdout) or f'exit {cp.returncode}'}")
    return res


def last_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


# -- processes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcRef:
    pid: int
    start: int  # clock ticks since boot, field 22 of /proc/PID/stat

    def to_list(self) -> list[int]:
        return [self.pid, self.start]

    @classmethod
    def from_list(cls, v: Sequence[int] | None) -> "ProcRef | None":
        return cls(int(v[0]), int(v[1])) if v else None


def start_time(pid: int) -> int | None:
    try:
        raw = open(f"/proc/{pid}/stat", "rb").read().decode(errors="replace")
    except OSError:
        return None
    # comm may contain spaces and parentheses; fields after the last ')' are fixed.
    rest = raw[raw.rindex(")") + 2 :].split()
    if rest[0] == "Z":
        return None
    return int(rest[19])


def alive(ref: ProcRef | None) -> bool:
    return ref is not None and start_time(ref.pid) == ref.start


def uptime_of(ref: ProcRef | None) -> float | None:
    if ref is None or not alive(ref):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return max(0.0, up - ref.start / hz)


def signal_ref(ref: ProcRef | None, sig: int) -> bool:
    if ref is None or not alive(ref):
        return False
    try:
        os.kill(ref.pid, sig)
        return True
    except ProcessLookupError:
        return False


def wait_gone(refs: Sequence[ProcRef], timeout: float) -> list[ProcRef]:
    """Wait until every process is gone (reaped if it is our child); return those still alive."""
    deadline = time.monotonic() + timeout
    pending = [r for r in refs if alive(r)]
    while pending and time.monotonic() < deadline:
        for r in pending:
            try:
                os.waitpid(r.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        pending = [r for r in pending if alive(r)]
        if pending:
            time.sleep(0.005)
    return pending


def stop(refs: Sequence[ProcRef | None], *, grace: float = 2.0, sig: int = signal.SIGTERM) -> None:
    """Stop our processes by PID: the given signal, then SIGKILL after `grace` seconds."""
    live = [r for r in refs if r is not None and alive(r)]
    for r in live:
        signal_ref(r, sig)
    left = wait_gone(live, grace)
    for r in left:
        signal_ref(r, signal.SIGKILL)
    left = wait_gone(left, 5.0)
    if left:
        raise LabError(f"processes {', '.join(str(r.pid) for r in left)} did not stop")


# -- mounts -----------------------------------------------------------------------------------
def mounts_under(path: str) -> list[str]:
    """Mount points at or below `path` in our mount namespace, deepest first."""
    base = os.path.realpath(path).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == base or mp.startswith(base + "/"):
                found.append(mp)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def umount_lazy(path: str) -> None:
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (22, 2):  # EINVAL: not a mount point; ENOENT: gone
            raise LabError(f"cannot unmount {path}: {os.strerror(err)}")


def umount_all_under(path: str) -> None:
    for mp in mounts_under(path):
        umount_lazy(mp)


class RunningCommand(Protocol):
    """A command running on a node whose output is read while it runs (Backend.stream)."""

    def lines(self) -> Iterator[str]: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def stop(self) -> None: ...


class NodeProcess:
    """A command running on a node, its output read line by line while it runs: the ping loop that
    measures a fault's gap, `ipsec-lab exec`. This one is a local process (a namespace node's
    argv); the Vagrant backend's runs over the node's SSH connection (backends/ssh.py)."""

    def __init__(self, argv: Sequence[str], *, stderr_to_parent: bool = False) -> None:
        self._p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=None if stderr_to_parent else subprocess.DEVNULL, text=True)

    def lines(self) -> Iterator[str]:
        """stdout, line by line (with their newlines), until the command ends."""
        assert self._p.stdout is not None
        yield from self._p.stdout

    def poll(self) -> int | None:
        return self._p.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._p.wait(timeout=timeout)

    def stop(self) -> None:
        """Terminate it (kill after 5 s)."""
        if self._p.poll() is None:
            self._p.terminate()
        try:
            self._p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._p.kill()
            self._p.wait(timeout=5)
