"""Renders node configuration from provisioning/templates: one source for both backends.

Every template is rendered with StrictUndefined, and all of a lab's files are rendered before
any file is written, so a template mistake fails the command before it changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2

from . import naming
from .errors import LabError
from .model import LabSpec, Node, pair_key

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "provisioning" / "templates"

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
) -> dict:
    if datapath not in DATAPATHS:
        raise LabError(f"unknown data path {datapath!r}; expected one of {', '.join(DATAPATHS)}")
    tunnels = spec.tunnels_of(node)
    return {
        "lab": spec,
        "node": node,
        "tunnels": tunnels,
        "datapath": datapath,
        "secrets": {t.peer: secrets[pair_key(t.node, t.peer)] for t in tunnels},
        "underlay_if": underlay_if,
        "paths": paths,
        "ipsec": ipsec,
    }


def render_node(spec: LabSpec, node: Node, **kwargs) -> dict[str, RenderedFile]:
    env = environment()
    ctx = node_context(spec, node, **kwargs)
    out = {}
    for role, (template, mode) in NODE_FILES.items():
        try:
            content = env.get_template(template).render(ctx)
        except jinja2.TemplateError as exc:
            raise LabError(f"template {template} failed for {node.name}: {exc}") from None
        out[role] = RenderedFile(role, content, mode)
    return out


def render_lab(spec: LabSpec, **kwargs) -> dict[str, dict[str, RenderedFile]]:
    """All nodes' files, rendered in memory; nothing is written here."""
    return {n.name: render_node(spec, n, **kwargs) for n in spec.node_list()}
