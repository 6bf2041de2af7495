"""Names of labs, nodes, tunnels and the namespaces that hold them.

Every namespace a lab creates starts with ``ilab-<lab>-`` so two labs never collide and
``down`` can find everything of one lab, even after a crash.
"""

from __future__ import annotations

import re

from .errors import UsageError

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
NAMESPACE_PREFIX = "ilab"
UNDERLAY_BRIDGE = "br0"
NODE_UNDERLAY_IF = "eth0"
DEPLOYMENT_NAME = "kubernetes-bootcamp"
SEED_TUNNEL_NAMES = ("mesh-left", "mesh-right")


def validate_lab_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise UsageError(
            f"invalid lab name {name!r}: use 1-12 lowercase letters or digits, starting with a letter"
        )
    return name


def node_name(index: int) -> str:
    return f"kube-node{index}"


def node_index(name: str) -> int | None:
    m = re.fullmatch(r"kube-node([1-9][0-9]?)", name)
    return int(m.group(1)) if m else None


def lab_prefix(lab: str) -> str:
    return f"{NAMESPACE_PREFIX}-{lab}-"


def underlay_namespace(lab: str) -> str:
    return f"{lab_prefix(lab)}underlay"


def node_namespace(lab: str, node: str) -> str:
    return f"{lab_prefix(lab)}{node}"


def probe_namespace(lab: str) -> str:
    return f"{lab_prefix(lab)}probe"


def underlay_port(index: int) -> str:
    """The underlay bridge port (in the underlay namespace) that leads to node ``index``."""
    return f"v{index}"


def tunnel_name(node_count: int, local: int, peer: int) -> str:
    """The seed's names on three nodes (mesh-left/mesh-right), ``mesh-<peer>`` otherwise."""
    if node_count == 3:
        others = [i for i in range(1, 4) if i != local]
        return SEED_TUNNEL_NAMES[others.index(peer)]
    return f"mesh-{node_name(peer)}"


def xfrm_interface(peer: int) -> str:
    return f"ipsec-n{peer}"
