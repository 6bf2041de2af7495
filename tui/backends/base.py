"""The Backend interface every face (CLI, checks, TUI, tutorial) uses.

`Backend.up` is the one bring-up skeleton (a template method): check the spec, preflight, decide
the data path, render every file in memory, preflight what was rendered, then under the lab's
lock save the state, write the files, boot, wait for the IPsec mesh, and roll back on any
failure (unless IPSEC_LAB_NO_ROLLBACK=1). A backend supplies the hooks only (as netlab's
providers do: a base with no-op hooks), and states what it can do as capability properties:
faces ask those, never the backend's name.
"""

from __future__ import annotations

import abc
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from ..lab import state as labstate
from ..lab.errors import LabError, UsageError
from ..lab.events import Reporter
from ..lab.model import LabSpec, Pod, Service
from ..lab.preflight import Finding
from ..lab.proc import NodeProcess, Result, RunningCommand
from ..lab.render import RenderedFile
from ..lab.status import LabStatus, TunnelStatus

T = TypeVar("T")
R = TypeVar("R")


def parallel(fn: Callable[[T], R], items: Sequence[T], *, max_workers: int = 8) -> list[R]:
    """fn over items on up to `max_workers` threads, results in order; every item runs even when
    one fails, then the first failure is raised."""
    if len(items) == 1:
        return [fn(items[0])]
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(items)))) as pool:
        futures = [pool.submit(fn, it) for it in items]
        results: list[R] = []
        first_error: BaseException | None = None
        for f in futures:
            try:
                results.append(f.result())
            except BaseException as exc:  # collect all, raise the first
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results


def parallel_or_error(fn: Callable[[T], R], items: Sequence[T], *, max_workers: int = 8) -> list[R | LabError]:
    """As parallel(), but an item whose fn raised LabError gets that error as its result."""
    def guarded(it: T) -> R | LabError:
        try:
            return fn(it)
        except LabError as exc:
            return exc
    return parallel(guarded, items, max_workers=max_workers)


@dataclass(frozen=True)
class Plan:
    """What `up` will create, decided and rendered before anything on the machine changes."""

    spec: LabSpec
    datapath: str
    files: dict[str, dict[str, RenderedFile]]  # node -> role -> file
    secrets: dict[str, Any]  # what the files were rendered with (kept in the lab's state)
    detail: str = ""  # shown on the "render node configuration" step
    extra: dict[str, Any] = field(default_factory=dict)  # a backend's own choices (e.g. the provider)


