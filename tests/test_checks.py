"""The check suite: it passes on a healthy lab, and each check fails for its own cause.

Every negative test breaks exactly one property on a fresh real lab (strongSwan, CNI, iptables,
tcpdump: no mocks), runs the check that guards it, and asserts it fails with a detail a human can
act on; where it matters, a neighbouring check that guards something else still passes.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tui.backends.netns import NetnsBackend
from tui.checks import catalog
from tui.checks.base import CheckContext, Outcome
from tui.checks.runner import run_checks, run_one
from tui.lab.events import Reporter
from tui.lab.proc import ProcRef, stop

from .conftest import cli, lab_namespaces, started_lab, unique_lab, wait_for

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]


@pytest.fixture
def lab():
    """A fresh 3-node lab with the seed's workload, for one breakage."""
    with started_lab("c", node_port=31990) as backend:
        yield backend


def check(backend, name):
    ctx = CheckContext(backend, backend.spec(), Reporter())
    return run_one(catalog.BY_NAME[name], ctx)


def must_fail(backend, name, pattern):
    r = check(backend, name)
    assert r.outcome is Outcome.FAILED, f"{name} passed although broken: {r.detail}"
    assert re.search(pattern, r.detail), r.detail
    assert "\n" not in r.detail
    return r


def must_pass(backend, name):
    r = check(backend, name)
    assert r.outcome is Outcome.PASSED, r.detail
    return r


def sh(backend, node, script):
    res = backend.exec(node, ["sh", "-c", script])
    assert res.ok, res.stderr
    return res.stdout


def edit_swanctl(backend, node, fn):
    """Change a node's swanctl.conf and restart its daemon, so that every SA is made under it.

    `swanctl --load-all` on a live daemon is no substitute: it terminates the changed children,
    the peers re-initiate them (close_action = start), and the pair ends up with duplicate IKE SAs
    still under the old config. In CI one of those brought a tunnel back that the edit had doomed.
    """
    path = backend.paths.node_etc(node) / "swanctl" / "swanctl.conf"
    path.write_text(fn(path.read_text()))
    backend.restart_ipsec(node)


# -- the whole suite, headless, as CI runs it ------------------------------------------------
@pytest.mark.timeout(400)
def test_run_checks_passes_everything_and_writes_reports(tmp_path):
    name = unique_lab("h")
    junit, js = tmp_path / "r.xml", tmp_path / "r.json"
    try:
        cp = cli("--lab", name, "--run-checks", "--junit", str(junit), "--json", str(js), timeout=380)
    finally:
        cli("--lab", name, "down")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == catalog.catalog_names()
    assert suite.get("failures") == "0"
    gap = suite.find("testcase[@name='recover-tunnel-down']/properties/property[@name='gap_s (s)']")
    assert gap is not None and float(gap.get("value")) >= 0
    report = json.loads(js.read_text())
    assert report["passed"] is True and len(report["checks"]) == len(names)
    assert lab_namespaces(name) == []  # torn down: no --keep


def test_run_checks_usage_and_unreachable_lab_exit_codes():
    cp = cli("--run-checks", "--only", "no-such-check")
    assert cp.returncode == 3 and "unknown check 'no-such-check'" in cp.stderr
    # A lab whose state cannot be read cannot be reached: exit 2, and down still cleans up.
    from tui.lab.state import LabPaths

    name = unique_lab("u")
    paths = LabPaths.of(name)
    paths.dir.mkdir(parents=True)
    paths.state_file.write_text("{not json")
    try:
        cp = cli("--lab", name, "--run-checks", "--only", "nodes-ready")
        assert cp.returncode == 2, cp.stdout + cp.stderr
        assert "cannot be reached" in cp.stdout and "unreadable" in cp.stdout
    finally:
        assert cli("--lab", name, "down").returncode == 0
    assert not paths.dir.exists()
    cp = cli("--list-checks")
    assert cp.returncode == 0 and all(n in cp.stdout for n in catalog.catalog_names())


def test_run_checks_uses_a_running_lab_and_keeps_it(lab):
    cp = cli("--lab", lab.lab, "--run-checks", "--only", "nodes-ready", "tunnels-established")
    assert cp.returncode == 0, cp.stdout
    assert "2 passed, 0 failed" in cp.stdout
    assert lab.exists() and len(lab_namespaces(lab.lab)) == 4


