"""A fresh Debian machine for the fresh-machine test: build (and cache) a minimal root, enter it, clean up.

A bug once shipped because a Debian package the dev machines had from a hand install was missing
from scripts/setup.sh. This module gives the suite a machine that has nothing but what a bare cloud
image has, and runs the README's first command in it:

1. ``mmdebstrap --variant=minbase --include=git,python3,ca-certificates bookworm`` from the host's
   own Debian apt sources, as a tarball cached in ~/.cache/ipsec-lab (the name carries a hash of the
   recipe, so a recipe change rebuilds). Project packages are never cached: setup.sh installs them
   inside on every run.
2. A fresh directory /var/tmp/ipsec-lab-fresh-XXXX gets the tarball, the host's trust store, pip
   configuration, resolv.conf and apt snippets, and the project from ``git archive HEAD``.
3. A holder process keeps a private mount namespace (``unshare --mount --propagation private``)
   in which the root is bind-mounted onto itself (``ip netns exec`` needs / to be a mount point)
   with /proc, /sys, /dev (rbind), and tmpfs /run and /tmp; every command enters that namespace with
   ``nsenter`` and then ``chroot``s, so the lab's state in /run lives from ``up`` to ``down``.
4. Cleanup (always, even when a step fails): ``down`` inside when a lab may exist, kill by PID
   every process whose root is the temporary root (that ends the mount namespace, and with it the
   lab's network namespaces), check that nothing is mounted there and no process is rooted there,
   then ``rm -rf --one-file-system`` it.

The root's path is guarded hard (guard_root) before anything is unpacked, mounted or removed.

Run by hand: ``scripts/fresh-root`` (the whole flow) or ``scripts/fresh-root --shell``.
Standard library only, so it runs with the system python3 as well as with the .venv.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]

# The recipe of the fresh root: what a bare Debian 12 cloud image has, and nothing of the project.
SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = ("git", "python3", "ca-certificates")
RECIPE_VERSION = "1"  # bump to force a rebuild of every cached root

HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# apt settings the host needs and so does the root: the sources are a snapshot, so Release files are
# past their Valid-Until date.
HOST_APT_SNIPPETS = (Path("/etc/apt/apt.conf.d/99artifact-registry"),)
# What every machine of this kind has besides the distribution: its trust store and pip configuration.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # so update-ca-certificates inside keeps them
HOST_PIP_CONF = Path("/etc/pip.conf")
HOST_XDG_PIP = Path("/etc/xdg/pip")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")

CACHE_DIR = Path.home() / ".cache" / "ipsec-lab"
TMP_PARENT = "/var/tmp"
ROOT_PREFIX = "ipsec-lab-fresh-"
PROJECT_IN_ROOT = "/root/ipsec-lab"

# The environment of a user's login shell on the fresh machine: nothing leaks in from the host's.
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/bash",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}

BUILD_TIMEOUT = 600.0
UP_TIMEOUT = 600.0  # setup.sh (apt-get install, a venv, pip install) and then `up`
STATUS_TIMEOUT = 60.0
EXEC_TIMEOUT = 30.0
DOWN_TIMEOUT = 120.0

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class UnsafeRoot(RuntimeError):
    """The root's path failed a guard: nothing was unpacked, mounted or removed."""


class FlowFailure(AssertionError):
    """A step of the fresh-machine flow failed; the message says which and shows its output."""


# --- the root's path ------------------------------------------------------------------------------


