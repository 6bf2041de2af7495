"""Pieces of the Vagrant backend that need no VM: lab files, host preflight, Vagrant's
machine-readable output, the Fabric (SSH) layer, swanctl's raw output, kubectl JSON and pcaps.

Kept apart from vagrant.py so each piece is tested on its own, on a machine that cannot run VMs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
import secrets as pysecrets
import shlex
import shutil
import string
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..lab import render, resources
from ..lab.errors import LabError, UsageError
from ..lab.events import Reporter
from ..lab.model import LabSpec, Pod, Service, pair_key
from ..lab.proc import Result

VAGRANTFILE = resources.vagrantfile()  # the checkout's, or the installed copy in tui/_data
ROOT = VAGRANTFILE.parent  # VAGRANT_CWD: provisioning/ is beside the Vagrantfile
DEFAULT_LAB = "lab"

DEFAULT_BOX = "debian/bookworm64"  # the Debian cloud team's box: virtualbox and libvirt
KUBE_MINOR = "v1.34"  # pkgs.k8s.io/core:/stable:/v1.34 (override: IPSEC_LAB_KUBE_MINOR)
# docker.io still serves the tutorial's image; the seed's gcr.io name stays as the fallback.
BOOTCAMP_IMAGES = ("docker.io/jocatalin/kubernetes-bootcamp:v1", "gcr.io/google-samples/kubernetes-bootcamp:v1")
PROVIDERS = ("virtualbox", "libvirt")
RESOURCES = {
    # kubeadm's preflight wants 2 CPUs and 1700 MB on the control plane.
    "virtualbox": {"control-plane": {"cpus": 2, "memory_mb": 2048}, "worker": {"cpus": 2, "memory_mb": 1536}},
    "libvirt": {"control-plane": {"cpus": 2, "memory_mb": 2048}, "worker": {"cpus": 2, "memory_mb": 1536}},
}
HOST_HEADROOM_MB = 1024  # what the host keeps for itself on top of the VMs
VIRTUALBOX_HOSTONLY = ipaddress.IPv4Network("192.168.56.0/21")  # VirtualBox >= 6.1.28 default
PROVIDER_NETWORKS = {  # addresses each provider already uses for its own NAT / management network
    "virtualbox": ipaddress.IPv4Network("10.0.2.0/24"),
    "libvirt": ipaddress.IPv4Network("192.168.121.0/24"),
}
CONTROL_PLANE_ROLE, WORKER_ROLE = "control-plane", "worker"


def workdir() -> Path:
    """Where Vagrant labs keep their spec, secrets, rendered files and (but for a checkout's default
    lab) machine records: .ipsec-lab beside a checkout's Vagrantfile; from a wheel, the user's state
    directory, so Vagrant never writes into the installed package."""
    return Path(os.environ.get("IPSEC_LAB_VAGRANT_DIR", str(resources.vagrant_workdir())))


# ------------------------------------------------------------------------------ lab files
@dataclass(frozen=True)
class LabFiles:
    """A Vagrant lab's files on the host."""

    lab: str
    base: Path

    @classmethod
    def of(cls, lab: str) -> "LabFiles":
        return cls(lab, workdir())

    @property
    def dir(self) -> Path:
        return self.base / self.lab

    @property
    def spec_file(self) -> Path:
        return self.dir / "vagrant.json"

    @property
    def secrets_file(self) -> Path:
        return self.dir / "secrets.json"

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    @property
    def captures(self) -> Path:
        return self.dir / "captures"

    @property
    def dotfile_path(self) -> Path | None:
        """Vagrant's machine records. The default lab uses Vagrant's own .vagrant, so the seed's
        plain `vagrant ssh kube-node1` works in the project directory."""
        if self.lab == DEFAULT_LAB and self.base == ROOT / ".ipsec-lab":
            return None
        return self.dir / "vagrant"

    def env(self) -> dict[str, str]:
        """What every vagrant command of this lab needs in its environment."""
        env = {"VAGRANT_CWD": str(ROOT), "IPSEC_LAB": self.lab, "IPSEC_LAB_SPEC": str(self.spec_file)}
        if self.dotfile_path is not None:
            env["VAGRANT_DOTFILE_PATH"] = str(self.dotfile_path)
        return env


def _write(path: Path, content: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content.encode() if isinstance(content, str) else content)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def make_token() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(pysecrets.choice(alphabet) for _ in range(6)) + "." + "".join(
        pysecrets.choice(alphabet) for _ in range(16))


