"""The pods' HTTP servers on one netns node: one small process per node, not one per pod.

It runs inside the node (its /run is the node's) and, for every pod listed in
/run/ipsec-lab-pods.json, enters the pod's network namespace just long enough to open a
listening socket on :8080 there, so each pod really answers from its own address. It replies
exactly like the seed's kubernetes-bootcamp image. A control socket takes "sync" (re-read the
pod list, open and close sockets) and answers "ok N" once every listed pod is listening.

This stands in for the container runtime only; there is no kubelet. Run as
`python -m tui.backends.podserver` inside a node.
"""

from __future__ import annotations

import ctypes
import json
import os
import selectors
import socket
import sys

CLONE_NEWNET = 0x40000000
POD_LIST = "/run/ipsec-lab-pods.json"
CONTROL = "/run/ipsec-lab-pods.sock"
PORT = 8080


def reply_body(pod_name: str) -> bytes:
    return f"Hello Kubernetes bootcamp! | Running on: {pod_name} | v=1\n".encode()


def http_response(pod_name: str) -> bytes:
    body = reply_body(pod_name)
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def listen_in(netns_path: str, own_ns_fd: int) -> socket.socket:
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(fd)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", PORT))
            s.listen(128)
            s.setblocking(False)
            return s
        finally:
            _setns(own_ns_fd)
    finally:
        os.close(fd)


class PodServer:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.own_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
        self.listeners: dict[str, tuple[str, socket.socket]] = {}  # pod -> (netns, socket)
        self.buffers: dict[socket.socket, bytes] = {}
        if os.path.exists(CONTROL):
            os.unlink(CONTROL)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(CONTROL)
        self.control.listen(16)
        self.sel.register(self.control, selectors.EVENT_READ, ("control", None))

    def sync(self) -> str:
        try:
            with open(POD_LIST) as f:
                wanted: dict[str, str] = json.load(f)
        except FileNotFoundError:
            wanted = {}
        errors = []
        for pod in list(self.listeners):
            netns, sock = self.listeners[pod]
            if wanted.get(pod) != netns:
                self.sel.unregister(sock)
                sock.close()
                del self.listeners[pod]
        for pod, netns in wanted.items():
            if pod in self.listeners:
                continue
            try:
                sock = listen_in(netns, self.own_ns)
            except OSError as exc:
                errors.append(f"{pod}: {exc}")
                continue
            self.listeners[pod] = (netns, sock)
            self.sel.register(sock, selectors.EVENT_READ, ("listen", pod))
        if errors:
            return "error " + "; ".join(errors)
        return f"ok {len(self.listeners)}"

    def serve_forever(self) -> None:
        print(self.sync(), flush=True)
        while True:
            for key, _ in self.sel.select():
                kind, data = key.data
                sock = key.fileobj
                assert isinstance(sock, socket.socket)  # only sockets are registered
                if kind == "control":
                    self._control(sock)
                elif kind == "listen":
                    self._accept(sock, data)
                else:
                    self._read(sock, data)

    def _control(self, sock: socket.socket) -> None:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(2.0)
            try:
                cmd = conn.recv(64).decode().strip()
                answer = self.sync() if cmd == "sync" else f"error unknown command {cmd!r}"
                conn.sendall(answer.encode() + b"\n")
            except OSError:
                pass

    def _accept(self, sock: socket.socket, pod: str) -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        self.buffers[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, ("client", pod))

    def _read(self, conn: socket.socket, pod: str) -> None:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        buf = self.buffers.get(conn, b"") + data
        if data and b"\r\n\r\n" not in buf and len(buf) < 16384:
            self.buffers[conn] = buf
            return
        if data or buf:
            try:
                conn.send(http_response(pod))
            except OSError:
                pass
        self.sel.unregister(conn)
        self.buffers.pop(conn, None)
        conn.close()


def main() -> int:
    # `--run DIR`: where the pod list and the control socket live (default /run: a netns node's
    # own /run, a VM's /run). tests/test_nodepods.py passes a directory of its own.
    global POD_LIST, CONTROL
    if sys.argv[1:2] == ["--run"] and len(sys.argv) == 3:
        POD_LIST = os.path.join(sys.argv[2], os.path.basename(POD_LIST))
        CONTROL = os.path.join(sys.argv[2], os.path.basename(CONTROL))
    elif len(sys.argv) > 1:
        print("usage: podserver.py [--run DIR]", file=sys.stderr)
        return 2
    try:
        PodServer().serve_forever()
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
