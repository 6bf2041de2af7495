"""The Backend interface every face (CLI, checks, TUI, tutorial) uses."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Sequence

from ..lab.events import Reporter
from ..lab.model import LabSpec, Pod, Service
from ..lab.preflight import Finding
from ..lab.proc import Result
from ..lab.status import LabStatus


def announce_script(spec: LabSpec, node: str) -> str | None:
    """A shell line that starts, at once, the connections `node` only answers.

    Run after its IPsec daemon restarted or it rebooted: the peers still hold SAs with the old
    daemon, and the INITIAL_CONTACT these initiations carry makes them drop those at once,
    instead of after dead peer detection. (The lower-numbered end of each pair starts the
    others by itself, per swanctl.conf.) None when the node answers no connection.
    """
    passive = [t.name for t in spec.tunnels_of(node) if not t.initiator]
    if not passive:
        return None
    return " ".join(f"swanctl --initiate --child {c} --timeout 5 >/dev/null 2>&1 &" for c in passive) + " wait"


class Backend(abc.ABC):
    """One lab on one backend. Methods raise LabError (one clear line) on failure."""

    name: str = "base"
    cni_bin_dir: str = "/usr/lib/cni"  # where the node's CNI plugins live (/opt/cni/bin on kubeadm nodes)

    def __init__(self, lab: str, reporter: Reporter | None = None) -> None:
        self.lab = lab
        self.reporter = reporter or Reporter()

    # -- capabilities: what this backend can do. Faces ask these, never the backend's name.
    @property
    def pods_are_namespaces(self) -> bool:
        """Pods are network namespaces with an HTTP server (no kubelet), as on the netns backend."""
        return False

    @property
    def can_cut_link(self) -> bool:
        """set_underlay_link works (an underlay outage can be staged)."""
        return True

    def charon_log(self, node: str) -> Path | None:
        """The node's charon log as a file on this machine, or None where it lives on the node."""
        return None

    def read_charon_log(self, node: str, offset: int) -> tuple[list[str], int]:
        """The node's charon log lines after byte `offset`, and the offset to ask from next time.

        A log shorter than `offset` was started anew (the node rebooted): its lines are read from
        the start, so each line is returned once. The default reads charon_log(node); a backend
        whose logs live on the nodes fetches them from there."""
        path = self.charon_log(node)
        if path is None:
            return [], offset
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                if size < offset:
                    offset = 0
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        return data[:end].decode(errors="replace").splitlines(), offset + end

    # lifecycle
    @abc.abstractmethod
    def up(self, spec: LabSpec, *, datapath: str | None = None) -> LabStatus:
        """Bring the lab up on `datapath` (None: the best this machine has); roll back on failure."""

    @abc.abstractmethod
    def down(self) -> list[str]:
        """Remove everything of the lab, even after a crash; returns what was removed."""

    @abc.abstractmethod
    def exists(self) -> bool: ...

    @abc.abstractmethod
    def spec(self) -> LabSpec: ...

    def doctor(self) -> list[Finding]:
        """Every prerequisite of a new lab on this backend, found or not (`ipsec-lab doctor`, and the
        TUI before it takes the screen). `up` asks the same before it creates anything."""
        return []

    @abc.abstractmethod
    def status(self) -> LabStatus: ...

    # commands on nodes
    @abc.abstractmethod
    def node_argv(self, node: str, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        """The argv that runs `argv` on `node` as if typed there (for exec/ssh)."""

    @abc.abstractmethod
    def exec(self, node: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0) -> Result: ...

    @abc.abstractmethod
    def cni_config(self, node: str) -> dict:
        """The node's CNI network config list, as the runtime reads it from /etc/cni/net.d."""

    @abc.abstractmethod
    def pod_exec(self, pod: str, argv: Sequence[str], *, timeout: float = 30.0) -> Result:
        """Run a command in a pod's network namespace (kubectl exec on a real cluster)."""

    # observing the wire
    @abc.abstractmethod
    def start_capture(self, name: str) -> object:
        """Start a packet capture on the underlay (every node's IPsec traffic); returns a handle."""

    @abc.abstractmethod
    def stop_capture(self, handle: object) -> str:
        """Stop a capture; returns the path of its pcap file on this machine."""

    @abc.abstractmethod
    def set_underlay_link(self, node: str, up: bool) -> None:
        """Cut or restore a node's underlay link (an outage the IPsec mesh must survive)."""

    # workload
    @abc.abstractmethod
    def deploy(self, replicas: int = 9) -> list[Pod]: ...

    @abc.abstractmethod
    def delete_pod(self, name: str) -> Pod:
        """Delete a pod; the deployment replaces it. Returns the replacement."""

    @abc.abstractmethod
    def expose(self, node_port: int | None = None) -> Service: ...

    # faults
    @abc.abstractmethod
    def tunnel_down(self, node: str, conn: str) -> str:
        """Take one connection down as `ipsec down CONN` does; returns the command it ran."""

    @abc.abstractmethod
    def tunnel_up(self, node: str, conn: str) -> str: ...

    @abc.abstractmethod
    def restart_ipsec(self, node: str) -> None: ...

    @abc.abstractmethod
    def reboot(self, node: str) -> None: ...
