"""The pods of one offline VM node (node mode "none"): the netns backend's pod logic, run on the node.

The Vagrant backend copies this file to /usr/local/lib/ipsec-lab/nodepods.py on each VM and calls it
over SSH as root, with the VM's own python3; hence the standard library only and nothing from tui
(like podserver.py). It does what tui/backends/netns.py does from the host for a netns node:

- a pod is a network namespace (a file under <run>/ipsec-lab/netns, bind-mounted by
  `unshare --net=FILE`, lo up), attached by the real CNI plugins: plugins[0] of the rendered
  conflist (bridge + host-local on cni0), called with CNI_* in the environment as a runtime would;
- podserver.py (ipsec-lab-pods.service) answers HTTP on :8080 in every pod: this program writes the
  pod list (<run>/ipsec-lab-pods.json, name -> namespace) and sends "sync" on its control socket;
- the pods are recorded in <state>/pods.json, on disk, so that `restore` (run by the unit at boot)
  brings them back after a reboot: same names, fresh namespaces and addresses, one more restart.

    python3 nodepods.py [--conflist P] [--cni-bin D] [--state D] [--run D] COMMAND ...
      add NAME...          create pods; prints the JSON list of all pods
      del NAME...          delete pods; prints the list
      list                 prints the list (a pod whose namespace is gone has ip "")
      restore              recreate every pod whose namespace is gone (restarts + 1), then sync
      exec NAME -- ARGV... run ARGV in the pod's network namespace (exit code and output pass through)

Errors: one line on stderr, exit 1; an unknown pod (del, exec): exit 2. Every call that changes
something holds an exclusive fcntl lock on <state>/pods.lock.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

DEFAULTS = {
    "conflist": "/etc/cni/net.d/10-ipsec-lab.conflist",
    "cni-bin": "/usr/lib/cni",
    "state": "/var/lib/ipsec-lab",
    "run": "/run",
}
POD_LIST = "ipsec-lab-pods.json"  # podserver.py's files in the run dir
POD_CONTROL = "ipsec-lab-pods.sock"
NETNS_DIR = "ipsec-lab/netns"  # the pods' namespace files, under the run dir (gone after a reboot)
IFNAME = "eth0"
SYNC_WAIT = 15.0  # at boot the unit's restore may run before podserver.py listens
CNI_TIMEOUT = 60.0
# A DNS-1123 label, as Kubernetes pod names are (and safe in a path and a command line).
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
COMMANDS = "usage: nodepods.py [--conflist P] [--cni-bin D] [--state D] [--run D] add|del|list|restore|exec ..."
MNT_DETACH = 2


class Failure(Exception):
    """One line for stderr and the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class Node:
    def __init__(self, conflist: str, cni_bin: str, state: str, run: str) -> None:
        self.conflist = conflist
        self.cni_bin = cni_bin
        self.state_dir = state
        self.run_dir = run
        self.pods_file = os.path.join(state, "pods.json")
        self.lock_file = os.path.join(state, "pods.lock")
        self.netns_dir = os.path.join(run, NETNS_DIR)
        self.pod_list = os.path.join(run, POD_LIST)
        self.control = os.path.join(run, POD_CONTROL)

    # -- state ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, exclusive: bool = True) -> Iterator[None]:
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def load(self) -> list[dict[str, Any]]:
        try:
            with open(self.pods_file) as f:
                pods: list[dict[str, Any]] = json.load(f)["pods"]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise Failure(f"nodepods: cannot read {self.pods_file}: {exc}; move it aside to start empty") from None
        return pods

    def save(self, pods: list[dict[str, Any]]) -> None:
        _write_atomic(self.pods_file, json.dumps({"pods": pods}, indent=1) + "\n")

    def alive(self, pod: dict[str, Any]) -> bool:
        """The pod's namespace file is still a mounted network namespace (not after a reboot)."""
        return bool(pod.get("netns")) and _is_netns(str(pod["netns"]))

    def listing(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(p, ip=p["ip"] if self.alive(p) else "") for p in pods]

    # -- CNI --------------------------------------------------------------------------------------
    def plugin(self) -> dict[str, Any]:
        """plugins[0] of the conflist with the list's cniVersion and name: what a runtime hands the
        plugin (the netns backend's _cni does the same)."""
        try:
            with open(self.conflist) as f:
                conf = json.load(f)
            plugin: dict[str, Any] = dict(conf["plugins"][0], cniVersion=conf["cniVersion"], name=conf["name"])
        except OSError as exc:
            raise Failure(f"nodepods: cannot read the CNI config {self.conflist}: {exc.strerror}; "
                          "provisioning installs it (cni-provision.sh)") from None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Failure(f"nodepods: {self.conflist} is not a CNI conflist ({exc!r})") from None
        return plugin

    def cni(self, plugin: dict[str, Any], command: str, container_id: str, netns: str, pod: str) -> dict[str, Any]:
        binary = os.path.join(self.cni_bin, str(plugin.get("type", "")))
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": self.cni_bin,
        }
        try:
            res = subprocess.run([binary], input=json.dumps(plugin), env=env, capture_output=True, text=True,
                                 timeout=CNI_TIMEOUT)
        except OSError as exc:
            raise Failure(f"nodepods: CNI {command} failed for {pod}: cannot run {binary}: {exc.strerror}") from None
        except subprocess.TimeoutExpired:
            raise Failure(f"nodepods: CNI {command} failed for {pod}: {binary} ran over {CNI_TIMEOUT:.0f} s") from None
        if res.returncode != 0:
            try:
                msg = str(json.loads(res.stdout).get("msg", res.stdout))
            except (ValueError, AttributeError):
                msg = _last_line(res.stderr or res.stdout) or f"exit {res.returncode}"
            raise Failure(f"nodepods: CNI {command} failed for {pod}: {msg}")
        out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        return out

    # -- pods -------------------------------------------------------------------------------------
    def create(self, plugin: dict[str, Any], name: str, restarts: int = 0) -> dict[str, Any]:
        """A fresh namespace with lo up, then CNI ADD; on any failure nothing is left behind."""
        os.makedirs(self.netns_dir, mode=0o755, exist_ok=True)
        path = os.path.join(self.netns_dir, f"cni-{uuid.uuid4()}")
        open(path, "x").close()
        container_id = uuid.uuid4().hex
        try:
            res = subprocess.run(["unshare", f"--net={path}", "ip", "link", "set", "lo", "up"],
                                 capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                raise Failure(f"nodepods: cannot create a network namespace for {name}: "
                              f"{_last_line(res.stderr) or 'unshare exit ' + str(res.returncode)}")
            result = self.cni(plugin, "ADD", container_id, path, name)
            try:
                ip = str(result["ips"][0]["address"]).split("/")[0]
            except (KeyError, IndexError, TypeError):
                with contextlib.suppress(Failure):
                    self.cni(plugin, "DEL", container_id, path, name)
                raise Failure(f"nodepods: CNI ADD failed for {name}: no address in its result") from None
        except BaseException:
            _remove_netns(path)
            raise
        return {"name": name, "ip": ip, "netns": path, "id": container_id, "restarts": restarts,
                "created": time.time()}

    def destroy(self, plugin: dict[str, Any] | None, pod: dict[str, Any]) -> None:
        """CNI DEL (host-local releases the address), then the namespace file goes. Best effort, as
        the netns backend's _destroy_pod: a pod is never kept for a failed DEL. Without a live
        namespace, DEL runs with CNI_NETNS empty, which still releases the address."""
        if plugin is not None:
            netns = str(pod.get("netns") or "")
            with contextlib.suppress(Failure):
                self.cni(plugin, "DEL", str(pod["id"]), netns if netns and _is_netns(netns) else "", str(pod["name"]))
        if pod.get("netns"):
            _remove_netns(str(pod["netns"]))

    def sync(self, pods: list[dict[str, Any]]) -> str:
        """The live pods to podserver.py, then "sync" on its control socket; it answers "ok N"."""
        _write_atomic(self.pod_list, json.dumps({p["name"]: p["netns"] for p in pods if self.alive(p)}))
        deadline = time.monotonic() + SYNC_WAIT
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.connect(self.control)
                sock.sendall(b"sync\n")
                answer = sock.recv(4096).decode(errors="replace").strip()
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() > deadline:
                    raise Failure(f"nodepods: podserver does not answer on {self.control}: {exc.strerror}; "
                                  "is ipsec-lab-pods.service running? (systemctl status ipsec-lab-pods)") from None
                time.sleep(0.1)
            except OSError as exc:
                raise Failure(f"nodepods: podserver on {self.control}: {exc}") from None
            finally:
                sock.close()
        if not answer.startswith("ok"):
            raise Failure(f"nodepods: podserver: {answer or 'no answer'}")
        return answer

    # -- commands ---------------------------------------------------------------------------------
    def add(self, names: list[str]) -> list[dict[str, Any]]:
        _check_names(names)
        with self.locked():
            pods = self.load()
            taken = [n for n in names if any(p["name"] == n for p in pods)]
            if taken:
                raise Failure(f"nodepods: pod {taken[0]} exists on this node; `nodepods.py del {taken[0]}` first")
            plugin = self.plugin()
            made: list[dict[str, Any]] = []
            try:
                for name in names:
                    made.append(self.create(plugin, name))
            except BaseException:
                for pod in reversed(made):  # all or nothing
                    self.destroy(plugin, pod)
                raise
            pods.extend(made)
            self.save(pods)
            self.sync(pods)
            return self.listing(pods)

    def delete(self, names: list[str]) -> list[dict[str, Any]]:
        _check_names(names)
        with self.locked():
            pods = self.load()
            _known(pods, names)
            doomed = [p for p in pods if p["name"] in names]
            left = [p for p in pods if p["name"] not in names]
            self.save(left)
            # podserver first closes its sockets there: a socket would keep the namespace alive.
            error: Failure | None = None
            try:
                self.sync(left)
            except Failure as exc:
                error = exc
            try:
                plugin: dict[str, Any] | None = self.plugin()
            except Failure as exc:
                plugin, error = None, error or exc
            for pod in doomed:
                self.destroy(plugin, pod)
            if error:
                raise error
            return self.listing(left)

    def listed(self) -> list[dict[str, Any]]:
        with self.locked(exclusive=False):
            return self.listing(self.load())

    def restore(self) -> list[dict[str, Any]]:
        """At boot: each recorded pod whose namespace is gone gets a fresh one, CNI ADD and one more
        restart (what the netns backend does after a node reboot). Pods whose namespace survived (the
        unit restarted podserver.py only) are kept as they are, so restore can run any time."""
        with self.locked():
            pods = self.load()
            plugin = self.plugin() if any(not self.alive(p) for p in pods) else None
            for i, pod in enumerate(pods):
                if self.alive(pod):
                    continue
                assert plugin is not None
                self.destroy(plugin, pod)  # releases a stale address, should host-local still hold one
                pods[i] = self.create(plugin, str(pod["name"]), restarts=int(pod.get("restarts", 0)) + 1)
                self.save(pods)  # after each pod: a failure later leaves the record true
            self.sync(pods)
            return self.listing(pods)

    def exec(self, name: str, argv: list[str]) -> int:
        if not argv:
            raise Failure("nodepods: exec needs a command: nodepods.py exec POD -- ARGV...")
        with self.locked(exclusive=False):
            pods = self.load()
            _known(pods, [name])
            pod = next(p for p in pods if p["name"] == name)
            if not self.alive(pod):
                raise Failure(f"nodepods: pod {name} has no network namespace (the node rebooted?); "
                              "`nodepods.py restore` recreates it")
        # Not under the lock: a long ping must not hold up add or del. exec: the exit code and the
        # output are the command's own.
        try:
            os.execvp("nsenter", ["nsenter", f"--net={pod['netns']}", "--", *argv])
        except OSError as exc:
            raise Failure(f"nodepods: cannot run nsenter: {exc.strerror}") from None


# -- helpers ---------------------------------------------------------------------------------------
def _check_names(names: list[str]) -> None:
    if not names:
        raise Failure(f"nodepods: no pod names given; {COMMANDS}")
    for n in names:
        if not NAME_RE.match(n):
            raise Failure(f"nodepods: {n!r} is not a pod name (lower-case letters, digits and '-', at most 63)")
    if len(set(names)) != len(names):
        raise Failure("nodepods: a pod name is given twice")


def _known(pods: list[dict[str, Any]], names: list[str]) -> None:
    have = {p["name"] for p in pods}
    for n in names:
        if n not in have:
            raise Failure(f"nodepods: no pod {n} on this node; `nodepods.py list` lists them", code=2)


def _is_netns(path: str) -> bool:
    """A mounted namespace file: nsfs has one device for all namespaces, /proc/self/ns/net's."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


_libc = ctypes.CDLL(None, use_errno=True)


def _remove_netns(path: str) -> None:
    """Unmount (lazily, like `ip netns del`) and remove a namespace file."""
    while _is_netns(path):  # mounted twice, should two calls have raced before the lock existed
        if _libc.umount2(path.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise Failure(f"nodepods: cannot unmount {path}: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_atomic(path: str, content: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse(argv: list[str]) -> tuple[dict[str, str], str, list[str]]:
    opts = dict(DEFAULTS)
    i = 0
    while i < len(argv) and argv[i].startswith("--") and argv[i] != "--":
        key, eq, value = argv[i][2:].partition("=")
        if key not in opts:
            raise Failure(f"nodepods: unknown option {argv[i]}; {COMMANDS}")
        if not eq:
            if i + 1 >= len(argv):
                raise Failure(f"nodepods: {argv[i]} needs a value; {COMMANDS}")
            i += 1
            value = argv[i]
        opts[key] = value
        i += 1
    if i >= len(argv):
        raise Failure(f"nodepods: no command; {COMMANDS}")
    return opts, argv[i], argv[i + 1:]


def run(argv: list[str]) -> int:
    opts, command, args = parse(argv)
    node = Node(opts["conflist"], opts["cni-bin"], opts["state"], opts["run"])
    if command == "add":
        out = node.add(args)
    elif command == "del":
        out = node.delete(args)
    elif command in ("list", "restore"):
        if args:
            raise Failure(f"nodepods: {command} takes no arguments; {COMMANDS}")
        out = node.listed() if command == "list" else node.restore()
    elif command == "exec":
        if len(args) < 2 or args[1] != "--":
            raise Failure("nodepods: usage: nodepods.py exec POD -- ARGV...")
        return node.exec(args[0], args[2:])
    else:
        raise Failure(f"nodepods: unknown command {command!r}; {COMMANDS}")
    print(json.dumps(out))
    return 0


def main() -> int:
    try:
        return run(sys.argv[1:])
    except Failure as exc:
        print(str(exc).splitlines()[0], file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
