"""The SSH layer of the Vagrant backend: Fabric connections to the nodes, built from
`vagrant ssh-config NODE` text, one per node, reused; commands run as root.

Where the VMs' networks live in the lab's own network namespace (the lab's libvirtd,
tui/vm/hypervisor.py), the TCP connection is opened inside that namespace (tui/vm/netns.connect)
and handed to paramiko as its socket: this process never leaves the host's namespace."""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from ..lab.errors import LabError
from ..lab.proc import Result
from ..vm.netns import connect as connect_in_netns

def ssh_host_alias(ssh_config: str) -> str:
    for line in ssh_config.splitlines():
        bits = line.split()
        if len(bits) >= 2 and bits[0].lower() == "host":
            return bits[1]
    raise LabError("vagrant ssh-config printed no Host entry")


def ssh_target(ssh_config: str) -> tuple[str, int]:
    """(HostName, Port) of the first Host entry."""
    host, port = "", 22
    for line in ssh_config.splitlines():
        bits = line.split()
        if len(bits) >= 2 and bits[0].lower() == "hostname":
            host = bits[1]
        elif len(bits) >= 2 and bits[0].lower() == "port":
            port = int(bits[1])
    if not host:
        raise LabError("vagrant ssh-config printed no HostName")
    return host, port


def _quiet_paramiko() -> None:
    """paramiko's transport thread logs a failed handshake with a traceback; with no handler set,
    Python's last-resort handler writes it to stderr, over the TUI. The same failure reaches the
    user as one LabError line ("cannot reach NODE over SSH: ..."), so its log goes nowhere."""
    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