# -- each check fails for its own cause ---------------------------------------------------------
def test_nodes_ready_fails_when_a_charon_is_stopped_without_restart(lab):
    stop([ProcRef.from_list(lab._load()["nodes"]["kube-node2"]["charon"])])
    must_fail(lab, "nodes-ready", r"kube-node2 is ready, IPsec stopped")


def test_tunnels_established_fails_when_a_peer_is_unreachable_for_ike(lab):
    # node2 drops IKE from node1, then node1's mesh-left is taken down: it cannot come back.
    sh(lab, "kube-node2", "iptables -w -I INPUT -s 192.168.56.11 -p udp -j DROP")
    lab.tunnel_down("kube-node1", "mesh-left")
    must_fail(lab, "tunnels-established", r"kube-node1 mesh-left \(to kube-node2\)")
    must_pass(lab, "nodes-ready")


def test_pod_addresses_fails_when_ipam_hands_out_a_foreign_range(lab):
    conf = lab.paths.node_etc("kube-node1") / "cni" / "net.d" / "10-ipsec-lab.conflist"
    # A CNI config with the wrong range (the bridge is told not to re-address cni0).
    conf.write_text(conf.read_text().replace("10.128.1.0/24", "10.128.9.0/24").replace("10.128.1.1", "10.128.9.1")
                    .replace('"isGateway": true', '"isGateway": false'))
    victim = next(p for p in lab.status().pods if p.node == "kube-node1")
    lab.delete_pod(victim.name)
    must_fail(lab, "pod-addresses", r"on kube-node1 has 10\.128\.9\.\d+, outside 10\.128\.1\.0/24")


def test_node_to_pod_fails_when_a_pod_loses_its_link(lab):
    pod = next(p for p in lab.status().pods if p.node == "kube-node3")
    assert lab.pod_exec(pod.name, ["ip", "link", "set", "eth0", "down"]).ok
    must_fail(lab, "node-to-pod", re.escape(pod.ip))


def test_pod_to_pod_http_fails_when_a_pod_rejects_http_but_answers_ping(lab):
    pod = next(p for p in lab.status().pods if p.node == "kube-node2")
    assert lab.pod_exec(pod.name, ["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT"]).ok
    must_fail(lab, "pod-to-pod-http", re.escape(pod.name))
    must_pass(lab, "node-to-pod")


def test_nodeport_balance_fails_when_a_node_loses_its_nodeport_rules(lab):
    sh(lab, "kube-node2", "iptables -w -t nat -F KUBE-NODEPORTS")
    must_fail(lab, "nodeport-balance", r"kube-node2: 150/150 requests failed")


def test_underlay_encrypted_fails_when_pod_traffic_is_routed_around_the_tunnel(lab):
    # Take node1's traffic off table 220 (the IPsec routes) and drop the guard: it leaves in clear.
    sh(lab, "kube-node1", "ip rule del pref 220 && ip route del unreachable 10.128.0.0/16")
    must_fail(lab, "underlay-encrypted", r"pod traffic in clear on the underlay: [1-9]\d* packets")


def test_pmtu_fails_when_the_underlay_mtu_shrinks(lab):
    # The field notes' trap: a 1400-byte underlay under libipsec's 1400-byte ipsec0.
    sh(lab, "kube-node1", "ip link set eth0 mtu 1400")
    subprocess.run(["ip", "-n", f"ilab-{lab.lab}-underlay", "link", "set", "v1", "mtu", "1400"], check=True)
    must_fail(lab, "pmtu", r"IP fragments on the underlay|don't-fragment pings lost")


def test_forward_policy_fails_without_the_accept_rules(lab):
    sh(lab, "kube-node3", "iptables -w -D FORWARD -i cni0 -m comment --comment 'ipsec-lab: pods out' -j ACCEPT")
    must_fail(lab, "forward-policy", r"kube-node3: no explicit ACCEPT for pod traffic out of cni0")
    # And it matters: pods on node3 no longer reach other nodes' pods.
    assert check(lab, "pod-to-pod-http").outcome is Outcome.FAILED


def test_boot_order_fails_when_cni0_is_set_up_after_strongswan(lab):
    script = (lab.paths.node_etc("kube-node2") / "ipsec-lab" / "node-boot.sh").read_text()
    import time

    time.sleep(0.05)  # process start times tick in 10 ms
    assert lab.exec("kube-node2", ["sh", "-s"], input=script).ok
    must_fail(lab, "boot-order", r"kube-node2: cni0/firewall set up at [\d.]+ s, after the IPsec daemon started")


