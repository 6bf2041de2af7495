"""Renders node configuration from provisioning/templates: one source for both backends.

Every template is rendered with StrictUndefined, and all of a lab's files are rendered before
any file is written, so a template mistake fails the command before it changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import commands, naming, resources
from .errors import LabError
from .certs import CA_FILE, NodeCredentials
from .model import LabSpec, Node, Service, pair_key

TEMPLATE_DIR = resources.templates_dir()

DATAPATHS = ("kernel-xfrm", "kernel-libipsec")


@dataclass(frozen=True)
class NodePaths:
    """Where things live as the node sees them (inside the node, or on a VM)."""

    ipam_data_dir: str = "/run/cni/networks"
    charon_log: str = "/var/log/charon.log"
    vici_socket: str = "/run/charon.vici"


@dataclass(frozen=True)
class IpsecTiming:
    dpd_delay: str = "2s"
    retransmit_timeout: float = 1.0
    retransmit_base: float = 1.4
    retransmit_tries: int = 3


@dataclass(frozen=True)
class RenderedFile:
    name: str  # the file's role, e.g. "swanctl.conf"
    content: str
    mode: int


# role -> (template, mode). Secrets live in swanctl.conf, hence 0600.
NODE_FILES: dict[str, tuple[str, int]] = {
    "strongswan.conf": ("strongswan.conf.j2", 0o644),
    "swanctl.conf": ("swanctl.conf.j2", 0o600),
    "10-ipsec-lab.conflist": ("10-ipsec-lab.conflist.j2", 0o644),
    "node-boot.sh": ("node-boot.sh.j2", 0o755),
}


def environment(template_dir: Path = TEMPLATE_DIR) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals["xfrm_interface"] = naming.xfrm_interface
    return env


def node_context(
    spec: LabSpec,
    node: Node,
    *,
    datapath: str,
    secrets: dict[str, str],
    underlay_if: str = naming.NODE_UNDERLAY_IF,
    paths: NodePaths = NodePaths(),
    ipsec: IpsecTiming = IpsecTiming(),
    credentials: dict[str, NodeCredentials] | None = None,
) -> dict[str, Any]:
    if datapath not in DATAPATHS:
        raise LabError(f"unknown data path {datapath!r}; expected one of {', '.join(DATAPATHS)}")
    if spec.auth == "x509" and (credentials is None or node.name not in credentials):
        raise LabError(f"lab {spec.name!r} authenticates with X.509 but {node.name} has no certificate")
    tunnels = spec.tunnels_of(node)
    return {
        "lab": spec,
        "node": node,
        "tunnels": tunnels,
        "datapath": datapath,
        "secrets": {t.peer: secrets[pair_key(t.node, t.peer)] for t in tunnels} if spec.auth == "psk" else {},
        "credentials": credentials[node.name] if spec.auth == "x509" and credentials else None,
        "ca_file": CA_FILE,
        "underlay_if": underlay_if,
        "paths": paths,
        "ipsec": ipsec,
        "mobike": True,  # a netns node has one interface; a VM turns it off (render_vm_node)
    }


def render_node(spec: LabSpec, node: Node, **kwargs: Any) -> dict[str, RenderedFile]:
    ctx = node_context(spec, node, **kwargs)
    return _render_files(environment(), ctx, NODE_FILES, node.name) | credential_files(ctx["credentials"])


# X.509 (`up --auth x509`): the node's certificate, key and the lab CA, as files under swanctl's
# directory (role = path below /etc: the netns node's etc/ in its state directory, a VM's /etc).
SWANCTL_ROLE_PREFIX = "swanctl/"


def credential_files(creds: NodeCredentials | None) -> dict[str, RenderedFile]:
    """The node's X.509 files (none with PSK): the key 0600, only ever in the node's own files."""
    if creds is None:
        return {}
    return {
        f"swanctl/x509ca/{CA_FILE}": RenderedFile(f"swanctl/x509ca/{CA_FILE}", creds.ca_pem, 0o644),
        f"swanctl/x509/{creds.cert_file}": RenderedFile(f"swanctl/x509/{creds.cert_file}", creds.cert_pem, 0o644),
        f"swanctl/private/{creds.key_file}": RenderedFile(f"swanctl/private/{creds.key_file}", creds.key_pem, 0o600),
    }


def vm_destination(role: str) -> str:
    """Where a VM installs a node file of this role."""
    if role.startswith(SWANCTL_ROLE_PREFIX):
        return "/etc/" + role
    return VM_FILES[role][2]


def _render_files(env: jinja2.Environment, ctx: dict[str, Any], files: dict[str, tuple[str, int]],
                  node: str) -> dict[str, RenderedFile]:
    """role -> (template, mode), all rendered in memory; a template error names its file and node."""
    out = {}
    for role, (template, mode) in files.items():
        try:
            content = env.get_template(template).render(ctx)
        except jinja2.TemplateError as exc:
            raise LabError(f"template {template} failed for {node}: {exc}") from None
        out[role] = RenderedFile(role, content, mode)
    return out


def render_lab(spec: LabSpec, **kwargs: Any) -> dict[str, dict[str, RenderedFile]]:
    """All nodes' files, rendered in memory; nothing is written here."""
    return {n.name: render_node(spec, n, **kwargs) for n in spec.node_list()}