def make_cluster_ca() -> tuple[str, str]:
    """A cluster CA (RSA 2048, as kubeadm makes it): (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def ca_cert_hash(cert_pem: str) -> str:
    """kubeadm's --discovery-token-ca-cert-hash: SHA-256 of the CA's SubjectPublicKeyInfo."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def kube_params(secrets: dict[str, Any]) -> render.KubeParams:
    return render.KubeParams(
        minor=secrets["kube_minor"],
        token=secrets["token"],
        ca_cert_hash=ca_cert_hash(secrets["ca_crt"]),
        bootcamp_images=tuple(secrets["bootcamp_images"]),
    )


def new_secrets(spec: LabSpec) -> dict[str, Any]:
    ca_crt, ca_key = make_cluster_ca()
    return {
        "psk": {pair_key(a.name, b.name): pysecrets.token_hex(32)
                for a in spec.node_list() for b in spec.node_list() if a.index < b.index},
        "token": make_token(),
        "ca_crt": ca_crt,
        "ca_key": ca_key,
        "kube_minor": os.environ.get("IPSEC_LAB_KUBE_MINOR", KUBE_MINOR),
        "bootcamp_images": list(BOOTCAMP_IMAGES),
    }


def vagrant_spec(spec: LabSpec, files: LabFiles, box: str) -> dict[str, Any]:
    """What the Vagrantfile reads: every node's name, address, role and rendered-files folder."""
    return {
        "lab": spec.name,
        "spec": spec.to_dict(),
        "box": box,
        "netmask": str(spec.underlay.netmask),
        "libvirt_network": f"ipsec-lab-{spec.name}",
        "resources": RESOURCES,
        "nodes": [
            {"name": n.name, "ip": str(n.underlay_ip),
             "role": CONTROL_PLANE_ROLE if n.index == 1 else WORKER_ROLE,
             "files": str(files.node_dir(n.name))}
            for n in spec.node_list()
        ],
    }


def render_lab_files(spec: LabSpec, secrets: dict[str, Any]) -> dict[str, dict[str, render.RenderedFile]]:
    kube = kube_params(secrets)
    return {n.name: render.render_vm_node(spec, n, secrets=secrets["psk"], kube=kube) for n in spec.node_list()}


def manifest(files: dict[str, render.RenderedFile]) -> str:
    """role<TAB>mode<TAB>destination, read by provisioning/cni-provision.sh."""
    return "".join(f"{role}\t{oct(f.mode)[2:]:0>4}\t{render.VM_FILES[role][2]}\n" for role, f in files.items())


def write_lab_files(spec: LabSpec, files: LabFiles, box: str | None = None) -> dict[str, Any]:
    """Render everything in memory first (a template error changes nothing), then write.
    Secrets of an earlier prepare of the same lab are kept, so VMs and files never disagree."""
    try:
        secrets = json.loads(files.secrets_file.read_text())
        if set(secrets.get("psk", {})) != {pair_key(a.name, b.name) for a in spec.node_list()
                                            for b in spec.node_list() if a.index < b.index}:
            raise ValueError("node set changed")
    except (OSError, ValueError):
        secrets = new_secrets(spec)
    rendered = render_lab_files(spec, secrets)
    vspec = vagrant_spec(spec, files, box or os.environ.get("IPSEC_LAB_BOX", DEFAULT_BOX))
    files.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(files.secrets_file, json.dumps(secrets, indent=1, sort_keys=True), 0o600)
    for node, node_files in rendered.items():
        d = files.node_dir(node)
        if d.exists():
            shutil.rmtree(d)
        for role, f in node_files.items():
            _write(d / role, f.content, f.mode)
        _write(d / "manifest.tsv", manifest(node_files), 0o644)
        if node == spec.node(1).name:
            _write(d / "ca.crt", secrets["ca_crt"], 0o644)
            _write(d / "ca.key", secrets["ca_key"], 0o600)
    _write(files.spec_file, json.dumps(vspec, indent=1, sort_keys=True) + "\n", 0o644)
    return vspec


def read_vagrant_spec(files: LabFiles) -> dict[str, Any]:
    try:
        return json.loads(files.spec_file.read_text())
    except FileNotFoundError:
        raise LabError(f"lab {files.lab!r} has no Vagrant spec at {files.spec_file}") from None
    except ValueError as exc:
        raise LabError(f"the Vagrant spec {files.spec_file} is unreadable ({exc})") from None


