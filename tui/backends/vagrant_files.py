"""A Vagrant lab's files on the host: the spec the Vagrantfile reads, the lab's secrets (pre-shared
keys, the cluster CA, the bootstrap token) and every node's rendered files."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets as pysecrets
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..lab import certs, parsers, render, resources
from ..lab.errors import LabError
from ..lab.model import LabSpec, pair_key
from ..lab.state import write_file

VAGRANTFILE = resources.vagrantfile()  # the checkout's, or the installed copy in tui/_data
ROOT = VAGRANTFILE.parent  # VAGRANT_CWD: provisioning/ is beside the Vagrantfile
DEFAULT_LAB = "lab"

DEFAULT_BOX = "debian/bookworm64"  # the Debian cloud team's box (kubeadm mode): virtualbox and libvirt
# pkgs.k8s.io/core:/stable:/v1.36 (override: IPSEC_LAB_KUBE_MINOR). 1.36 is supported until
# 2027-06-28 (kubernetes.io/releases) and runs on containerd 2.3 (render.CONTAINERD_VERSION).
KUBE_MINOR = "v1.36"
# The node mode (render.NODE_MODES, `--kubernetes`): "none" by default, offline: the same pods as on
# netns, from the offline box; "kubeadm", the seed's cluster, needs the internet (pkgs.k8s.io).
DEFAULT_NODE_MODE = "none"
# docker.io still serves the tutorial's image; the seed's gcr.io name stays as the fallback.
BOOTCAMP_IMAGES = ("docker.io/jocatalin/kubernetes-bootcamp:v1", "gcr.io/google-samples/kubernetes-bootcamp:v1")
RESOURCES = {
    # kubeadm's preflight wants 2 CPUs and 1700 MB on the control plane.
    "virtualbox": {"control-plane": {"cpus": 2, "memory_mb": 2048}, "worker": {"cpus": 2, "memory_mb": 1536}},
    "libvirt": {"control-plane": {"cpus": 2, "memory_mb": 2048}, "worker": {"cpus": 2, "memory_mb": 1536}},
}
# Node mode none runs charon, the CNI plugins and a pod server: 1 vCPU and 768 MB each (3 VMs then
# fit a 2-core machine under emulation; measured: a node uses about 150 MB).
RESOURCES_NONE = {provider: {role: {"cpus": 1, "memory_mb": 768} for role in ("control-plane", "worker")}
                  for provider in RESOURCES}


def vm_resources(mode: str) -> dict[str, dict[str, dict[str, int]]]:
    return RESOURCES_NONE if mode == "none" else RESOURCES

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
    def hypervisor_dir(self) -> Path:
        """The lab's own libvirtd's state (its /etc, /var/lib, /run and the storage pool): on disk,
        not under /run, since the pool holds the VMs' disks."""
        return self.dir / "hypervisor"

    def ssh_config_file(self, node: str) -> Path:
        """`vagrant ssh-config NODE`, kept after up: every later command (a new process each time)
        reaches the node without starting Vagrant."""
        return self.dir / "ssh" / f"{node}.config"

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