def render_kube_proxy_rules(spec: LabSpec, node: Node, service: Service, endpoints: list[str]) -> str:
    """The nat table (iptables-restore input) kube-proxy would write on `node` for one NodePort
    service with these endpoint addresses (provisioning/templates/kube-proxy-rules.j2)."""
    ctx = {"lab": spec, "node": node, "service": service, "endpoints": endpoints}
    return _render_files(environment(), ctx, {"kube-proxy-rules": ("kube-proxy-rules.j2", 0o644)},
                         node.name)["kube-proxy-rules"].content


# -- the Vagrant backend's node files -----------------------------------------------------------
# The same four node files as netns (kernel-xfrm data path) plus what a VM needs around them.
# role -> (template, mode, where the VM installs it). The provisioning scripts install each file
# at that path; the Vagrantfile uploads the rendered folder to /tmp/ipsec-lab on each VM.
VM_FILES: dict[str, tuple[str, int, str]] = {
    "strongswan.conf": ("strongswan-vm.conf.j2", 0o644, "/etc/strongswan.conf"),
    "swanctl.conf": ("swanctl.conf.j2", 0o600, "/etc/swanctl/swanctl.conf"),
    "10-ipsec-lab.conflist": ("10-ipsec-lab.conflist.j2", 0o644, "/etc/cni/net.d/10-ipsec-lab.conflist"),
    "node-boot.sh": ("node-boot.sh.j2", 0o755, "/usr/local/sbin/ipsec-lab-node-boot"),
    "ipsec-lab-guard.service": ("ipsec-lab-guard.service.j2", 0o644, "/etc/systemd/system/ipsec-lab-guard.service"),
    "ipsec-lab-boot.service": ("ipsec-lab-boot.service.j2", 0o644, "/etc/systemd/system/ipsec-lab-boot.service"),
    # charon under the starter (`ipsec start`), which writes /run/charon.pid; it takes the name
    # strongswan.service (and overrides charon-systemd's unit of that name, should it be installed).
    "strongswan.service": ("strongswan.service.j2", 0o644, "/etc/systemd/system/strongswan.service"),
    "node.env": ("node.env.j2", 0o644, "/etc/ipsec-lab/node.env"),
    # Node mode "none" only: the pods' HTTP server and the pods' program (copied as they are, see
    # NODE_PROGRAMS), and the unit that runs the one and, at boot, `nodepods.py restore`.
    "ipsec-lab-pods.service": ("ipsec-lab-pods.service.j2", 0o644, "/etc/systemd/system/ipsec-lab-pods.service"),
    "podserver.py": ("backends/podserver.py", 0o644, "/usr/local/lib/ipsec-lab/podserver.py"),
    "nodepods.py": ("backends/nodepods.py", 0o644, "/usr/local/lib/ipsec-lab/nodepods.py"),
    "kubeadm.yaml": ("kubeadm.yaml.j2", 0o600, "/etc/ipsec-lab/kubeadm.yaml"),
    "containerd.toml": ("containerd.toml.j2", 0o644, "/etc/containerd/config.toml"),
}
# On a VM the private interface's name depends on the box and provider (eth1, enp0s8, ...):
# the boot script reads it from the environment its systemd unit sets (from node.env).
VM_UNDERLAY_IF = '"$UNDERLAY_IF"'

# A VM node's mode: "kubeadm", the seed's cluster (kubelet, kubeadm and containerd from the
# internet), or "none", offline: the same pods as on netns, no Kubernetes. The CNI plugins live
# where each mode's packages put them: kubernetes-cni in /opt/cni/bin, Debian's
# containernetworking-plugins (the offline box) in /usr/lib/cni.
NODE_MODES = ("kubeadm", "none")
CNI_BIN_DIRS: dict[str, str] = {"kubeadm": "/opt/cni/bin", "none": "/usr/lib/cni"}
KUBEADM_ONLY_FILES = ("kubeadm.yaml", "containerd.toml")
# Offline, no kubelet runs pods: the node runs the netns backend's pod logic itself.
NONE_ONLY_FILES = ("ipsec-lab-pods.service", "podserver.py", "nodepods.py")
# Roles that are not templates but programs of the tui package (VM_FILES names their source, under
# the package): copied into the node's files as they are, since the VM runs them with its own
# python3 (standard library only; nodepods.py and podserver.py import nothing from tui).
NODE_PROGRAMS = ("podserver.py", "nodepods.py")

