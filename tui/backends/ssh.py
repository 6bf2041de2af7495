"""The SSH layer of the Vagrant backend: Fabric connections to the nodes, built from
`vagrant ssh-config NODE` text, one per node, reused; commands run as root."""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import time
from typing import Any, Callable, Sequence

from ..lab.errors import LabError
from ..lab.proc import Result

def ssh_host_alias(ssh_config: str) -> str:
    for line in ssh_config.splitlines():
        bits = line.split()
        if len(bits) >= 2 and bits[0].lower() == "host":
            return bits[1]
    raise LabError("vagrant ssh-config printed no Host entry")


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

    def __init__(self, ssh_config: Callable[[str], str], connect_timeout: int = 15) -> None:
        self._ssh_config = ssh_config
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
            conn = fabric.Connection(ssh_host_alias(text), config=cfg, connect_timeout=self._timeout,
                                     connect_kwargs={"allow_agent": False, "look_for_keys": False})
            try:
                conn.open()
            except Exception as exc:  # paramiko, socket and proxy errors alike
                with contextlib.suppress(Exception):
                    conn.close()
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