def guard_root(path: object, *, must_be_empty: bool = False) -> str:
    """Return ``path`` as a string if it is one of our temporary roots, else raise UnsafeRoot.

    Called before anything is unpacked or mounted there and before it is removed: an empty or
    wrong path here would unpack a Debian tree over the machine or remove it.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise UnsafeRoot(f"fresh root: not a path: {path!r}")
    p = os.fspath(path)
    if not isinstance(p, str) or not p or p.strip() != p:
        raise UnsafeRoot(f"fresh root: empty or odd path {p!r}")
    if not os.path.isabs(p):
        raise UnsafeRoot(f"fresh root: not absolute: {p!r}")
    if p == "/" or os.path.realpath(p) == "/":
        raise UnsafeRoot("fresh root: refusing '/'")
    if os.path.realpath(p) != p:
        raise UnsafeRoot(f"fresh root: {p!r} is not its own real path ({os.path.realpath(p)!r}): symlink or not normal")
    parent, name = os.path.split(p)
    if parent != TMP_PARENT or not name.startswith(ROOT_PREFIX) or len(name) <= len(ROOT_PREFIX):
        raise UnsafeRoot(f"fresh root: {p!r} is not a {TMP_PARENT}/{ROOT_PREFIX}* directory")
    if os.path.islink(p) or not os.path.isdir(p):
        raise UnsafeRoot(f"fresh root: {p!r} is not a directory")
    if must_be_empty and os.listdir(p):
        raise UnsafeRoot(f"fresh root: {p!r} is not empty")
    return p


def make_root_dir() -> str:
    return guard_root(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir=TMP_PARENT), must_be_empty=True)


def _inside(root: str, rel: str) -> str:
    """The host path of ``rel`` in the root, refusing anything whose parent escapes the root."""
    dst = os.path.join(root, rel.lstrip("/"))
    parent = os.path.realpath(os.path.dirname(dst))
    if parent != root and not parent.startswith(root + "/"):
        raise UnsafeRoot(f"fresh root: {rel} resolves outside the root ({parent})")
    return dst


# --- building and caching the root ---------------------------------------------------------------


def debian_sources(text: str) -> str:
    """The enabled deb822 stanzas of ``text`` whose URIs are all Debian's (deb.debian.org & co)."""
    kept = []
    for stanza in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[:1].isspace() and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        uris = fields.get("uris", "").split()
        if not uris or fields.get("enabled", "yes").lower() == "no":
            continue
        if all(re.match(r"^https?://([a-z0-9-]+\.)*debian\.org(/|$)", u) for u in uris):
            kept.append(stanza.strip())
    return "\n\n".join(kept) + "\n" if kept else ""


def recipe() -> dict:
    if not HOST_SOURCES.exists():
        raise FlowFailure(f"no {HOST_SOURCES}: the fresh root is built from the host's Debian apt sources")
    sources = debian_sources(HOST_SOURCES.read_text())
    if not sources:
        raise FlowFailure(f"{HOST_SOURCES} has no enabled source whose URIs are Debian's")
    aptopts = {str(p): p.read_text() for p in HOST_APT_SNIPPETS if p.exists()}
    return {"version": RECIPE_VERSION, "suite": SUITE, "variant": VARIANT, "include": list(INCLUDE),
            "sources": sources, "aptopts": aptopts}


def cache_path(rec: dict | None = None) -> Path:
    rec = rec if rec is not None else recipe()
    digest = hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:12]
    return CACHE_DIR / f"fresh-root-{SUITE}-{VARIANT}-{digest}.tar"


