"""The tutorial's "do it" actions: each runs the step for real and returns what a learner sees.

Every command shown is the one that ran, prefixed with the node it ran on (`kube-node1# ...`).
Experiments that break something put it back before they return; the step's check proves it.
Actions use only the Backend interface, so they run on netns and Vagrant alike.
"""

from __future__ import annotations

import shlex
import time
from typing import Callable

from ..backends.base import Backend
from ..lab import commands, pcap, probes
from ..lab.errors import LabError
from ..lab.events import Reporter
from ..lab.model import LabSpec
from ..live.capture import CaptureSession, capture_during, describe

Action = Callable[[Backend, Reporter], list[str]]
ACTIONS: dict[str, Action] = {}

FORWARD_RULE = ["FORWARD", "-i", "cni0", "-m", "comment", "--comment", "ipsec-lab: pods out", "-j", "ACCEPT"]


def action(name: str) -> Callable[[Action], Action]:
    def register(fn: Action) -> Action:
        ACTIONS[name] = fn
        return fn

    return register


class Transcript:
    """Runs commands on nodes and keeps a terminal-like transcript of them."""

    def __init__(self, backend: Backend, reporter: Reporter) -> None:
        self.backend, self.reporter, self.lines = backend, reporter, []

    def say(self, text: str) -> None:
        self.lines.append(text)
        self.reporter.line(text, source="tutorial")

    def run(self, node: str, argv: list[str], *, max_lines: int = 14, input: str | None = None):
        self.say(f"{node}# {shlex.join(argv) if argv[:2] != ['sh', '-c'] else argv[2]}")
        res = self.backend.exec(node, argv, input=input, timeout=30)
        out = (res.stdout + res.stderr).rstrip().splitlines()
        for line in out[:max_lines]:
            self.say(f"  {line}")
        if len(out) > max_lines:
            self.say(f"  ... ({len(out) - max_lines} more lines)")
        if not res.ok:
            self.say(f"  (exit {res.returncode})")
        return res

    def pod_run(self, pod: str, argv: list[str]):
        self.say(f"[pod {pod}]# {shlex.join(argv)}")
        res = self.backend.pod_exec(pod, argv, timeout=30)
        for line in (res.stdout + res.stderr).rstrip().splitlines()[:6]:
            self.say(f"  {line}")
        if not res.ok:
            self.say(f"  (exit {res.returncode})")
        return res


def _pods_on(backend: Backend, node: str):
    return [p for p in backend.status().pods if p.node == node and p.ip]


def _first_pod(backend: Backend, node: str):
    pods = _pods_on(backend, node)
    if not pods:
        raise LabError(f"no pod on {node}: do the deploy step first")
    return pods[0]


def _node_table(backend: Backend, t: Transcript) -> None:
    st = backend.status()
    t.say(f"{'NAME':<12} {'STATUS':<8} {'IP':<15} {'POD CIDR':<15} IPSEC")
    for n in st.nodes:
        t.say(f"{n.name:<12} {('Ready' if n.state == 'ready' else n.state):<8} {n.ip:<15} {n.pod_cidr:<15} {n.ipsec_state}")


def _pod_table(backend: Backend, t: Transcript) -> None:
    t.say(f"{'NAME':<38} {'STATUS':<8} {'RESTARTS':<8} {'IP':<12} NODE")
    for p in backend.status().pods:
        t.say(f"{p.name:<38} {p.state:<8} {p.restarts:<8} {p.ip or '<none>':<12} {p.node}")


