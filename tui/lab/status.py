"""What a lab looks like right now: the shape of `ipsec-lab status --json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .model import Pod, Service, cni0_address


@dataclass(frozen=True)
class NodeStatus:
    name: str
    ip: str
    pod_cidr: str
    state: str  # ready | booting | down
    ipsec_state: str  # running | stopped
    ipsec_uptime: float | None = None
    pods: int = 0
    ipam_used: int = 0  # addresses host-local has handed out from the node's /24

    @property
    def cni0_ip(self) -> str:
        """The node's cni0 address (model.cni0_address, the one rule for it)."""
        return str(cni0_address(self.pod_cidr))


@dataclass(frozen=True)
class TunnelStatus:
    node: str
    name: str
    peer: str
    ike_state: str  # ESTABLISHED, CONNECTING, ... or DOWN when strongSwan has no SA
    child_state: str  # INSTALLED, ... or DOWN
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    ike_sas: int = 0  # IKE SAs strongSwan holds for this connection (more than 1: a duplicate)
    detail: dict[str, Any] = field(default_factory=dict)  # proposals, SPIs, rekey/expiry times

    @property
    def up(self) -> bool:
        return self.ike_state == "ESTABLISHED" and self.child_state == "INSTALLED"


@dataclass(frozen=True)
class LabStatus:
    lab: str
    backend: str
    datapath: str
    nodes: list[NodeStatus]
    tunnels: list[TunnelStatus]
    pods: list[Pod]
    services: list[Service]
    hypervisor: str = ""  # VM backends: where the VMs run and how (e.g. "libvirt (...), TCG")

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "backend": self.backend,
            "datapath": self.datapath,
            "hypervisor": self.hypervisor,
            "nodes": [asdict(n) for n in self.nodes],
            "tunnels": [
                {k: v for k, v in asdict(t).items() if k != "detail"} | {"detail": t.detail} for t in self.tunnels
            ],
            "pods": [
                {"name": p.name, "node": p.node, "ip": p.ip, "state": p.state, "restarts": p.restarts, "created": p.created}
                for p in self.pods
            ],
            "services": [asdict(s) for s in self.services],
        }

    def tunnel(self, node: str, name: str) -> TunnelStatus | None:
        return next((t for t in self.tunnels if t.node == node and t.name == name), None)

    @property
    def all_tunnels_up(self) -> bool:
        return bool(self.tunnels) and all(t.up for t in self.tunnels)