# ------------------------------------------------------------------------------ preflight
@dataclass
class HostFacts:
    """What preflight looks at on the host; tests pass their own facts."""

    vagrant: str | None = field(default_factory=lambda: shutil.which("vagrant"))
    mem_available_mb: int | None = None
    provider_problems: dict[str, str | None] | None = None  # provider -> why unusable (None: usable)
    vbox_networks: list[ipaddress.IPv4Network] | None = None

    def problems(self) -> dict[str, str | None]:
        if self.provider_problems is None:
            self.provider_problems = {"virtualbox": _virtualbox_problem(), "libvirt": _libvirt_problem()}
        return self.provider_problems

    def memory_mb(self) -> int:
        if self.mem_available_mb is None:
            self.mem_available_mb = _mem_available_mb()
        return self.mem_available_mb

    def vbox_allowed(self) -> list[ipaddress.IPv4Network]:
        if self.vbox_networks is None:
            self.vbox_networks = _vbox_networks_conf()
        return self.vbox_networks


def _virtualbox_problem() -> str | None:
    if shutil.which("VBoxManage") is None:
        return "VirtualBox is not installed (no VBoxManage)"
    if not os.path.exists("/dev/vboxdrv"):
        return "VirtualBox's kernel driver is not loaded (no /dev/vboxdrv)"
    return None


def _libvirt_problem() -> str | None:
    plugins = Path("/usr/share/vagrant-plugins/plugins.d")
    user_plugins = Path(os.environ.get("VAGRANT_HOME", Path.home() / ".vagrant.d")) / "plugins.json"
    has_plugin = any(plugins.glob("*libvirt*")) if plugins.is_dir() else False
    if not has_plugin and not (user_plugins.exists() and "vagrant-libvirt" in user_plugins.read_text(errors="replace")):
        return "the vagrant-libvirt plugin is not installed"
    socks = ("/var/run/libvirt/libvirt-sock", "/run/libvirt/libvirt-sock", "/run/libvirt/virtqemud-sock")
    if not any(os.path.exists(s) for s in socks):
        return "libvirtd is not running (no /var/run/libvirt/libvirt-sock)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "KVM is not available (/dev/kvm missing or not accessible)"
    return None


def _mem_available_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def _vbox_networks_conf() -> list[ipaddress.IPv4Network]:
    """VirtualBox's host-only ranges: /etc/vbox/networks.conf lines `* 10.0.0.0/8 ...`."""
    try:
        lines = Path("/etc/vbox/networks.conf").read_text().splitlines()
    except OSError:
        return [VIRTUALBOX_HOSTONLY]
    nets = []
    for line in lines:
        if line.strip().startswith("*"):
            for tok in line.split()[1:]:
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.IPv4Network(tok, strict=False))
    return nets


def lab_memory_mb(spec: LabSpec, provider: str) -> int:
    res = RESOURCES[provider]
    return res[CONTROL_PLANE_ROLE]["memory_mb"] + (spec.nodes - 1) * res[WORKER_ROLE]["memory_mb"]


