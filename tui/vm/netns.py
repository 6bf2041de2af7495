"""Reaching into the network namespace where the lab's own libvirtd keeps its bridges.

`setns(CLONE_NEWNET)` switches only the calling thread, and a process a thread starts is born
in that thread's namespace. So a short-lived thread enters the namespace and runs one function:
`vagrant` started from it talks to VMs on the namespace's bridges, and a socket connected from
it reaches a VM's sshd (the socket keeps working from any thread afterwards). The process
itself never leaves the host's namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def in_netns(ns: str | None, fn: Callable[[], T]) -> T:
    """fn() run in network namespace `ns` (None: here), on a thread of its own that then ends."""
    if ns is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    t = threading.Thread(target=run, name=f"in-netns-{ns}", daemon=True)
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def connect(ns: str | None, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to host:port made inside `ns`; usable from any thread (paramiko's `sock=`)."""
    return in_netns(ns, lambda: socket.create_connection((host, port), timeout=timeout))
