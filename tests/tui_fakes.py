"""A fake backend for the TUI's snapshot tests and benchmark: it replays a recorded real status
(`ipsec-lab --lab X status --json` from a real netns lab, in tests/fixtures/) or a synthetic one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from tui.backends.base import Backend
from tui.checks.base import CheckResult, Measurement, Outcome
from tui.checks.catalog import BY_NAME
from tui.lab.model import LabSpec, Pod, Service
from tui.lab.proc import Result
from tui.lab.status import LabStatus, NodeStatus, TunnelStatus

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORDED = FIXTURES / "status_3nodes.json"
# The recorded status was taken at about this time; snapshot apps use it as "now".
RECORDED_NOW = 1795793265.14 + 300


def status_from_json(d: dict) -> LabStatus:
    return LabStatus(
        lab=d["lab"], backend=d["backend"], datapath=d["datapath"],
        nodes=[NodeStatus(**n) for n in d["nodes"]],
        tunnels=[TunnelStatus(**t) for t in d["tunnels"]],
        pods=[Pod(**p) for p in d["pods"]],
        services=[Service(**s) for s in d["services"]],
    )


def recorded_status(path: Path = RECORDED) -> LabStatus:
    return status_from_json(json.loads(path.read_text()))


RECORDED_20 = FIXTURES / "status_20nodes.json"  # `ipsec-lab status --json` of a real 20-node netns lab, 60 pods


def synthetic_status(nodes: int, lab: str = "bench") -> LabStatus:
    """A healthy lab of `nodes` nodes, shaped like a real one (detail fields as vici gives them)."""
    spec = LabSpec.build(lab, nodes)
    template = recorded_status().tunnels[0].detail
    ns = [NodeStatus(n.name, str(n.underlay_ip), str(n.pod_cidr), "ready", "running", 120.0, 3, 3)
          for n in spec.node_list()]
    ts = []
    for t in spec.tunnels():
        detail = dict(template, local_host=str(t.local_addr), remote_host=str(t.remote_addr),
                      local_ts=str(t.local_ts), remote_ts=str(t.remote_ts))
        ts.append(TunnelStatus(t.node, t.name, t.peer, "ESTABLISHED", "INSTALLED", 1000, 1000, 10, 10, 1, detail))
    pods = [Pod(f"kubernetes-bootcamp-5c69669756-{n.index:05d}{i}", n.name, str(n.pod_cidr.network_address + 2 + i),
                created=RECORDED_NOW - 100) for n in spec.node_list() for i in range(3)]
    return LabStatus(lab, "netns", "kernel-libipsec", ns, ts, pods, [Service("kubernetes-bootcamp", "NodePort", 8080, 31990)])


class FakeBackend(Backend):
    """Replays one status; every action is recorded and does nothing."""

    name = "netns"
    pods_are_namespaces = True  # it replays a netns lab

    def __init__(self, status: LabStatus) -> None:
        super().__init__(status.lab)
        self._status = status
        self.calls: list[tuple] = []

    def up(self, spec: LabSpec) -> LabStatus:
        self.calls.append(("up", spec.name))
        return self._status

    def down(self) -> list[str]:
        self.calls.append(("down",))
        return []

    def exists(self) -> bool:
        return True

    def spec(self) -> LabSpec:
        return LabSpec.build(self.lab, len(self._status.nodes))

    def status(self) -> LabStatus:
        return self._status

    def node_argv(self, node: str, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        return ["true"]

    def exec(self, node, argv, *, input=None, timeout=30.0) -> Result:
        self.calls.append(("exec", node, tuple(argv)))
        return Result(tuple(argv), 1, "", "fake backend")

    def stream(self, node, argv, *, stderr_to_parent=False):
        """A command that prints nothing and has ended (exit 1), recorded like exec."""
        self.calls.append(("stream", node, tuple(argv)))
        return _Ended()

    def pod_exec(self, pod, argv, *, timeout=30.0) -> Result:
        return Result(tuple(argv), 1, "", "fake backend")

    def start_capture(self, name):
        return None

    def stop_capture(self, handle) -> str:
        return ""

    def set_underlay_link(self, node, up) -> None:
        self.calls.append(("link", node, up))

    def deploy(self, replicas=9):
        self.calls.append(("deploy", replicas))
        return self._status.pods

    def delete_pod(self, name):
        self.calls.append(("delete_pod", name))
        return self._status.pods[0]

    def expose(self, node_port=None):
        self.calls.append(("expose", node_port))
        return self._status.services[0]

    def tunnel_down(self, node, conn) -> str:
        self.calls.append(("tunnel_down", node, conn))
        return f"swanctl --terminate --ike {conn}"

    def tunnel_up(self, node, conn) -> str:
        self.calls.append(("tunnel_up", node, conn))
        return f"swanctl --initiate --child {conn}"

    def restart_ipsec(self, node) -> None:
        self.calls.append(("restart_ipsec", node))

    def reboot(self, node) -> None:
        self.calls.append(("reboot", node))


# The Backend interface grows as the other faces need more (e.g. cni_config for the checks); the
# TUI's fake only needs what the TUI calls, so abstract methods it does not override are allowed.
FakeBackend.__abstractmethods__ = frozenset()


RECORDED_CHECKS = FIXTURES / "checks_3nodes.json"  # `--run-checks --only nodes-ready tunnels-established
#                                                    recover-tunnel-down --json` on a real 3-node netns lab
RECORDED_REBOOTING = FIXTURES / "status_3nodes_node3_rebooting.json"  # `status --json` while kube-node3 rebooted


def _recorded_results() -> list[CheckResult]:
    """Real results only: two recorded from a real run, and tunnels-established FAILED as the real
    check (collect + judge, through the runner) says it on the recorded status of a rebooting node."""
    from dataclasses import replace

    from tui.checks.runner import run_checks

    recorded = {c["name"]: CheckResult(c["name"], c["purpose"], Outcome(c["outcome"]), c["detail"], c["seconds"],
                                       tuple(Measurement(**m) for m in c["measurements"]))
                for c in json.loads(RECORDED_CHECKS.read_text())["checks"]}
    rebooting = status_from_json(json.loads(RECORDED_REBOOTING.read_text()))
    [failed] = run_checks(FakeBackend(rebooting), ["tunnels-established"], prepare_workload=False)
    assert failed.outcome is Outcome.FAILED, failed
    # seconds measured here vary from run to run; the recorded run's time keeps snapshots stable
    failed = replace(failed, seconds=recorded["tunnels-established"].seconds)
    return [recorded["nodes-ready"], failed, recorded["recover-tunnel-down"]]


FAKE_CATALOG = [BY_NAME["nodes-ready"], BY_NAME["tunnels-established"], BY_NAME["recover-tunnel-down"]]


FAKE_RESULTS = _recorded_results()


def fake_catalog():
    return list(FAKE_CATALOG), ""


def make_app(mode: str = "nodes", status: LabStatus | None = None, **kw):
    """A snapshot app: no threads, a fixed clock, the recorded status already applied."""
    from tui.app import IpsecLabApp
    from tui.live.logs import LogStore

    status = status or recorded_status()
    app = IpsecLabApp(FakeBackend(status), bring_up=False, clock=lambda: RECORDED_NOW, live_probes=False,
                      tail_logs=False, initial_mode=mode, initial_status=status, catalog_loader=fake_catalog, **kw)
    t0 = RECORDED_NOW - 60
    lines = [
        ("provisioning", None, "▶ detect data path"),
        ("provisioning", None, "data path: kernel-libipsec (userspace ESP in UDP; this kernel has no kernel ESP)"),
        ("provisioning", None, "✓ detect data path (0.01 s)"),
        ("provisioning", "kube-node1", "✓ boot kube-node1 (0.23 s)"),
        ("charon", "kube-node1", "2026-11-27T15:28:47 13[IKE] <mesh-left|11> IKE_SA mesh-left[11] established"),
        ("charon", "kube-node2", "2026-11-27T15:28:47 09[IKE] <mesh-left|2> CHILD_SA mesh-left{2} established"),
        ("actions", "kube-node1", "kube-node1# swanctl --terminate --ike mesh-left   (the seed's `ipsec down mesh-left`)"),
        ("checks", None, "PASSED  nodes-ready: 3 nodes ready"),
    ]
    app.logs = LogStore()
    for i, (source, node, text) in enumerate(lines):
        app.logs.add(source, text, node=node, at=t0 + i)
    app.set_reactive(IpsecLabApp.check_results, {r.name: r for r in FAKE_RESULTS})
    return app



class _Ended:
    """Backend.stream's result for a command that ended at once without output."""

    def lines(self):
        return iter(())

    def poll(self) -> int:
        return 1

    def wait(self, timeout=None) -> int:
        return 1

    def stop(self) -> None:
        pass