def preflight(spec: LabSpec, facts: HostFacts, other_labs: dict[str, ipaddress.IPv4Network]) -> str:
    """Checks before `up`; returns the provider to use. Each failure is one UsageError line.
    Reads only: nothing on the host is changed."""
    if facts.vagrant is None:
        raise UsageError("vagrant is not installed: install Vagrant (Debian: `apt-get install vagrant`, "
                         "plus vagrant-libvirt for libvirt) or use the netns backend")
    if not VAGRANTFILE.exists():
        raise UsageError(f"{VAGRANTFILE} is missing: the Vagrant backend needs the project's Vagrantfile")
    problems = facts.problems()
    wanted = os.environ.get("VAGRANT_DEFAULT_PROVIDER")
    if wanted:
        if wanted not in PROVIDERS:
            raise UsageError(f"provider {wanted!r} (VAGRANT_DEFAULT_PROVIDER) is not supported: "
                             f"use {' or '.join(PROVIDERS)}")
        if problems.get(wanted):
            raise UsageError(f"provider {wanted} cannot run VMs here: {problems[wanted]}")
        provider = wanted
    else:
        usable = [p for p in PROVIDERS if not problems.get(p)]
        if not usable:
            why = "; ".join(f"{p}: {problems[p]}" for p in PROVIDERS)
            raise UsageError(f"no Vagrant provider can run VMs here ({why})")
        provider = usable[0]
    if provider == "virtualbox":
        allowed = facts.vbox_allowed()
        if not any(spec.underlay.subnet_of(n) for n in allowed):
            raise UsageError(f"underlay {spec.underlay} is outside VirtualBox's host-only ranges "
                             f"({', '.join(map(str, allowed))}); pick one inside 192.168.56.0/21 or "
                             f"list it in /etc/vbox/networks.conf")
    if spec.underlay.overlaps(PROVIDER_NETWORKS[provider]):
        raise UsageError(f"underlay {spec.underlay} overlaps {provider}'s own network "
                         f"{PROVIDER_NETWORKS[provider]}; pick another subnet")
    for lab, net in sorted(other_labs.items()):
        if lab != spec.name and spec.underlay.overlaps(net):
            raise UsageError(f"underlay {spec.underlay} overlaps Vagrant lab {lab!r} ({net}); "
                             f"pick another subnet with `up --underlay`")
    need = lab_memory_mb(spec, provider) + HOST_HEADROOM_MB
    have = facts.memory_mb()
    if have < need:
        raise UsageError(f"not enough memory for {spec.nodes} VMs: they need {need} MB with headroom, "
                         f"{have} MB are available")
    return provider


# ------------------------------------------------------------------------------ Vagrant output
_PREFIX = re.compile(r"^(?:==> |    )?(?P<node>[A-Za-z0-9_.-]+): ?(?P<text>.*)$")


_HUMAN_PREFIX = re.compile(r"^(?:==> |    )(?P<node>[A-Za-z0-9_.-]+): (?P<text>.*)$")


def unescape_machine(value: str) -> str:
    return value.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass(frozen=True)
class MachineLine:
    timestamp: int
    target: str
    kind: str
    data: tuple[str, ...]