def test_ipam_fails_when_host_local_data_is_on_persistent_storage(lab):
    conf = lab.paths.node_etc("kube-node3") / "cni" / "net.d" / "10-ipsec-lab.conflist"
    conf.write_text(conf.read_text().replace('"/run/cni/networks"', '"/var/log/cni-networks"'))
    must_fail(lab, "ipam-no-exhaustion", r"dataDir /var/log/cni-networks is on persistent storage.*10 leaked reservations survived")


class StickyDownBackend(NetnsBackend):
    """A tunnel-down after which the peer's attempts to bring the tunnel back never arrive."""

    def tunnel_down(self, node: str, conn: str) -> str:
        peer = self.spec().node(self.spec().tunnel(node, conn).peer)
        res = self.exec(node, ["iptables", "-w", "-I", "INPUT", "-s", str(peer.underlay_ip), "-p", "udp", "-j", "DROP"])
        assert res.ok, res.stderr
        return super().tunnel_down(node, conn)


def test_recover_tunnel_down_fails_when_the_peer_cannot_restart_it(lab):
    broken = StickyDownBackend(lab.lab)
    must_fail(broken, "recover-tunnel-down", r"did not come back within 3 s after kube-node1: swanctl --terminate")


class NoRestartBackend(NetnsBackend):
    """A broken 'restart': the daemon is stopped and never started again."""

    def restart_ipsec(self, node: str) -> None:
        stop([ProcRef.from_list(self._load()["nodes"][node]["charon"])])


class NoBootBackend(NetnsBackend):
    """A broken 'reboot': the node powers off and never comes back."""

    def reboot(self, node: str) -> None:
        self._load()
        self._halt_node(self.spec().node(node))


@pytest.mark.timeout(240)
def test_recover_ipsec_restart_fails_when_the_daemon_is_not_started_again(lab, monkeypatch):
    monkeypatch.setattr(catalog, "HEAL_TIMEOUT_S", 3.0)
    broken = NoRestartBackend(lab.lab)
    must_fail(broken, "recover-ipsec-restart", r"did not come back within 6 s after restart the IPsec daemon")


@pytest.mark.timeout(240)
def test_recover_node_reboot_fails_when_the_node_does_not_come_back(lab, monkeypatch):
    monkeypatch.setattr(catalog, "HEAL_TIMEOUT_S", 3.0)
    broken = NoBootBackend(lab.lab)
    must_fail(broken, "recover-node-reboot", r"did not come back within 11 s after reboot kube-node2")


@pytest.mark.timeout(240)
def test_recover_underlay_outage_fails_with_the_default_keyingtries(lab, monkeypatch):
    # The field notes' trap: keyingtries=1 ends the tunnel for good after a long outage.
    for node in ("kube-node1", "kube-node2"):
        edit_swanctl(lab, node, lambda c: c.replace("keyingtries = 0", "keyingtries = 1"))
    wait_for(lambda: check(lab, "tunnels-established").outcome is Outcome.PASSED, timeout=30,
             interval=0.5, what="the mesh under keyingtries = 1")
    # DPD (2 s) + a retransmit sequence (about 7 s) + one restart attempt (about 7 s): the peers
    # give up about 16 s into the outage; 30 s is safely past that.
    monkeypatch.setattr(catalog, "OUTAGE_S", 30.0)
    monkeypatch.setattr(catalog, "HEAL_TIMEOUT_S", 5.0)
    must_fail(lab, "recover-underlay-outage", r"did not come back within \d+ s|mesh did not heal")


def test_no_leak_during_faults_fails_without_the_cleartext_guard(lab, monkeypatch):
    monkeypatch.setattr(catalog, "HEAL_TIMEOUT_S", 3.0)  # mesh-left stays down on purpose
    # The faults heal within milliseconds, too fast for a 10 ms ping loop to fall into the gap;
    # a mesh-left that stays down gives the missing guard something to leak.
    sh(lab, "kube-node1", "ip route del unreachable 10.128.0.0/16")
    must_fail(StickyDownBackend(lab.lab), "no-leak-during-faults", r"pod packets in clear on the underlay during .*guard route")


def test_on_result_streams_each_check_as_it_finishes(lab):
    seen = []
    results = run_checks(lab, ["nodes-ready", "forward-policy"], on_result=seen.append)
    assert [r.name for r in seen] == ["nodes-ready", "forward-policy"] == [r.name for r in results]
    assert all(r.passed for r in results)
