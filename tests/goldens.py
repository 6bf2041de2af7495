"""What every golden file under tests/golden/ must hold: rendered from fixed inputs (real labs get
random secrets). The golden tests compare against these; `scripts/update-goldens` writes them, and
is never run by the suite."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tui.backends import vagrant_files as vf
from tui.lab import render
from tui.lab.certs import NodeCredentials
from tui.lab.model import LabSpec, Service, pair_key

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"

PSK = "ab" * 32
KUBE = render.KubeParams(minor=vf.KUBE_MINOR, token="abcdef.0123456789abcdef",
                         ca_cert_hash="sha256:" + "0" * 64, bootcamp_images=vf.BOOTCAMP_IMAGES)
SERVICE = Service("kubernetes-bootcamp", "NodePort", 8080, 31990)


def psks(spec: LabSpec) -> dict[str, str]:
    return {pair_key(a.name, b.name): PSK for a in spec.node_list() for b in spec.node_list() if a.index < b.index}


def vm_node(node: str, mode: str = "kubeadm") -> dict[Path, str]:
    """kubeadm mode: tests/golden/vagrant/<node>; other modes: tests/golden/vagrant/<mode>/<node>."""
    spec = LabSpec.build("lab", 3)
    files = render.render_vm_node(spec, spec.node(node), secrets=psks(spec), kube=replace(KUBE, mode=mode))
    d = GOLDEN / "vagrant" if mode == "kubeadm" else GOLDEN / "vagrant" / mode
    # podserver.py and nodepods.py are copied as they are, not rendered: tests/test_nodepods.py
    # checks the copies; a golden of them would only repeat the source.
    return {d / node / role: f.content for role, f in files.items() if role not in render.NODE_PROGRAMS}


def netns_node(datapath: str) -> dict[Path, str]:
    spec = LabSpec.build("lab", 3)
    files = render.render_node(spec, spec.node(1), datapath=datapath, secrets=psks(spec))
    return {GOLDEN / "netns" / datapath / "kube-node1" / role: f.content for role, f in files.items()}


def fixed_credentials(spec: LabSpec) -> dict[str, NodeCredentials]:
    """Stand-ins for `up --auth x509`'s PEM files (a real lab makes new ones with `pki` each time;
    tests/test_certs.py proves those on real labs): the goldens show where each one goes."""
    ca = "-----BEGIN CERTIFICATE-----\nTHE LAB CA\n-----END CERTIFICATE-----\n"
    return {n.name: NodeCredentials(n.name, f"-----BEGIN CERTIFICATE-----\n{n.name}\n-----END CERTIFICATE-----\n",
                                    f"-----BEGIN PRIVATE KEY-----\n{n.name}\n-----END PRIVATE KEY-----\n", ca)
            for n in spec.node_list()}


def x509_nodes() -> dict[Path, str]:
    """`up --auth x509`: kube-node1's swanctl.conf and credential files, netns (kernel-libipsec)
    and VM (node mode none; the files the provisioning installs, and the manifest naming where)."""
    spec = LabSpec.build("lab", 3, auth="x509")
    creds = fixed_credentials(spec)
    ns = render.render_node(spec, spec.node(1), datapath="kernel-libipsec", secrets={}, credentials=creds)
    vm = render.render_vm_node(spec, spec.node(1), secrets=psks(spec), kube=replace(KUBE, mode="none"),
                               credentials=creds)
    out = {GOLDEN / "x509" / "netns" / "kube-node1" / role: f.content for role, f in ns.items()
           if role == "swanctl.conf" or role.startswith(render.SWANCTL_ROLE_PREFIX)}
    out |= {GOLDEN / "x509" / "vagrant" / "kube-node1" / role: f.content for role, f in vm.items()
            if role == "swanctl.conf" or role.startswith(render.SWANCTL_ROLE_PREFIX)}
    return out | {GOLDEN / "x509" / "vagrant" / "kube-node1" / "manifest.tsv": vf.manifest(vm)}


def kube_proxy() -> dict[Path, str]:
    spec = LabSpec.build("lab", 3)
    d = GOLDEN / "netns" / "kube-proxy"
    return {
        d / "kube-node2-3-endpoints.rules":
            render.render_kube_proxy_rules(spec, spec.node(2), SERVICE, ["10.128.1.2", "10.128.2.2", "10.128.3.2"]),
        d / "kube-node1-no-endpoints.rules": render.render_kube_proxy_rules(spec, spec.node(1), SERVICE, []),
    }


def all_goldens() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for node in ("kube-node1", "kube-node2", "kube-node3"):
        out |= vm_node(node)
    out |= vm_node("kube-node1", "none")
    for datapath in render.DATAPATHS:
        out |= netns_node(datapath)
    return out | kube_proxy() | x509_nodes()


def check(expected: dict[Path, str]) -> None:
    """Every expected file exists with exactly this content (never writes)."""
    for path, content in expected.items():
        rel = path.relative_to(ROOT)
        assert path.exists(), f"golden {rel} is missing: `scripts/update-goldens` writes it, then review the diff"
        assert content == path.read_text(), f"{rel} differs: review, then `scripts/update-goldens` rewrites it"


def main() -> int:
    written = 0
    for path, content in all_goldens().items():
        if not path.exists() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
            written += 1
    print(f"{written} golden files changed; review them with `git diff tests/golden`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