def parse_machine_line(line: str) -> MachineLine | None:
    """One line of `vagrant --machine-readable`: timestamp,target,type,data... (commas in data
    escaped as %!(VAGRANT_COMMA), newlines as \\n), or None for anything else."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return MachineLine(int(parts[0]), parts[1], parts[2], tuple(unescape_machine(p) for p in parts[3:]))


class VagrantOutput:
    """Turns vagrant's output into Reporter lines: ui lines tagged with their machine, ui errors
    and error-exit on stderr, and whatever vagrant writes to its stderr on stderr."""

    HIDDEN = {"metadata", "action", "box-name", "box-version", "provider-name", "state",
              "state-human-short", "state-human-long", "ssh-config"}

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.errors: list[str] = []

    def feed(self, raw: str, stream: str) -> None:
        m = parse_machine_line(raw)
        if m is None:  # human output (e.g. on stderr): "==> node: text" or "    node: text"
            text = raw.rstrip("\r\n")
            if text.strip():
                hm = _HUMAN_PREFIX.match(text)
                node, text = (hm.group("node"), hm.group("text")) if hm else (None, text)
                self.reporter.line(text, node=node, stream=stream)
                if stream == "stderr":
                    self.errors.append(text.strip())
            return
        if m.kind == "error-exit":
            message = m.data[1] if len(m.data) > 1 else ",".join(m.data)
            self.errors.append(" ".join(message.split()))
            self.reporter.line(message, node=m.target or None, stream="stderr")
            return
        if m.kind != "ui" or not m.data:
            return
        ui_type, message = m.data[0], ",".join(m.data[1:])
        out_stream = "stderr" if ui_type == "error" or stream == "stderr" else "stdout"
        for part in message.splitlines() or [""]:
            node = m.target or None
            pm = _PREFIX.match(part)
            if pm and (node is None or pm.group("node") == node):
                node, part = pm.group("node"), pm.group("text")
            if part.strip():
                self.reporter.line(part, node=node, stream=out_stream)

    def last_error(self) -> str:
        """The last error, cut to its first sentence (Vagrant's messages run for lines)."""
        if not self.errors:
            return ""
        first = self.errors[-1].split(". ")[0].strip()
        return first if first.endswith((".", "!", ")")) else first + "."


@contextlib.contextmanager
def line_pipe(on_line: Callable[[str], None]) -> Iterator[io.TextIOWrapper]:
    """A file a subprocess can write to; each line it writes is passed to on_line as it comes."""
    rfd, wfd = os.pipe()
    reader = os.fdopen(rfd, "r", encoding="utf-8", errors="replace", newline="")

    def pump() -> None:
        with reader:
            for line in reader:
                on_line(line)

    t = threading.Thread(target=pump, name="vagrant-output", daemon=True)
    t.start()
    writer = os.fdopen(wfd, "w")
    try:
        yield writer
    finally:
        writer.close()
        t.join(timeout=30)


# ------------------------------------------------------------------------------ SSH (Fabric)
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

    def connection(self, node: str):
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


# ------------------------------------------------------------------------------ swanctl --raw
_RAW_TOKEN = re.compile(r"\{|\}|[^\s={}]+=\[[^\]]*\]|[^\s={}]+=[^\s{}]*|[^\s{}]+")


def _parse_raw_body(tokens: list[str], i: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            return out, i + 1
        if "=" in tok:
            key, value = tok.split("=", 1)
            out[key] = value[1:-1].split() if value.startswith("[") and value.endswith("]") else value
            i += 1
        elif i + 1 < len(tokens) and tokens[i + 1] == "{":
            out[tok], i = _parse_raw_body(tokens, i + 2)
        else:
            i += 1  # a bare word (e.g. the message type) carries nothing for us
    return out, i


def parse_swanctl_raw(text: str) -> list[tuple[str, dict]]:
    """`swanctl --list-sas --raw` -> [(IKE SA name, info)], the shape vici's list_sas gives."""
    sas = []
    for line in text.splitlines():
        if not line.startswith("list-sa event"):
            continue
        body, _ = _parse_raw_body(_RAW_TOKEN.findall(line[len("list-sa event"):].strip()[1:]), 0)
        sas.extend(body.items())
    return sas


# ------------------------------------------------------------------------------ kubectl JSON
def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def pods_from_kubectl(doc: dict) -> list[Pod]:
    pods = []
    for item in doc.get("items", []):
        meta, spec, st = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
        statuses = st.get("containerStatuses") or []
        state = st.get("phase", "Unknown")
        if meta.get("deletionTimestamp"):
            state = "Terminating"
        else:
            for cs in statuses:
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting:
                    state = waiting.get("reason", state)
        pods.append(Pod(
            name=meta.get("name", "?"), node=spec.get("nodeName") or "", ip=st.get("podIP"), state=state,
            restarts=sum(int(cs.get("restartCount", 0)) for cs in statuses),
            created=_timestamp(meta.get("creationTimestamp")),
        ))
    return sorted(pods, key=lambda p: p.name)


def service_from_kubectl(doc: dict) -> Service:
    port = (doc.get("spec", {}).get("ports") or [{}])[0]
    return Service(name=doc.get("metadata", {}).get("name", "?"), type=doc.get("spec", {}).get("type", "?"),
                   port=int(port.get("port", 0)), node_port=int(port.get("nodePort", 0)))


def ready_nodes_from_kubectl(doc: dict) -> dict[str, bool]:
    out = {}
    for item in doc.get("items", []):
        conds = item.get("status", {}).get("conditions", [])
        out[item.get("metadata", {}).get("name", "?")] = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return out


# ------------------------------------------------------------------------------ pcaps
PCAP_MAGIC_US, PCAP_MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D


def merge_pcaps(paths: Sequence[str], out: str) -> int:
    """Merge classic pcap files (one per node, same link type) by timestamp; returns packets."""
    header = None
    records: list[tuple[int, int, int, bytes]] = []
    for n, path in enumerate(paths):
        data = Path(path).read_bytes()
        if len(data) < 24:
            continue
        for endian in ("<", ">"):
            magic = struct.unpack(endian + "I", data[:4])[0]
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                break
        else:
            raise LabError(f"{path} is not a pcap file")
        if header is None:
            header = (endian, data[:24])
        elif data[20:24] != header[1][20:24] or endian != header[0]:
            raise LabError(f"{path} has another link type or byte order than the first capture")
        off = 24
        while off + 16 <= len(data):
            sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
            rec = data[off:off + 16 + incl]
            if len(rec) < 16 + incl:
                break  # a capture cut mid-record
            records.append((sec, frac, n, rec))
            off += 16 + incl
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    with open(out, "wb") as f:
        if header is not None:
            f.write(header[1])
        for rec in records:
            f.write(rec[3])
    return len(records)
