"""The lab's domain: frozen dataclasses that both backends, the checks and the TUI share."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from . import naming
from .errors import UsageError

MIN_NODES, MAX_NODES = 2, 32
DEFAULT_NODES = 3


def node_count(*given: int | None) -> int:
    """The first node count the user gave (0 is a count, and refused as one), else the default."""
    return next((n for n in given if n is not None), DEFAULT_NODES)

DEFAULT_UNDERLAY = "192.168.56.0/24"
DEFAULT_POD_SUPERNET = "10.128.0.0/16"
# IKE: AES-GCM with PRF-SHA256 and X25519; ESP: AES-GCM-128, measured fastest through libipsec.
DEFAULT_IKE_PROPOSAL = "aes128gcm16-prfsha256-x25519"
DEFAULT_ESP_PROPOSAL = "aes128gcm16-x25519"
NODE_HOST_OFFSET = 10  # kube-nodeN gets <underlay>.(10+N), as the seed's VMs did
POD_PORT = 8080
NODE_PORT_RANGE = (30000, 32767)
# ESP in UDP with AES-GCM costs at most 73 bytes (IP 20, UDP 8, ESP 8, IV 8, pad 3, trailer 2,
# ICV 16, rounded up); libipsec's ipsec0 is fixed at 1400.
IPSEC_OVERHEAD = 80
LIBIPSEC_TUN_MTU = 1400


# `up --rekey-s N`: CHILD SAs rekey every N s (the IKE SA every 4 N s); strongSwan's own default is 1 h.
MIN_REKEY_S, MAX_REKEY_S = 10, 86400
# How the nodes authenticate each other: "psk", one random pre-shared key per node pair (the seed's
# choice, the default), or "x509", a lab CA and one certificate per node (tui/lab/certs.py).
AUTH_METHODS = ("psk", "x509")

MAX_REPLICAS = 250  # one node's /24, less the network, cni0 and broadcast addresses


def cni0_address(pod_cidr: IPv4Network | str) -> IPv4Address:
    """The node's cni0 address (the pods' gateway): the first address of its pod range. The one rule
    for it: Node.cni0_ip and NodeStatus.cni0_ip use it."""
    return ipaddress.IPv4Network(pod_cidr).network_address + 1


def validate_replicas(replicas: int) -> int:
    if not 0 <= replicas <= MAX_REPLICAS:
        raise UsageError(f"replicas must be between 0 and {MAX_REPLICAS}, got {replicas}")
    return replicas


def validate_node_port(node_port: int | None) -> int | None:
    lo, hi = NODE_PORT_RANGE
    if node_port is not None and not lo <= node_port <= hi:
        raise UsageError(f"node port must be in {lo}-{hi}, got {node_port}")
    return node_port


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    underlay_ip: IPv4Address
    pod_cidr: IPv4Network

    @property
    def cni0_ip(self) -> IPv4Address:
        return cni0_address(self.pod_cidr)


@dataclass(frozen=True)
class Tunnel:
    """One end of a node-to-node IPsec connection, named as on ``node``."""

    node: str
    name: str
    peer: str
    local_addr: IPv4Address
    remote_addr: IPv4Address
    local_ts: IPv4Network
    remote_ts: IPv4Network
    if_id: int  # the XFRM interface id on the kernel data path (the peer's index)
    # One end of each pair starts the tunnel (the lower-numbered node); the other only answers.
    # When both ends start at once, every pair ends up with two IKE SAs that never go away.
    initiator: bool = True


@dataclass(frozen=True)
class Pod:
    name: str
    node: str
    ip: str | None
    state: str = "Running"
    restarts: int = 0
    created: float = 0.0
    netns: str = ""  # the pod's namespace as the node sees it: /run/netns/cni-...


@dataclass(frozen=True)
class Service:
    name: str
    type: str
    port: int
    node_port: int


@dataclass(frozen=True)
class LabSpec:
    name: str = "lab"
    nodes: int = 3
    underlay: IPv4Network = field(default_factory=lambda: IPv4Network(DEFAULT_UNDERLAY))
    pod_supernet: IPv4Network = field(default_factory=lambda: IPv4Network(DEFAULT_POD_SUPERNET))
    ike_proposal: str = DEFAULT_IKE_PROPOSAL
    esp_proposal: str = DEFAULT_ESP_PROPOSAL
    underlay_mtu: int = 1500
    rekey_s: int | None = None  # short SA lifetimes (`up --rekey-s N`): CHILD SAs rekey every ~N s
    auth: str = "psk"  # AUTH_METHODS

    @classmethod
    def build(
        cls,
        name: str = "lab",
        nodes: int = 3,
        underlay: str = DEFAULT_UNDERLAY,
        pod_supernet: str = DEFAULT_POD_SUPERNET,
        *,
        underlay_mtu: int = 1500,
        rekey_s: int | None = None,
        auth: str = "psk",
    ) -> "LabSpec":
        """Validate user input and build a spec; raises UsageError with one clear line."""
        naming.validate_lab_name(name)
        if auth not in AUTH_METHODS:
            raise UsageError(f"unknown authentication {auth!r}; expected one of {', '.join(AUTH_METHODS)}")
        if not isinstance(nodes, int) or not MIN_NODES <= nodes <= MAX_NODES:
            raise UsageError(f"node count must be between {MIN_NODES} and {MAX_NODES}, got {nodes}")
        underlay_net = _parse_net("underlay subnet", underlay)
        pods_net = _parse_net("pod supernet", pod_supernet)
        if underlay_net.overlaps(pods_net):
            raise UsageError(f"underlay subnet {underlay_net} overlaps the pod supernet {pods_net}")
        if underlay_net.num_addresses < NODE_HOST_OFFSET + nodes + 2:
            raise UsageError(
                f"underlay subnet {underlay_net} is too small for {nodes} nodes at .{NODE_HOST_OFFSET + 1} and up"
            )
        if pods_net.prefixlen > 23 or 2 ** (24 - pods_net.prefixlen) <= nodes:
            raise UsageError(f"pod supernet {pods_net} cannot hold a /24 for each of {nodes} nodes")
        if rekey_s is not None and not MIN_REKEY_S <= rekey_s <= MAX_REKEY_S:
            raise UsageError(f"--rekey-s must be between {MIN_REKEY_S} and {MAX_REKEY_S} seconds, got {rekey_s}")
        return cls(name=name, nodes=nodes, underlay=underlay_net, pod_supernet=pods_net, underlay_mtu=underlay_mtu,
                   rekey_s=rekey_s, auth=auth)

    # -- topology ---------------------------------------------------------------------------
    @property
    def gateway(self) -> IPv4Address:
        return self.underlay.network_address + 1

    @property
    def pod_mtu(self) -> int:
        return min(LIBIPSEC_TUN_MTU, self.underlay_mtu - IPSEC_OVERHEAD)

    def node(self, index_or_name: int | str) -> Node:
        index = index_or_name if isinstance(index_or_name, int) else naming.node_index(index_or_name)
        if index is None or not 1 <= index <= self.nodes:
            names = ", ".join(naming.node_name(i) for i in range(1, self.nodes + 1))
            raise UsageError(f"unknown node {index_or_name!r}; this lab has {names}")
        pod_cidr = IPv4Network((int(self.pod_supernet.network_address) + (index << 8), 24))
        return Node(
            name=naming.node_name(index),
            index=index,
            underlay_ip=self.underlay.network_address + NODE_HOST_OFFSET + index,
            pod_cidr=pod_cidr,
        )

    def node_list(self) -> list[Node]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    def tunnels_of(self, node: Node | str) -> list[Tunnel]:
        local = node if isinstance(node, Node) else self.node(node)
        out = []
        for peer in self.node_list():
            if peer.index == local.index:
                continue
            out.append(
                Tunnel(
                    node=local.name,
                    name=naming.tunnel_name(self.nodes, local.index, peer.index),
                    peer=peer.name,
                    local_addr=local.underlay_ip,
                    remote_addr=peer.underlay_ip,
                    local_ts=local.pod_cidr,
                    remote_ts=peer.pod_cidr,
                    if_id=peer.index,
                    initiator=local.index < peer.index,
                )
            )
        return out

    def tunnels(self) -> list[Tunnel]:
        return [t for n in self.node_list() for t in self.tunnels_of(n)]

    def tunnel(self, node: str, conn: str) -> Tunnel:
        for t in self.tunnels_of(node):
            if t.name == conn:
                return t
        names = ", ".join(t.name for t in self.tunnels_of(node))
        raise UsageError(f"unknown connection {conn!r} on {node}; it has {names}")

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": self.nodes,
            "underlay": str(self.underlay),
            "pod_supernet": str(self.pod_supernet),
            "ike_proposal": self.ike_proposal,
            "esp_proposal": self.esp_proposal,
            "underlay_mtu": self.underlay_mtu,
            "auth": self.auth,
        } | ({"rekey_s": self.rekey_s} if self.rekey_s is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabSpec":
        return cls(
            name=d["name"],
            nodes=int(d["nodes"]),
            underlay=IPv4Network(d["underlay"]),
            pod_supernet=IPv4Network(d["pod_supernet"]),
            ike_proposal=d["ike_proposal"],
            esp_proposal=d["esp_proposal"],
            underlay_mtu=int(d.get("underlay_mtu", 1500)),
            rekey_s=int(d["rekey_s"]) if d.get("rekey_s") is not None else None,
            auth=str(d.get("auth", "psk")),
        )


def pair_key(a: str, b: str) -> str:
    """The key of an unordered node pair (both ends share one pre-shared key)."""
    return "|".join(sorted((a, b)))


def _parse_net(what: str, text: str) -> IPv4Network:
    try:
        net = IPv4Network(text, strict=True)
    except ValueError as exc:
        raise UsageError(f"malformed {what} {text!r}: {exc}") from None
    return net