def build_root_tar(log: Log = _quiet) -> tuple[Path, bool]:
    """The cached root tarball, built with mmdebstrap when missing. Returns (path, built_now)."""
    rec = recipe()
    tar = cache_path(rec)
    if tar.is_file() and tar.stat().st_size > 0:
        log(f"fresh root: cached {tar}")
        return tar, False
    if shutil.which("mmdebstrap") is None:
        raise FlowFailure("mmdebstrap is not installed: `scripts/setup.sh --test` installs it (TEST_PACKAGES); "
                          "run the suite with scripts/test")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = tar.with_name(f"{tar.stem}.partial-{os.getpid()}.tar")
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-fresh-build-") as tmp:
        sources = Path(tmp) / "debian.sources"  # mmdebstrap pastes a MIRROR that is a file into the root
        sources.write_text(rec["sources"])
        cmd = ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}",
               *[f"--aptopt={p}" for p in rec["aptopts"]], SUITE, str(partial), str(sources)]
        log(f"fresh root: building {tar.name}: {shlex.join(cmd)}")
        try:
            res = _run_streamed(cmd, timeout=BUILD_TIMEOUT, on_line=lambda s: log(f"  mmdebstrap: {s}"))
            if res.rc != 0:
                raise FlowFailure(f"mmdebstrap failed ({res.why()}); last 30 lines:\n{res.tail()}")
            os.replace(partial, tar)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    for old in CACHE_DIR.glob(f"fresh-root-{SUITE}-{VARIANT}-*.tar"):  # roots of older recipes
        if old != tar and ".partial-" not in old.name:
            old.unlink(missing_ok=True)
    return tar, True


def unpack(tar: Path, root: str) -> None:
    root = guard_root(root, must_be_empty=True)
    # /dev comes from the host (rbind) when the root is entered: no device nodes to create here.
    cp = subprocess.run(["tar", "-x", "-p", "--numeric-owner", "--exclude=./dev/*", "-f", str(tar), "-C", root],
                        capture_output=True, text=True, timeout=300)
    if cp.returncode != 0:
        raise FlowFailure(f"unpacking {tar} failed: {cp.stderr.strip()[-2000:]}")


def _install_file(src: Path, root: str, rel: str, mode: int = 0o644) -> None:
    dst = _inside(root, rel)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.islink(dst):  # never write through a link (it could point at the host's file)
        os.unlink(dst)
    shutil.copyfile(src, dst, follow_symlinks=True)
    os.chmod(dst, mode)


def copy_host_config(root: str, log: Log = _quiet) -> None:
    """What every machine of this kind has: the trust store, pip's configuration, DNS and apt settings."""
    root = guard_root(root)
    copied = []
    _install_file(HOST_CA_BUNDLE, root, str(HOST_CA_BUNDLE))
    copied.append(str(HOST_CA_BUNDLE))
    if HOST_LOCAL_CAS.is_dir():
        for crt in sorted(HOST_LOCAL_CAS.glob("*.crt")):
            _install_file(crt, root, str(crt))
            copied.append(str(crt))
    if HOST_PIP_CONF.is_file():
        _install_file(HOST_PIP_CONF, root, str(HOST_PIP_CONF))
        copied.append(str(HOST_PIP_CONF))
    if HOST_XDG_PIP.is_dir():
        for f in sorted(HOST_XDG_PIP.rglob("*")):
            if f.is_file():
                _install_file(f, root, str(f))
                copied.append(str(f))
    _install_file(HOST_RESOLV_CONF, root, str(HOST_RESOLV_CONF))
    copied.append(str(HOST_RESOLV_CONF))
    for snippet in HOST_APT_SNIPPETS:
        if snippet.is_file():
            _install_file(snippet, root, str(snippet))
            copied.append(str(snippet))
    log(f"fresh root: copied from the host: {', '.join(copied)}")


def put_project(repo: Path, root: str, log: Log = _quiet) -> str:
    """``git archive HEAD`` of ``repo`` into /root/ipsec-lab (the committed tree: no .venv, no edits)."""
    root = guard_root(root)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, timeout=30, check=True).stdout.strip()
    dest = _inside(root, PROJECT_IN_ROOT)
    os.makedirs(dest)
    git = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", "HEAD"], stdout=subprocess.PIPE)
    try:
        tar = subprocess.run(["tar", "-x", "-f", "-", "-C", dest], stdin=git.stdout, capture_output=True,
                             text=True, timeout=120)
    finally:
        git.stdout.close()
        git_rc = git.wait(timeout=60)
    if git_rc != 0 or tar.returncode != 0:
        raise FlowFailure(f"git archive HEAD | tar failed (git {git_rc}, tar {tar.returncode}): {tar.stderr.strip()}")
    log(f"fresh root: project at {PROJECT_IN_ROOT} from git archive HEAD ({head})")
    return head