class NodeShells:
    """Fabric connections to the nodes, built from `vagrant ssh-config NODE`, one per node, reused.

    Commands run as root (sudo -n when the SSH user is not root, as Vagrant's `vagrant` user is).
    """

    def __init__(self, ssh_config: Callable[[str], str], connect_timeout: int = 15,
                 netns: Callable[[], str | None] = lambda: None) -> None:
        self._ssh_config = ssh_config
        self._netns = netns
        self._timeout = connect_timeout
        self._conns: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def _node_lock(self, node: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(node, threading.Lock())

    def connection(self, node: str) -> Any:  # a fabric.Connection (Fabric ships no types)
        import fabric
        import paramiko

        _quiet_paramiko()
        with self._node_lock(node):
            conn = self._conns.get(node)
            if conn is not None and conn.is_connected:
                return conn
            text = self._ssh_config(node)
            cfg = fabric.Config(ssh_config=paramiko.SSHConfig.from_text(text))
            kwargs: dict[str, Any] = {"allow_agent": False, "look_for_keys": False}
            conn = None
            try:
                ns = self._netns()
                if ns is not None:
                    kwargs["sock"] = connect_in_netns(ns, *ssh_target(text), timeout=self._timeout)
                conn = fabric.Connection(ssh_host_alias(text), config=cfg, connect_timeout=self._timeout,
                                         connect_kwargs=kwargs)
                conn.open()
            except Exception as exc:  # paramiko, socket and proxy errors alike
                for closable in (conn, kwargs.get("sock")):
                    if closable is not None:
                        with contextlib.suppress(Exception):
                            closable.close()
                raise LabError(f"cannot reach {node} over SSH: {exc.__class__.__name__}: {exc}".rstrip(": ")) from None
            self._conns[node] = conn
            return conn

    @staticmethod
    def command_line(user: str, argv: Sequence[str]) -> str:
        cmd = shlex.join(argv)
        return cmd if user == "root" else "sudo -n -- " + cmd

    def run(self, node: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0) -> Result:
        """Run on the Fabric connection's SSH transport, one channel per command. (Not through
        Connection.run: invoke's stdin thread turns a command that exits before reading all its
        input, e.g. `sh -s` stopping at a failed line, into an exception that loses the result.)"""
        conn = self.connection(node)
        try:
            chan = conn.transport.open_session(timeout=self._timeout)
        except Exception as exc:
            self.forget(node)
            raise LabError(f"lost the SSH connection to {node}: {exc.__class__.__name__}: {exc}") from None
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(self.command_line(conn.user, argv))

            def feed() -> None:
                with contextlib.suppress(Exception):  # the command may exit without reading it all
                    if input:
                        chan.sendall(input.encode())
                    chan.shutdown_write()

            threading.Thread(target=feed, name=f"ssh-stdin-{node}", daemon=True).start()
            deadline = time.monotonic() + timeout
            while True:
                busy = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not busy:
                    break
                if time.monotonic() > deadline:
                    raise LabError(f"{' '.join(argv)} on {node} did not finish within {timeout:.0f} s")
                if not busy:
                    time.sleep(0.002)
            code = chan.recv_exit_status() if chan.exit_status_ready() else -1
        except LabError:
            raise
        except Exception as exc:
            self.forget(node)
            raise LabError(f"lost the SSH connection to {node}: {exc.__class__.__name__}: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        return Result(tuple(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def spawn(self, node: str, argv: Sequence[str], *, stderr_to_parent: bool = False) -> "SshProcess":
        """Start argv on the node; read its output while it runs (a ping loop, `ipsec-lab exec`)."""
        return SshProcess(self, node, argv, stderr_to_parent=stderr_to_parent)

    def get(self, node: str, remote: str, local: str) -> None:
        conn = self.connection(node)
        try:
            conn.get(remote, local=local)
        except Exception as exc:
            raise LabError(f"cannot fetch {remote} from {node}: {exc}") from None

    def forget(self, node: str) -> None:
        with self._node_lock(node):
            conn = self._conns.pop(node, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        for node in list(self._conns):
            self.forget(node)


class SshProcess:
    """A command on a node over its SSH connection, its stdout read while it runs (the same
    interface as lab.proc.NodeProcess). Its first output line is its PID, so stop() can end it:
    closing the channel alone would leave it running on the node."""

    def __init__(self, shells: NodeShells, node: str, argv: Sequence[str], *, stderr_to_parent: bool) -> None:
        self._shells, self._node = shells, node
        conn = shells.connection(node)
        try:
            self._chan = conn.transport.open_session(timeout=15)
            wrapped = ["sh", "-c", 'echo "$$"; exec "$@"', "sh", *argv]
            self._chan.exec_command(NodeShells.command_line(conn.user, wrapped))
        except Exception as exc:
            shells.forget(node)
            raise LabError(f"lost the SSH connection to {node}: {exc.__class__.__name__}: {exc}") from None
        self._out = self._chan.makefile("rb")
        self.pid = self._out.readline().decode(errors="replace").strip()
        if stderr_to_parent:
            threading.Thread(target=self._pump_stderr, name=f"ssh-stderr-{node}", daemon=True).start()

    def _pump_stderr(self) -> None:
        import sys

        with contextlib.suppress(Exception):
            for raw in self._chan.makefile_stderr("rb"):
                sys.stderr.write(raw.decode(errors="replace"))
                sys.stderr.flush()

    def lines(self) -> Iterator[str]:
        with contextlib.suppress(Exception):  # a connection lost mid-way ends the output
            for raw in self._out:
                yield raw.decode(errors="replace")

    def poll(self) -> int | None:
        return self._chan.recv_exit_status() if self._chan.exit_status_ready() else None

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._chan.exit_status_ready():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the command on {self._node} is still running")
            time.sleep(0.02)
        return int(self._chan.recv_exit_status())

    def stop(self) -> None:
        if self.poll() is None and self.pid.isdigit():
            with contextlib.suppress(LabError):
                self._shells.run(self._node, ["kill", self.pid], timeout=10)
            with contextlib.suppress(TimeoutError):
                self.wait(timeout=5)
        with contextlib.suppress(Exception):
            self._chan.close()