@action("lab-up")
def lab_up(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    if not backend.exists():
        t.say(f"$ ipsec-lab --lab {backend.lab} up")
        backend.up(LabSpec.build(backend.lab, 3))
    t.say("$ ipsec-lab status   (on the seed's cluster: kubectl get nodes)")
    _node_table(backend, t)
    return t.lines


@action("show-mesh")
def show_mesh(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    st = backend.status()
    n = len(st.nodes)
    t.say(f"{n} nodes -> {n * (n - 1) // 2} tunnels (n(n-1)/2), {len(st.tunnels)} tunnel ends")
    t.run("kube-node1", commands.swanctl_list_sas(), max_lines=24)
    return t.lines


@action("deploy")
def deploy(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    replicas = 3 * len(backend.spec().node_list())
    t.say(f"$ ipsec-lab deploy --replicas {replicas}")
    t.say(f"  (seed: kubectl create deployment kubernetes-bootcamp --replicas={replicas} "
          "--image=gcr.io/google-samples/kubernetes-bootcamp:v1)")
    backend.deploy(replicas)
    t.say("$ kubectl get pods -o wide")
    _pod_table(backend, t)
    return t.lines


@action("ping-curl")
def ping_curl(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    nodes = [n.name for n in backend.spec().node_list()]
    far = _first_pod(backend, nodes[-1])
    t.run(nodes[0], ["ping", "-c", "3", "-i", "0.2", far.ip])
    for src, dst in ((nodes[1], nodes[0]), (nodes[-1], nodes[1])):
        pod = _first_pod(backend, dst)
        t.run(src, ["curl", "-s", "-m", "3", f"http://{pod.ip}:8080"])
    a, b = _first_pod(backend, nodes[0]), _first_pod(backend, nodes[1])
    t.pod_run(a.name, ["curl", "-s", "-m", "3", f"http://{b.ip}:8080"])
    return t.lines


@action("expose")
def expose(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    t.say("$ ipsec-lab expose   (seed: kubectl expose deployment kubernetes-bootcamp --type=NodePort --port 8080)")
    svc = backend.expose()
    t.say(f"service {svc.name}: NodePort {svc.node_port} -> {svc.port} on every node")
    node = backend.spec().node_list()[0]
    url = f"http://{node.cni0_ip}:{svc.node_port}"
    t.say(f"{node.name}# for i in 1 2 3 4 5 6; do curl -s {url}; done")
    for r in probes.http_get_many(backend, node.name, [url] * 6):
        t.say(f"  {r.body}")
    return t.lines


@action("capture")
def capture(backend: Backend, reporter: Reporter) -> list[str]:
    """`ipsec-lab capture` on the receiving node, twice: its underlay (ESP only) and its cni0 (the
    same request in clear, inside the node, after decryption)."""
    t = Transcript(backend, reporter)
    spec = backend.spec()
    nodes = spec.node_list()
    src, dst = _first_pod(backend, nodes[0].name), _first_pod(backend, nodes[1].name)
    node = dst.node

    def curls() -> None:
        for _ in range(3):
            t.pod_run(src.name, ["curl", "-s", "-m", "3", f"http://{dst.ip}:8080/SECRET-MARKER"])

    under = CaptureSession(backend, node)
    t.say(f"$ ipsec-lab capture {node} -w wire.pcap    (its underlay; in the TUI: 6, Capture)")
    try:
        lines = capture_during(under, curls)
        t.say(f"  {node}'s underlay is {under.iface}; tcpdump printed {len(lines)} lines, e.g.:")
        for line in [ln for ln in lines if "ESP" in ln][:4] or lines[:4]:
            t.say(f"  {line}")
        s = under.summary(spec.pod_supernet)
        if s is not None and under.pcap_path is not None:
            marker = pcap.summarize(str(under.pcap_path), spec.pod_supernet, b"SECRET-MARKER").marker_hits
            t.say(f"captured {describe(s)}; {marker} carrying the marker")
    finally:
        under.close()
    inner = CaptureSession(backend, node, "cni0", "tcp port 8080")
    t.say(f"$ ipsec-lab capture {node} --iface cni0 --filter 'tcp port 8080'    (inside the node, decrypted)")
    try:
        lines = capture_during(inner, curls)
    finally:
        inner.close()
    for line in [ln for ln in lines if "HTTP:" in ln][:3] or lines[:3]:
        t.say(f"  {line}")
    return t.lines


def _watch_tunnel(backend: Backend, t: Transcript, node: str, conn: str, before_spi: str, seconds: float = 5.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        now = backend.status().tunnel(node, conn)
        if now and now.up and now.detail.get("ike_spi_local") != before_spi:
            t.say(f"{node} {conn}: a new IKE SA is ESTABLISHED, CHILD SA INSTALLED "
                  f"{(time.monotonic() - t0) * 1000:.0f} ms later — nobody touched it")
            return
        time.sleep(0.01)
    t.say(f"{node} {conn}: not back within {seconds:.0f} s")


@action("tunnel-down")
def tunnel_down(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    node, conn = "kube-node1", backend.spec().tunnels_of("kube-node1")[0].name
    before = backend.status().tunnel(node, conn)
    spi = before.detail.get("ike_spi_local", "") if before else ""
    t.say(f"{node}# swanctl --terminate --ike {conn}      (the seed: ipsec down {conn})")
    backend.tunnel_down(node, conn)
    _watch_tunnel(backend, t, node, conn, spi)
    return t.lines


@action("restart-ipsec")
def restart_ipsec(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    node = backend.spec().node_list()[-1].name
    t.say(f"$ ipsec-lab restart-ipsec {node}      (on a VM: systemctl restart strongswan)")
    t0 = time.monotonic()
    backend.restart_ipsec(node)
    while not backend.status().all_tunnels_up and time.monotonic() - t0 < 15:
        time.sleep(0.02)
    t.say(f"every tunnel ESTABLISHED again {time.monotonic() - t0:.2f} s after the restart began")
    t.run(node, commands.swanctl_list_sas(), max_lines=8)
    return t.lines


@action("reboot")
def reboot(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    node = backend.spec().node_list()[1].name
    t.say(f"$ ipsec-lab reboot {node}")
    t0 = time.monotonic()
    backend.reboot(node)
    while not backend.status().all_tunnels_up and time.monotonic() - t0 < 30:
        time.sleep(0.02)
    t.say(f"{node} is back, its tunnels ESTABLISHED, {time.monotonic() - t0:.2f} s after the reboot began")
    _pod_table(backend, t)
    return t.lines


@action("ipam")
def ipam(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    node = backend.spec().node_list()[-1].name
    conf = backend.cni_config(node)
    data_dir = conf["plugins"][0]["ipam"].get("dataDir", "/var/lib/cni/networks")
    where = f"{data_dir}/{conf['name']}"
    t.say(f"host-local keeps one file per address it handed out, in dataDir = {data_dir}")
    t.run(node, ["ls", where])
    victim = _first_pod(backend, node)
    t.say(f"$ ipsec-lab delete-pod {victim.name}")
    new = backend.delete_pod(victim.name)
    t.say(f"  replaced by {new.name} on {new.node} with {new.ip} (the next free address; {victim.ip} was released)")
    t.say(f"$ ipsec-lab reboot {node}")
    backend.reboot(node)
    t.run(node, ["ls", where])
    t.say("after the reboot only the pods running now hold addresses: nothing leaked, nothing to exhaust")
    return t.lines


@action("start-order")
def start_order(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    for n in backend.spec().node_list():
        res = backend.exec(n.name, commands.boot_order_probe())
        fields = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.split()}
        cni0 = " ".join(fields.get("cni0", [])) or "missing"
        t.say(f"{n.name}: cni0 {cni0}; boot script done at {fields.get('boot', ['?'])[0]} s, "
              f"charon started at {fields.get('charon', ['?'])[0]} s (seconds since the kernel booted)")
    return t.lines


@action("forward-drop")
def forward_drop(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    nodes = backend.spec().node_list()
    node = nodes[-1].name
    src, dst = _first_pod(backend, node), _first_pod(backend, nodes[0].name)
    t.run(node, commands.iptables_list("FORWARD"))
    t.say("1. remove the accept rule for pod traffic leaving cni0:")
    t.run(node, ["iptables", "-w", "-D", *FORWARD_RULE])
    try:
        t.pod_run(src.name, ["curl", "-s", "-m", "2", f"http://{dst.ip}:8080"])
        t.say("   no answer: with FORWARD policy DROP, the node drops its pods' traffic")
    finally:
        t.say("2. put it back:")
        t.run(node, ["sh", "-c", f"iptables -w -C {' '.join(_q(FORWARD_RULE))} 2>/dev/null || "
                                 f"iptables -w -A {' '.join(_q(FORWARD_RULE))}"])
    t.pod_run(src.name, ["curl", "-s", "-m", "3", f"http://{dst.ip}:8080"])
    return t.lines


def _q(args: list[str]) -> list[str]:
    return [f"'{a}'" if " " in a else a for a in args]


@action("guard")
def guard(backend: Backend, reporter: Reporter) -> list[str]:
    t = Transcript(backend, reporter)
    spec = backend.spec()
    n1, n2 = spec.node_list()[0], spec.node_list()[1]
    src, dst = _first_pod(backend, n1.name), _first_pod(backend, n2.name)
    datapath = backend.status().datapath
    guard_route = ["ip", "route", "replace", "unreachable", str(spec.pod_supernet)]
    if datapath == "kernel-libipsec":
        t.run(n1.name, ["ip", "rule"], max_lines=6)
        t.run(n1.name, ["ip", "route", "show", "table", "220"])
        off = ["sh", "-c", "ip rule del pref 220"]
        on = ["sh", "-c", "ip rule show pref 220 | grep -q . || ip rule add pref 220 table 220"]
    else:
        peer_if = f"ipsec-n{n2.index}"
        t.run(n1.name, ["ip", "route", "show", "dev", peer_if])
        off = ["ip", "route", "del", str(n2.pod_cidr), "dev", peer_if]
        on = ["ip", "route", "replace", str(n2.pod_cidr), "dev", peer_if, "src", str(n1.cni0_ip)]

    def probe(label: str) -> None:
        handle = backend.start_capture(f"guard-{label}")
        try:
            backend.pod_exec(src.name, ["curl", "-s", "-m", "1", f"http://{dst.ip}:8080"])
        finally:
            path = backend.stop_capture(handle)
        s = pcap.summarize(path, spec.pod_supernet)
        t.say(f"   underlay capture: {s.cleartext_pod} packets with pod addresses in clear "
              f"({', '.join(s.examples) or 'none'}), {s.esp} ESP")

    t.say("1. take kube-node1's pod traffic off the IPsec route (what a policy that does not match does):")
    t.run(n1.name, off)
    t.say("   ... and remove the cleartext guard:")
    t.run(n1.name, ["ip", "route", "del", "unreachable", str(spec.pod_supernet)])
    try:
        probe("leak")
        t.say("2. put the guard back (traffic with no tunnel is dropped, not sent in clear):")
        t.run(n1.name, guard_route)
        probe("guarded")
    finally:
        t.say("3. restore the IPsec route:")
        t.run(n1.name, guard_route)
        t.run(n1.name, on)
    t.pod_run(src.name, ["curl", "-s", "-m", "3", f"http://{dst.ip}:8080"])
    return t.lines


@action("rekey")
def rekey(backend: Backend, reporter: Reporter) -> list[str]:
    from ..live.rekey import rekey_now

    t = Transcript(backend, reporter)
    node = backend.spec().node_list()[0].name
    conn = backend.spec().tunnels_of(node)[0].name
    t.say(f"$ ipsec-lab rekey {node} {conn}      (a 10 ms ping runs across the tunnel meanwhile)")
    report = rekey_now(backend, node, conn)
    for part in report.parts:
        t.say(f"  {part}")
    t.run(node, ["swanctl", "--list-sas", "--ike", conn], max_lines=18)
    return t.lines