# --- running things -------------------------------------------------------------------------------


@dataclass
class Result:
    cmd: str
    rc: int | None  # None: killed at the timeout
    elapsed: float
    lines: list[tuple[float, str, str]] = field(default_factory=list)  # (seconds since start, stream, line)
    timeout: float = 0.0

    @property
    def stdout(self) -> str:
        return "".join(line + "\n" for _, stream, line in self.lines if stream == "out")

    @property
    def stderr(self) -> str:
        return "".join(line + "\n" for _, stream, line in self.lines if stream == "err")

    def tail(self, n: int = 30) -> str:
        return "\n".join(line for _, _, line in self.lines[-n:]) or "(no output)"

    def first(self, needle: str) -> float | None:
        return next((t for t, _, line in self.lines if needle in line), None)

    def why(self) -> str:
        return f"timed out after {self.timeout:.0f} s" if self.rc is None else f"exit {self.rc}"


def _run_streamed(argv: list[str], *, timeout: float, on_line: Log = _quiet, label: str = "") -> Result:
    """Run ``argv`` with its stdout and stderr read line by line (timestamped), bounded by ``timeout``."""
    start = time.monotonic()
    res = Result(cmd=label or shlex.join(argv), rc=None, elapsed=0.0, timeout=timeout)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = threading.Lock()

    def read(pipe, stream: str) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with lock:
                res.lines.append((time.monotonic() - start, stream, line))
            on_line(line)

    readers = [threading.Thread(target=read, args=(p, s), daemon=True) for p, s in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for r in readers:
        r.start()
    try:
        res.rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # its children, if any are rooted in the fresh root, go at cleanup
        proc.wait(timeout=30)
    res.elapsed = time.monotonic() - start
    for r in readers:  # a daemon that kept our pipe open must not hold us up
        r.join(timeout=5)
    return res


def processes_rooted_in(root: str) -> list[int]:
    """PIDs of the processes whose root directory is ``root`` or below it (in any mount namespace)."""
    try:
        st = os.stat(root)
        ident = (st.st_dev, st.st_ino)
    except FileNotFoundError:
        ident = None
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            link = os.readlink(f"/proc/{entry}/root")
            if link == root or link.startswith(root + "/") or link.startswith(root + " "):
                pids.append(int(entry))
                continue
            if ident is not None:
                pst = os.stat(f"/proc/{entry}/root")
                if (pst.st_dev, pst.st_ino) == ident:
                    pids.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue  # gone, or a zombie (no root any more)
    return sorted(pids)


def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_under(root: str) -> list[str]:
    """Mount points at or under ``root`` in this process's mount namespace."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = _unescape_mountinfo(line.split()[4])
            if mp == root or mp.startswith(root + "/"):
                found.append(mp)
    return found


def kill_rooted(root: str, log: Log = _quiet, grace: float = 3.0) -> list[int]:
    """Kill, by PID, every process rooted in ``root``: TERM, then KILL after ``grace`` seconds."""
    killed: list[int] = []
    deadline = time.monotonic() + grace + 20
    sig = signal.SIGTERM
    term_until = time.monotonic() + grace
    while time.monotonic() < deadline:
        pids = processes_rooted_in(root)
        if not pids:
            break
        if time.monotonic() >= term_until:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if pid not in killed:
                killed.append(pid)
        time.sleep(0.2)
    if killed:
        log(f"fresh root: killed {len(killed)} process(es) rooted in {root}: {killed}")
    return killed


MOUNT_SCRIPT = r"""
set -eu
r=$1
mount --bind "$r" "$r"
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
test -c "$r/dev/net/tun"
echo ready
exec chroot "$r" /bin/sleep infinity </dev/null >/dev/null 2>&1
"""


class FreshMachine:
    """The fresh root, from cache to cleanup. Use as a context manager; cleanup always runs."""

    def __init__(self, repo: Path = REPO, log: Log = _quiet):
        self.repo = Path(repo)
        self.log = log
        self.root = ""
        self.holder: subprocess.Popen | None = None
        self.mnt_ns = ""
        self.lab: str | None = None  # a lab that may exist inside (down at cleanup)
        self.timings: dict[str, float | str] = {}
        self.head = ""
        self._stack = contextlib.ExitStack()

    # lifecycle
    def __enter__(self) -> "FreshMachine":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        t = time.monotonic()
        tar, cold = build_root_tar(self.log)
        self.timings["root_s"] = time.monotonic() - t
        self.timings["root"] = "cold" if cold else "cached"
        t = time.monotonic()
        self.root = make_root_dir()
        self._stack.callback(self._remove_root)
        self.log(f"fresh root: unpacking into {self.root}")
        unpack(tar, self.root)
        copy_host_config(self.root, self.log)
        self.head = put_project(self.repo, self.root, self.log)
        self._enter_namespace()
        self._stack.callback(self._down_lab)
        self.timings["prepare_s"] = time.monotonic() - t

    def close(self) -> None:
        self._stack.close()

    def _enter_namespace(self) -> None:
        root = guard_root(self.root)
        self._stack.callback(self._stop_namespace)
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", MOUNT_SCRIPT, "fresh-root", root],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.holder.stdout], [], [], 30)
        line = self.holder.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait(timeout=10)
            err = self.holder.stderr.read().decode(errors="replace").strip()
            raise FlowFailure(f"could not set up the fresh root's mount namespace: {err or line or 'no answer in 30 s'}")
        self.mnt_ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        self.log(f"fresh root: entered ({self.mnt_ns}, holder pid {self.holder.pid})")

    def argv(self, command: str | None, *, env: dict | None = None) -> list[str]:
        """The host command that runs ``command`` (a login shell with none) as root on the fresh machine."""
        if self.holder is None or self.holder.poll() is not None:
            raise FlowFailure("the fresh root's mount namespace is gone (its holder process exited)")
        envs = [f"{k}={v}" for k, v in {**ROOT_ENV, **(env or {})}.items()]
        shell = ["/bin/bash", "-l"] + (["-c", command] if command is not None else [])
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--", "chroot", self.root,
                "/usr/bin/env", "-i", *envs, *shell]

    def run(self, command: str, *, timeout: float, on_line: Log | None = None) -> Result:
        self.log(f"fresh root $ {command}")
        return _run_streamed(self.argv(command), timeout=timeout, label=command,
                             on_line=on_line if on_line is not None else (lambda s: self.log(f"  | {s}")))

    def shell(self) -> int:
        """An interactive login shell in the project's directory; ctrl-c belongs to it, not to us."""
        argv = self.argv(f"cd {PROJECT_IN_ROOT} && exec /bin/bash -l",
                         env={"TERM": os.environ.get("TERM", "xterm"), "debian_chroot": "fresh-root"})
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            return subprocess.call(argv)
        finally:
            signal.signal(signal.SIGINT, old)

    # cleanup, in the reverse order of the callbacks above
    def _down_lab(self) -> None:
        if not self.lab:
            return
        try:
            res = self.run(f"cd {PROJECT_IN_ROOT} && scripts/lab --lab {self.lab} down", timeout=DOWN_TIMEOUT)
            if res.rc != 0:
                self.log(f"fresh root: cleanup: down {res.why()}; last lines:\n{res.tail(10)}")
        except Exception as exc:  # the kill below still ends everything
            self.log(f"fresh root: cleanup: down failed: {exc}")
        self.lab = None

    def _stop_namespace(self) -> None:
        root = guard_root(self.root)
        kill_rooted(root, self.log)
        if self.holder is not None:
            if self.holder.poll() is None:
                self.holder.kill()
            self.holder.wait(timeout=30)
            for pipe in (self.holder.stdout, self.holder.stderr):
                pipe.close()
        if self.mnt_ns:
            left = [int(p) for p in os.listdir("/proc") if p.isdigit() and _readlink(f"/proc/{p}/ns/mnt") == self.mnt_ns]
            if left:
                raise FlowFailure(f"processes still in the fresh root's mount namespace: {left}")

    def _remove_root(self) -> None:
        if not self.root or not os.path.exists(self.root):
            return
        root = guard_root(self.root)
        left = processes_rooted_in(root)
        mounts = mounts_under(root)
        if left or mounts:
            raise UnsafeRoot(f"not removing {root}: processes rooted there {left}, mounts under it {mounts}")
        cp = subprocess.run(["rm", "-rf", "--one-file-system", "--", root], capture_output=True, text=True, timeout=300)
        if cp.returncode != 0 or os.path.exists(root):
            raise FlowFailure(f"could not remove {root}: {cp.stderr.strip()[-1000:]}")
        self.log(f"fresh root: removed {root}")


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# --- the flow: the README's first command on the fresh machine ------------------------------------


def unique_lab() -> str:
    return "fresh" + "".join(random.SystemRandom().choice(string.ascii_lowercase + string.digits) for _ in range(4))


def _fail(step: str, res: Result) -> FlowFailure:
    return FlowFailure(f"{step}: `{res.cmd}` {res.why()} on the fresh machine; last 30 lines of its output:\n{res.tail()}")


def lab_flow(m: FreshMachine, lab: str | None = None, log: Log | None = None) -> dict:
    """up --deploy 3, status, a curl across nodes, down; raises FlowFailure at the first thing wrong."""
    log = log or m.log
    lab = lab or unique_lab()
    cd = f"cd {PROJECT_IN_ROOT} && "
    m.lab = lab  # from here a lab may exist: cleanup runs down
    res = m.run(f"{cd}scripts/lab --lab {lab} up --deploy 3", timeout=UP_TIMEOUT)
    ready = res.first("setup: ready")
    if ready is None:
        raise FlowFailure(f"scripts/setup.sh failed on the fresh machine (in `{res.cmd}`: {res.why()}); "
                          f"last 30 lines of its output:\n{res.tail()}")
    m.timings["setup_s"] = ready
    m.timings["up_s"] = res.elapsed - ready
    if res.rc != 0:
        raise _fail("up", res)

    deadline = time.monotonic() + 30
    while True:  # `up` waits for the mesh; a few seconds of grace for a pod still starting
        st = m.run(f"{cd}scripts/lab --lab {lab} status --json", timeout=STATUS_TIMEOUT, on_line=_quiet)
        if st.rc != 0:
            raise _fail("status", st)
        try:
            status = json.loads(st.stdout)
        except ValueError:
            raise FlowFailure(f"status --json printed no JSON; its output:\n{st.tail()}") from None
        tunnels, pods = status.get("tunnels", []), status.get("pods", [])
        bad = [f"{t['node']}/{t['name']}: {t['ike_state']}/{t['child_state']}" for t in tunnels
               if (t["ike_state"], t["child_state"]) != ("ESTABLISHED", "INSTALLED")]
        not_running = [f"{p['name']}: {p['state']}" for p in pods if p["state"] != "Running"]
        ok = len(tunnels) == 6 and not bad and len(pods) == 3 and not not_running
        if ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    if not ok:
        raise FlowFailure(f"status on the fresh machine: {len(tunnels)} tunnel ends (want 6), not up: {bad}; "
                          f"{len(pods)} pods (want 3), not Running: {not_running}\n{json.dumps(status, indent=1)[-3000:]}")
    log(f"fresh root: {len(tunnels)} tunnel ends ESTABLISHED/INSTALLED, {len(pods)} pods Running")

    far = next((p for p in pods if p["node"] in ("kube-node2", "kube-node3") and p.get("ip")), None)
    if far is None:
        raise FlowFailure(f"no pod with an address on kube-node2 or kube-node3: {pods}")
    url = f"http://{far['ip']}:8080"
    cr = m.run(f"{cd}scripts/lab --lab {lab} exec kube-node1 -- curl -s --max-time 5 {url}", timeout=EXEC_TIMEOUT)
    if cr.rc != 0 or "Hello Kubernetes bootcamp" not in cr.stdout:
        raise _fail(f"curl from kube-node1 to {far['name']} on {far['node']} ({url})", cr)

    dn = m.run(f"{cd}scripts/lab --lab {lab} down", timeout=DOWN_TIMEOUT)
    if dn.rc != 0:
        raise _fail("down", dn)
    m.lab = None
    ns = m.run("ip netns list", timeout=30, on_line=_quiet)
    left = [line for line in ns.stdout.splitlines() if line.startswith(f"ilab-{lab}-")]
    if ns.rc != 0 or left:
        raise FlowFailure(f"after down the fresh machine still has the lab's namespaces: {left} ({ns.why()})")

    # `doctor --install`, for those who came through pip: take a package away, doctor names it and
    # exits 3, --install puts it back with apt-get, doctor is content again.
    t0 = time.monotonic()
    pkg = "libstrongswan-standard-plugins"
    rm = m.run(f"apt-get remove -y -qq {pkg}", timeout=EXEC_TIMEOUT, on_line=_quiet)
    if rm.rc != 0:
        raise _fail(f"removing {pkg}", rm)
    dr = m.run(f"{cd}.venv/bin/ipsec-lab doctor", timeout=EXEC_TIMEOUT, on_line=_quiet)
    if dr.rc != 3 or f"openssl ({pkg})" not in dr.stderr:
        raise _fail(f"doctor without {pkg} (want exit 3 naming it)", dr)
    di = m.run(f"{cd}.venv/bin/ipsec-lab doctor --install", timeout=UP_TIMEOUT)
    if di.rc != 0 or "everything a new lab needs is here" not in di.stdout:
        raise _fail(f"doctor --install (want {pkg} back and exit 0)", di)
    m.timings["doctor_install_s"] = time.monotonic() - t0
    log(f"fresh root: doctor named {pkg}, doctor --install put it back")
    return m.timings


def timings_line(t: dict) -> str:
    def s(key: str) -> str:
        return f"{t[key]:.1f} s" if isinstance(t.get(key), float) else "-"
    return (f"fresh-machine: root {s('root_s')} ({t.get('root', '?')}), prepare {s('prepare_s')}, setup {s('setup_s')}, "
            f"up {s('up_s')}, doctor --install {s('doctor_install_s')}, total {s('total_s')}")


# --- scripts/fresh-root ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/fresh-root", description=(
        "Run the README's first command on a fresh minimal Debian root (what tests/test_fresh_machine.py does), "
        "or open a shell there. The root is removed afterwards; its base tarball is cached in ~/.cache/ipsec-lab."))
    ap.add_argument("--shell", action="store_true", help="open a login shell in the fresh root instead of the flow")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached base tarball first")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("fresh-root: run as root (mmdebstrap, mounts, chroot)", file=sys.stderr)
        return 1

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.rebuild:
        with contextlib.suppress(FileNotFoundError):
            cache_path().unlink()
    start = time.monotonic()
    try:
        with FreshMachine(REPO, log=log) as m:
            if args.shell:
                log(f"fresh root: a shell on the fresh machine (the project is in {PROJECT_IN_ROOT}); exit to clean up")
                m.shell()
                return 0
            lab_flow(m)
        m.timings["total_s"] = time.monotonic() - start
        log(timings_line(m.timings))
        log("fresh-root: OK")
        return 0
    except (FlowFailure, UnsafeRoot) as exc:
        print(f"fresh-root: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
