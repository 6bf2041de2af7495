"""The netns lab's state, typed: what state.json holds (its JSON format is unchanged).

state.json is written before the first namespace exists and after every change, so `down` finds
everything of the lab even after a crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..lab.model import LabSpec, Service
from ..lab.proc import ProcRef


@dataclass
class NodeRecord:
    state: str = "creating"  # creating | booting | ready | down
    boots: int = 0
    charon: ProcRef | None = None
    podserver: ProcRef | None = None
    booted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "boots": self.boots}
        if self.charon is not None:
            out["charon"] = self.charon.to_list()
        if self.podserver is not None:
            out["podserver"] = self.podserver.to_list()
        if self.booted_at is not None:
            out["booted_at"] = self.booted_at
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "NodeRecord":
        return cls(state=str(d.get("state", "unknown")), boots=int(d.get("boots", 0)),
                   charon=ProcRef.from_list(d.get("charon")), podserver=ProcRef.from_list(d.get("podserver")),
                   booted_at=d.get("booted_at"))


@dataclass
class PodRecord:
    name: str
    node: str
    ip: str | None  # None while its node is down
    netns: str  # /run/netns/cni-... as the node sees it; "" while its node is down
    id: str  # the CNI container id
    restarts: int = 0
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "ip": self.ip, "netns": self.netns, "id": self.id,
                "restarts": self.restarts, "created": self.created}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "PodRecord":
        return cls(name=d["name"], node=d["node"], ip=d.get("ip"), netns=d.get("netns", ""), id=d.get("id", ""),
                   restarts=int(d.get("restarts", 0)), created=float(d.get("created", 0.0)))


@dataclass
class Deployment:
    name: str
    hash: str  # the pod-template hash in the pods' names
    replicas: int


@dataclass
class NetnsState:
    spec: LabSpec
    datapath: str
    secrets: dict[str, str]  # pair key -> pre-shared key
    nodes: dict[str, NodeRecord]
    created: float = 0.0
    phase: str = "creating"  # creating | up
    deployment: Deployment | None = None
    pods: list[PodRecord] = field(default_factory=list)
    service: Service | None = None
    version: int = 1
    backend: str = "netns"

    def pods_of(self, node: str) -> list[PodRecord]:
        return [p for p in self.pods if p.node == node]

    def pod(self, name: str) -> PodRecord | None:
        return next((p for p in self.pods if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "backend": self.backend, "phase": self.phase, "spec": self.spec.to_dict(),
            "datapath": self.datapath, "secrets": self.secrets, "created": self.created,
            "nodes": {name: n.to_json() for name, n in self.nodes.items()},
            "deployment": None if self.deployment is None else
            {"name": self.deployment.name, "hash": self.deployment.hash, "replicas": self.deployment.replicas},
            "pods": [p.to_json() for p in self.pods],
            "service": None if self.service is None else
            {"name": self.service.name, "type": self.service.type, "port": self.service.port,
             "node_port": self.service.node_port},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "NetnsState":
        dep, svc = d.get("deployment"), d.get("service")
        return cls(
            spec=LabSpec.from_dict(d["spec"]), datapath=str(d.get("datapath", "?")), secrets=dict(d.get("secrets") or {}),
            nodes={name: NodeRecord.from_json(n) for name, n in (d.get("nodes") or {}).items()},
            created=float(d.get("created", 0.0)), phase=str(d.get("phase", "creating")),
            deployment=None if not dep else Deployment(dep["name"], dep["hash"], int(dep["replicas"])),
            pods=[PodRecord.from_json(p) for p in d.get("pods") or []],
            service=None if not svc else Service(svc["name"], svc["type"], int(svc["port"]), int(svc["node_port"])),
            version=int(d.get("version", 1)), backend=str(d.get("backend", "netns")),
        )