def kube_params(secrets: dict[str, Any], mode: str = DEFAULT_NODE_MODE) -> render.KubeParams:
    return render.KubeParams(
        minor=secrets["kube_minor"],
        token=secrets["token"],
        ca_cert_hash=ca_cert_hash(secrets["ca_crt"]),
        bootcamp_images=tuple(secrets["bootcamp_images"]),
        mode=mode,
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


def vagrant_spec(spec: LabSpec, files: LabFiles, box: str, mode: str = DEFAULT_NODE_MODE,
                 libvirt: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the Vagrantfile reads: every node's name, address, role and rendered-files folder, and
    where libvirt runs the VMs (`libvirt`: uri, driver, cpu_model, pool; absent: libvirt's defaults)."""
    return {
        "lab": spec.name,
        "node_mode": mode,
        "libvirt": libvirt or {},
        # Vagrant's machine records: the Vagrantfile passes it on when it re-runs a bare `vagrant` command.
        "dotfile": str(files.dotfile_path) if files.dotfile_path else None,
        "spec": spec.to_dict(),
        "box": box,
        "netmask": str(spec.underlay.netmask),
        "libvirt_network": f"ipsec-lab-{spec.name}",
        "resources": vm_resources(mode),
        "nodes": [
            {"name": n.name, "ip": str(n.underlay_ip),
             "role": CONTROL_PLANE_ROLE if n.index == 1 else WORKER_ROLE,
             "files": str(files.node_dir(n.name))}
            for n in spec.node_list()
        ],
    }


def render_lab_files(spec: LabSpec, secrets: dict[str, Any],
                     mode: str = DEFAULT_NODE_MODE) -> dict[str, dict[str, render.RenderedFile]]:
    kube = kube_params(secrets, mode)
    # X.509: a new lab CA and node keys each time (never kept in secrets.json); the keys go into
    # each node's files only (0600), which the provisioning installs in the VM's /etc/swanctl.
    creds = certs.lab_credentials(spec) if spec.auth == "x509" else None
    return {n.name: render.render_vm_node(spec, n, secrets=secrets["psk"], kube=kube, credentials=creds)
            for n in spec.node_list()}


def manifest(files: dict[str, render.RenderedFile]) -> str:
    """role<TAB>mode<TAB>destination, read by provisioning/cni-provision.sh."""
    return "".join(f"{role}\t{oct(f.mode)[2:]:0>4}\t{render.vm_destination(role)}\n" for role, f in files.items())


def lab_secrets(spec: LabSpec, files: LabFiles) -> dict[str, Any]:
    """The secrets of an earlier prepare of the same lab (so VMs and files never disagree), or new ones."""
    try:
        secrets: dict[str, Any] = json.loads(files.secrets_file.read_text())
        if set(secrets.get("psk", {})) != {pair_key(a.name, b.name) for a in spec.node_list()
                                            for b in spec.node_list() if a.index < b.index}:
            raise ValueError("node set changed")
    except (OSError, ValueError):
        secrets = new_secrets(spec)
    return secrets


def box(mode: str = DEFAULT_NODE_MODE) -> str:
    """The box the nodes boot: IPSEC_LAB_BOX, else the offline box (node mode none: everything a node
    runs, nothing fetched) or the Debian cloud box (kubeadm: the nodes install Kubernetes online)."""
    if os.environ.get("IPSEC_LAB_BOX"):
        return os.environ["IPSEC_LAB_BOX"]
    if mode == "none":
        from ..vm import box as offline

        return offline.vagrant_name(offline.Recipe())
    return DEFAULT_BOX


def node_mode(files: LabFiles) -> str:
    return str(read_vagrant_spec(files).get("node_mode", "kubeadm"))


def set_libvirt(files: LabFiles, libvirt: dict[str, Any]) -> None:
    """Where libvirt runs the VMs, known once the hypervisor runs: into the spec the Vagrantfile reads."""
    doc = read_vagrant_spec(files)
    doc["libvirt"] = libvirt
    write_file(files.spec_file, json.dumps(doc, indent=1, sort_keys=True) + "\n", 0o644)


def write_lab_files(spec: LabSpec, files: LabFiles, box_name: str | None = None, *,
                    secrets: dict[str, Any] | None = None,
                    rendered: dict[str, dict[str, render.RenderedFile]] | None = None,
                    mode: str = DEFAULT_NODE_MODE, libvirt: dict[str, Any] | None = None) -> dict[str, Any]:
    """Render everything in memory first (a template error changes nothing), then write: the
    secrets, every node's files and the spec the Vagrantfile reads. `up` passes what it rendered."""
    secrets = secrets if secrets is not None else lab_secrets(spec, files)
    rendered = rendered if rendered is not None else render_lab_files(spec, secrets, mode)
    vspec = vagrant_spec(spec, files, box_name or box(mode), mode, libvirt)
    files.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(files.secrets_file, json.dumps(secrets, indent=1, sort_keys=True), 0o600)
    for node, node_files in rendered.items():
        d = files.node_dir(node)
        if d.exists():
            shutil.rmtree(d)
        for role, f in node_files.items():
            write_file(d / role, f.content, f.mode)
        write_file(d / "manifest.tsv", manifest(node_files), 0o644)
        if node == spec.node(1).name and mode == "kubeadm":
            write_file(d / "ca.crt", secrets["ca_crt"], 0o644)
            write_file(d / "ca.key", secrets["ca_key"], 0o600)
    write_file(files.spec_file, json.dumps(vspec, indent=1, sort_keys=True) + "\n", 0o644)
    return vspec


def read_vagrant_spec(files: LabFiles) -> dict[str, Any]:
    try:
        return parsers.json_object(files.spec_file.read_text())
    except FileNotFoundError:
        raise LabError(f"lab {files.lab!r} has no Vagrant spec at {files.spec_file}") from None
    except ValueError as exc:
        raise LabError(f"the Vagrant spec {files.spec_file} is unreadable ({exc})") from None