class Backend(abc.ABC):
    """One lab on one backend. Methods raise LabError (one clear line) on failure."""

    name: str = "base"
    cni_bin_dir: str = "/usr/lib/cni"  # where the node's CNI plugins live (/opt/cni/bin on kubeadm nodes)
    mesh_timeout: float = 30.0  # seconds `up` waits for every tunnel end
    mesh_poll: float = 0.01  # seconds between two looks at the tunnels while waiting

    def __init__(self, lab: str, reporter: Reporter | None = None) -> None:
        self.lab = lab
        self.reporter = reporter or Reporter()
        self.paths = labstate.LabPaths.of(lab)

    # -- capabilities: what this backend can do. Faces ask these, never the backend's name.
    @property
    def pods_are_namespaces(self) -> bool:
        """Pods are network namespaces with an HTTP server (no kubelet), as on the netns backend."""
        return False

    @property
    def nodes_are_vms(self) -> bool:
        """Nodes are virtual machines: a reboot boots a kernel (the checks' VM bounds apply)."""
        return False

    def clock_offset(self, node: str) -> float:
        """How far the node's clock is ahead of this machine's (seconds): 0 where they share one.
        A ping loop's reply times come from the node's clock; faults are timed by ours."""
        return 0.0

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
        return split_complete_lines(data, offset)

    # -- lifecycle: the template method and its hooks ----------------------------------------
    def up(self, spec: LabSpec, *, datapath: str | None = None) -> LabStatus:
        """Bring the lab up on `datapath` (None: the best this machine has); roll back on failure.

        Nothing is created before the lock is held and every file rendered: a refusal (bad spec,
        missing tool, lab already up) changes nothing."""
        if spec.name != self.lab:
            raise UsageError(f"spec is for lab {spec.name!r}, backend for {self.lab!r}")
        self.preflight(spec)
        self._refuse_if_up()
        chosen = self.choose_datapath(datapath)
        with self.reporter.step("render node configuration") as step:
            plan = self.plan(spec, chosen)
            step.detail = plan.detail
        self.preflight_plan(plan)
        with labstate.lab_lock(self.paths):
            self._refuse_if_up()
            self.before_create(plan)
            self.save_state(plan)
            try:
                self.write_files(plan)
                self.boot(plan)
                self.wait_for_mesh(spec)
                self.mark_up(plan)
            except BaseException as exc:
                if os.environ.get("IPSEC_LAB_NO_ROLLBACK") == "1":  # for debugging a failed bring-up
                    self.reporter.line(f"bring-up failed ({exc}); left as is (IPSEC_LAB_NO_ROLLBACK=1)", stream="stderr")
                    raise
                self.reporter.line(f"bring-up failed ({exc}); rolling back", stream="stderr")
                self.teardown(quiet=True)
                raise
        return self.status()

    def _refuse_if_up(self) -> None:
        if self.exists():
            raise UsageError(f"lab {self.lab!r} is already up; `ipsec-lab --lab {self.lab} down` removes it")

    def preflight(self, spec: LabSpec) -> None:
        """Hook: refuse (UsageError, one line) what this machine cannot run; changes nothing."""

    def choose_datapath(self, requested: str | None) -> str:
        """Hook: the data path to use for `requested` (None: the best here); UsageError if impossible."""
        return requested or "kernel-xfrm"

    @abc.abstractmethod
    def plan(self, spec: LabSpec, datapath: str) -> Plan:
        """Hook: make the secrets and render every node's files, in memory."""

    def preflight_plan(self, plan: Plan) -> None:
        """Hook: refuse what the rendered files need and this machine lacks (e.g. a plugin)."""

    def before_create(self, plan: Plan) -> None:
        """Hook, under the lock: refuse leftovers of an earlier lab of the same name."""

    @abc.abstractmethod
    def save_state(self, plan: Plan) -> None:
        """Hook: record the lab (phase "creating") before anything exists, so `down` finds it all."""

    @abc.abstractmethod
    def write_files(self, plan: Plan) -> None:
        """Hook: write the rendered files where the nodes read them."""

    @abc.abstractmethod
    def boot(self, plan: Plan) -> None:
        """Hook: start the nodes (their IPsec daemons load the connections)."""

    def mark_up(self, plan: Plan) -> None:
        """Hook: record that the lab is up (phase "up")."""

    @abc.abstractmethod
    def teardown(self, quiet: bool) -> list[str]:
        """Hook: remove everything of the lab, even half-made; returns what was removed."""

    @abc.abstractmethod
    def tunnel_statuses(self, spec: LabSpec) -> list[TunnelStatus]:
        """Every tunnel end as its node's IPsec daemon reports it now (DOWN where it cannot tell)."""

    def wait_for_mesh(self, spec: LabSpec, timeout: float | None = None) -> float:
        """Wait until every tunnel end is ESTABLISHED with its CHILD SA INSTALLED; returns seconds."""
        limit = self.mesh_timeout if timeout is None else timeout
        t0 = time.monotonic()
        with self.reporter.step("wait for the IPsec mesh") as step:
            while True:
                st = self.tunnel_statuses(spec)
                elapsed = time.monotonic() - t0
                if st and all(t.up for t in st):
                    step.detail = f"{len(st) // 2} node pairs, {len(st)} tunnel ends ESTABLISHED/INSTALLED"
                    self.reporter.line(f"all {len(st)} tunnel ends ESTABLISHED with CHILD SA INSTALLED in {elapsed:.2f} s")
                    return elapsed
                if elapsed > limit:
                    down = [f"{t.node}/{t.name}" for t in st if not t.up]
                    raise LabError(f"tunnels not established after {limit:.0f} s: {', '.join(down[:6])}")
                time.sleep(self.mesh_poll)

    def down(self) -> list[str]:
        """Remove everything of the lab, even after a crash; returns what was removed."""
        with labstate.lab_lock(self.paths):
            removed = self.teardown(quiet=False)
        return removed

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

    def stream(self, node: str, argv: Sequence[str], *, stderr_to_parent: bool = False) -> RunningCommand:
        """Start `argv` on `node` and read its output while it runs (no input, no timeout: stop() ends it).
        stderr_to_parent: its stderr goes to ours (`ipsec-lab exec`); else it is dropped."""
        return NodeProcess(self.node_argv(node, argv), stderr_to_parent=stderr_to_parent)

    @abc.abstractmethod
    def cni_config(self, node: str) -> dict[str, Any]:
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

    def capture_file(self, node: str, name: str) -> tuple[str, Path] | None:
        """Where tcpdump on `node` may write pcap `name`, and where this machine reads it: (the path
        on the node, the file here). The same file where node_files_are_local; else fetch_node_file
        copies it here. None where a backend cannot keep a pcap: its captures stream lines only."""
        return None

    @property
    def node_files_are_local(self) -> bool:
        """Whether a node's files are on this machine (netns: its /run is a directory here), so a
        pcap tcpdump writes there can be read as it grows. False on VMs: see fetch_node_file."""
        return True

    def fetch_node_file(self, node: str, remote: str, local: Path) -> None:
        """Copy `remote` on `node` to `local` here (VMs). Nothing to do where node_files_are_local."""

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


def split_complete_lines(data: bytes, offset: int) -> tuple[list[str], int]:
    """The complete lines of `data` (read from byte `offset`), and the offset after the last one:
    a half-written last line waits for the next read."""
    end = data.rfind(b"\n") + 1
    return data[:end].decode(errors="replace").splitlines(), offset + end