# containerd for the kubeadm mode: Kubernetes 1.36 wants containerd 2.2+ or 2.3+ (containerd's
# RELEASES.md), Debian 12 ships 1.6.20, so the node takes containerd's own release build; 2.3 is
# containerd's LTS (to 2028-04-30). runc: the version containerd 2.3.4 is tested with
# (script/setup/runc-version at v2.3.4).
CONTAINERD_VERSION = "2.3.4"
RUNC_VERSION = "1.4.3"


def cni_bin_dir(mode: str) -> str:
    """Where a VM node of this mode finds its CNI plugins."""
    try:
        return CNI_BIN_DIRS[mode]
    except KeyError:
        raise LabError(f"unknown node mode {mode!r}; expected one of {', '.join(NODE_MODES)}") from None


@dataclass(frozen=True)
class KubeParams:
    """What the kubeadm config and the provisioning scripts need beyond the lab spec."""

    minor: str  # the pinned Kubernetes minor, e.g. "v1.36" (pkgs.k8s.io repository path)
    token: str  # bootstrap token, [a-z0-9]{6}.[a-z0-9]{16}
    ca_cert_hash: str  # "sha256:<hex>" of the cluster CA's public key (pinned by every join)
    bootcamp_images: tuple[str, ...]  # tried in order; the seed's gcr.io name last
    service_subnet: str = "10.96.0.0/12"
    mode: str = "kubeadm"  # the node mode (NODE_MODES)
    containerd_version: str = CONTAINERD_VERSION
    runc_version: str = RUNC_VERSION

    @property
    def cni_bin_dir(self) -> str:
        return cni_bin_dir(self.mode)


def render_vm_node(spec: LabSpec, node: Node, *, secrets: dict[str, str], kube: KubeParams,
                   ipsec: IpsecTiming = IpsecTiming(),
                   credentials: dict[str, NodeCredentials] | None = None) -> dict[str, RenderedFile]:
    """A VM node's files: kernel-xfrm data path, standard paths, plus units and, in the kubeadm
    mode, the kubeadm and containerd configuration; in the "none" mode, the pods' unit and programs."""
    cni_bin_dir(kube.mode)  # an unknown mode fails here, before anything renders
    env = environment()
    ctx = node_context(spec, node, datapath="kernel-xfrm", secrets=secrets, underlay_if=VM_UNDERLAY_IF,
                       paths=NodePaths(), ipsec=ipsec, credentials=credentials)
    first = spec.node(1)
    ctx.update(
        kube=kube,
        control_plane=first,
        # The API server listens on kube-node1's cni0 address: every other node reaches it
        # through its IPsec tunnel to kube-node1 (and so do pods, via the kubernetes Service).
        api_address=first.cni0_ip,
        install_paths={role: dest for role, (_t, _m, dest) in VM_FILES.items()},
        # kube-proxy's MASQUERADE takes the outgoing interface's address: each XFRM interface
        # carries cni0's address (/32), so NodePort traffic to another node's pod leaves with a
        # pod-range source that the IPsec policies match (netns SNATs to cni0 in its own rules).
        xfrm_address=True,
        # MOBIKE off: the management NIC must never carry the lab's tunnels (swanctl.conf.j2).
        mobike=False,
        announce=commands.announce_script(spec, node.name, commands.CHARON_STOPPED),
        charon_stopped=commands.CHARON_STOPPED,
    )
    wanted = [role for role in VM_FILES
              if role not in (NONE_ONLY_FILES if kube.mode == "kubeadm" else KUBEADM_ONLY_FILES)]
    roles = {role: VM_FILES[role][:2] for role in wanted if role not in NODE_PROGRAMS}
    out = _render_files(env, ctx, roles, node.name)
    for role in wanted:
        if role in NODE_PROGRAMS:
            source, mode, _dest = VM_FILES[role]
            out[role] = RenderedFile(role, (resources.package_dir() / source).read_text(), mode)
    return {role: out[role] for role in wanted} | credential_files(ctx["credentials"])  # VM_FILES' order
