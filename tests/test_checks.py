"""The check suite on real labs: it passes on a healthy lab, and each check fails for its own cause.

Every negative test breaks one property of a fresh real lab of its own (strongSwan, CNI, iptables,
tcpdump: no mocks, no backend subclasses), runs the check that guards it, and requires FAILED
(never ERROR: a check that could not look is no proof) with the exact detail, counts included.
The branches that keep a check from passing vacuously (the negative control, no ESP, a pod never
reached, the policy not DROP, a gap over the bound, the range exhausted) are broken here for real;
every other branch is shown on recorded real observations in tests/test_judges.py. The breakages
are shared with tests/record_observations.py, which made those recordings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tui.checks import catalog
from tui.checks.base import CheckContext, Outcome
from tui.checks.runner import run_checks, run_one
from tui.lab.events import Reporter

from . import record_observations as brk
from .conftest import cli, lab_namespaces, started_lab, unique_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

# The shortest underlay cut that proves the outage checks' point: with dpd_delay 2 s and
# retransmits of 1 s x 1.4^k, 3 tries (7.1 s), a peer declares the other dead about 9 s into an
# outage and, with keyingtries = 1, gives up after one more 7.1 s attempt (about 16 s in). A 20 s
# cut is past that point: the lab survives it only because keyingtries = 0 keeps trying.
LONG_OUTAGE_S = 20.0


@pytest.fixture
def lab():
    """A fresh 3-node lab with the seed's workload, for one breakage; always torn down."""
    with started_lab("c", node_port=31990) as backend:
        yield backend


def check(backend, name):
    return run_one(catalog.BY_NAME[name], CheckContext(backend, backend.spec(), Reporter()))


def must_fail(backend, name, detail):
    """FAILED with exactly this detail (a str), or one matching this whole pattern (re.Pattern,
    only for measured times)."""
    r = check(backend, name)
    assert r.outcome is Outcome.FAILED, f"{name} ended {r.outcome.value}, not failed: {r.detail}"
    if isinstance(detail, re.Pattern):
        assert detail.fullmatch(r.detail), r.detail
    else:
        assert r.detail == detail
    return r


def must_pass(backend, name):
    r = check(backend, name)
    assert r.outcome is Outcome.PASSED, r.detail
    return r


def pods_on(backend, node):
    return sorted((p for p in backend.status().pods if p.node == node), key=lambda p: p.ip)


def set_catalog(monkeypatch, **values):
    for k, v in values.items():
        monkeypatch.setattr(catalog, k, v)


# -- the whole suite, headless, as CI runs it ------------------------------------------------
@pytest.mark.timeout(300)
def test_run_checks_passes_everything_and_writes_reports(tmp_path):
    name = unique_lab("h")
    junit, js = tmp_path / "r.xml", tmp_path / "r.json"
    try:
        cp = cli("--lab", name, "--run-checks", "--junit", str(junit), "--json", str(js), timeout=280,
                 env={**os.environ, "IPSEC_LAB_OUTAGE_S": str(LONG_OUTAGE_S), "IPSEC_LAB_LOSS_S": "10"})
    finally:
        cli("--lab", name, "down")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == catalog.catalog_names()
    # Every check PASSED: a skipped, failed or errored one fails this test.
    assert (suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("0", "0", "0")
    assert [c.get("name") for c in cases if any(e.tag in ("failure", "error", "skipped") for e in c)] == []
    gap = suite.find("testcase[@name='recover-tunnel-down']/properties/property[@name='gap_s (s)']")
    assert gap is not None and 0 < float(gap.get("value")) <= catalog.BOUND_TUNNEL_DOWN_S
    report = json.loads(js.read_text())
    assert report["counts"] == {"passed": len(cases), "failed": 0, "error": 0, "skipped": 0}
    assert report["passed"] is True and report["exit_code"] == 0
    outage = next(c for c in report["checks"] if c["name"] == "recover-underlay-outage")
    assert outage["observation"]["outage_s"] == LONG_OUTAGE_S
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
    assert "2 passed, 0 failed, 0 errors, 0 skipped" in cp.stdout
    assert lab.exists() and len(lab_namespaces(lab.lab)) == 4


def test_a_check_that_cannot_observe_is_an_error_with_its_own_exit_code(lab, tmp_path):
    # The underlay bridge renamed: traffic still flows, but tcpdump cannot listen on br0.
    subprocess.run(["ip", "-n", f"ilab-{lab.lab}-underlay", "link", "set", "br0", "name", "br0x"], check=True)
    junit = tmp_path / "r.xml"
    cp = cli("--lab", lab.lab, "--run-checks", "--only", "nodes-ready", "underlay-encrypted", "--junit", str(junit))
    assert cp.returncode == 4, cp.stdout + cp.stderr
    assert "1 passed, 0 failed, 1 errors, 0 skipped" in cp.stdout
    case = ET.parse(junit).getroot().find("testsuite/testcase[@name='underlay-encrypted']")
    assert case.find("failure") is None
    assert case.find("error").get("message").startswith("tcpdump on the underlay did not start: ")
    # And a failed check outranks it: exit 1.
    brk.sh(lab, "kube-node2", "iptables -w -P FORWARD ACCEPT")
    cp = cli("--lab", lab.lab, "--run-checks", "--only", "underlay-encrypted", "forward-policy")
    assert cp.returncode == 1 and "0 passed, 1 failed, 1 errors, 0 skipped" in cp.stdout, cp.stdout


# -- each check fails for its own cause ---------------------------------------------------------
def test_nodes_ready_fails_when_a_charon_is_killed_and_not_restarted(lab):
    brk.kill_charon(lab, "kube-node2")
    must_fail(lab, "nodes-ready", "kube-node2 is ready, IPsec stopped")


def test_tunnels_established_fails_when_a_peer_is_unreachable_for_ike(lab):
    # node2 drops every UDP packet from node1 (IKE and ESP), then node1's mesh-left is taken
    # down: it cannot come back; once node2's DPD clears its end, both ends are down.
    brk.cut_node1_node2(lab)
    must_fail(lab, "tunnels-established", "2 tunnel ends not up: kube-node1 mesh-left (to kube-node2): IKE DOWN, CHILD DOWN; "
                                          "kube-node2 mesh-left (to kube-node1): IKE DOWN, CHILD DOWN"
                                          " — see `swanctl --list-sas` and the node's charon log")
    must_pass(lab, "nodes-ready")


def test_pod_addresses_fails_when_ipam_hands_out_a_foreign_range(lab):
    brk.edit_node_file(lab, "kube-node1", "cni/net.d/10-ipsec-lab.conflist",
                       lambda s: s.replace("10.128.1.0/24", "10.128.9.0/24").replace("10.128.1.1", "10.128.9.1")
                       .replace('"isGateway": true', '"isGateway": false'))
    new = lab.delete_pod(pods_on(lab, "kube-node1")[0].name)
    must_fail(lab, "pod-addresses", f"{new.name} on kube-node1 has 10.128.9.2, outside 10.128.1.0/24's pod range")


def test_node_to_pod_fails_when_a_pod_loses_its_link(lab):
    pod = pods_on(lab, "kube-node3")[0]
    assert lab.pod_exec(pod.name, ["ip", "link", "set", "eth0", "down"]).ok
    lost = ", ".join(f"{n} -> {pod.name} ({pod.ip})" for n in ("kube-node1", "kube-node2", "kube-node3"))
    must_fail(lab, "node-to-pod", f"3/27 pings unanswered: {lost}")


def test_pod_to_pod_http_fails_when_a_pod_rejects_http_but_answers_ping(lab):
    pod = pods_on(lab, "kube-node2")[0]
    assert lab.pod_exec(pod.name, ["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT"]).ok
    r = must_fail(lab, "pod-to-pod-http", re.compile(rf"8/72 requests without the target pod's reply: (\S+ -> {pod.name}: ''; ){{2}}\S+ -> {pod.name}: ''"))
    assert r.observation is not None
    must_pass(lab, "node-to-pod")


def test_nodeport_balance_fails_when_a_node_loses_its_nodeport_rules(lab):
    brk.sh(lab, "kube-node2", "iptables -w -t nat -F KUBE-NODEPORTS")
    first = sorted(p.name for p in lab.status().pods)[0]
    must_fail(lab, "nodeport-balance", f"NodePort 31990: kube-node2: 150/150 requests failed; "
                                       f"kube-node2: never reached 9 pods ({first}, ...)")


def test_nodeport_balance_fails_when_one_pod_is_never_reached(lab):
    # Vacuous-pass guard: every request answered, but one endpoint is gone from node2's rules.
    brk.drop_nodeport_endpoint(lab, "kube-node2", "KUBE-SEP-000")
    sep0 = brk.sh(lab, "kube-node2", "iptables -w -t nat -S KUBE-SEP-000 | grep -o 'to-destination [0-9.]*' | cut -d' ' -f2")
    pod = next(p for p in lab.status().pods if p.ip == sep0.strip())
    must_fail(lab, "nodeport-balance", f"NodePort 31990: kube-node2: never reached 1 pods ({pod.name}, ...)")


def test_underlay_encrypted_fails_when_pod_traffic_is_routed_around_the_tunnel(lab):
    # Take node1's traffic off table 220 (the IPsec routes) and drop the guard: it leaves in clear.
    brk.sh(lab, "kube-node1", "ip rule del pref 220 && ip route del unreachable 10.128.0.0/16")
    r = must_fail(lab, "underlay-encrypted", re.compile(r"pod traffic in clear on the underlay: [1-9]\d* packets with pod "
                                                        r"addresses, [1-9]\d* with the marker \(e\.g\. .*\)"))
    assert r.observation["summary"]["esp"] == 0


def test_underlay_encrypted_fails_when_the_negative_control_is_unseen(lab):
    # Vacuous-pass guard: node1's cleartext control never reaches the wire, so the capture proves nothing.
    brk.sh(lab, "kube-node1", f"iptables -w -I OUTPUT -d {brk.underlay_ip(lab, 'kube-node2')} -p icmp -j DROP")
    must_fail(lab, "underlay-encrypted",
              "negative control failed: the capture did not see a marker sent in clear, so it proves nothing")


def test_underlay_encrypted_fails_when_no_esp_crosses(lab):
    # Vacuous-pass guard: no cleartext, but no ESP either (node1 sends nothing to the pod network).
    brk.sh(lab, "kube-node1", "iptables -w -I OUTPUT -d 10.128.0.0/16 ! -o cni0 -j DROP && "
                              "iptables -w -I FORWARD -i cni0 ! -o cni0 -j DROP")
    must_fail(lab, "underlay-encrypted", "no ESP on the underlay while pod traffic flowed: is it taking another path?")


def test_pmtu_fails_when_the_underlay_mtu_shrinks(lab):
    # The field notes' trap: a 1400-byte underlay under libipsec's 1400-byte ipsec0.
    brk.sh(lab, "kube-node1", "ip link set eth0 mtu 1400")
    subprocess.run(["ip", "-n", f"ilab-{lab.lab}-underlay", "link", "set", "v1", "mtu", "1400"], check=True)
    must_fail(lab, "pmtu", "full-size (1400 bytes) don't-fragment pings lost on kube-node1->kube-node2, kube-node1->kube-node3, "
                           "kube-node2->kube-node1, kube-node3->kube-node1: pod MTU larger than the tunnel carries, "
                           "or ICMP 'fragmentation needed' filtered")


def test_forward_policy_fails_without_the_accept_rules(lab):
    brk.sh(lab, "kube-node3", "iptables -w -D FORWARD -i cni0 -m comment --comment 'ipsec-lab: pods out' -j ACCEPT")
    must_fail(lab, "forward-policy", "kube-node3: no explicit ACCEPT for pod traffic out of cni0 (iptables -A FORWARD -i cni0 -j ACCEPT)")
    # And it matters: pods on node3 no longer reach other nodes' pods.
    assert check(lab, "pod-to-pod-http").outcome is Outcome.FAILED


def test_forward_policy_fails_when_the_policy_is_not_drop(lab):
    # Vacuous-pass guard: the ACCEPT rules are all there, but the policy lets everything through.
    brk.sh(lab, "kube-node2", "iptables -w -P FORWARD ACCEPT")
    must_fail(lab, "forward-policy", "kube-node2: FORWARD policy is not DROP (-P FORWARD ACCEPT)")


def test_boot_order_fails_when_cni0_is_set_up_after_strongswan(lab):
    import time

    script = (lab.paths.node_etc("kube-node2") / "ipsec-lab" / "node-boot.sh").read_text()
    time.sleep(0.05)  # process start times tick in 10 ms
    assert lab.exec("kube-node2", ["sh", "-s"], input=script).ok
    must_fail(lab, "boot-order", re.compile(r"kube-node2: cni0/firewall set up at \d+\.\d+ s, after the IPsec daemon started at \d+\.\d+ s"))


def test_ipam_fails_when_host_local_data_is_on_persistent_storage(lab):
    brk.edit_node_file(lab, "kube-node3", "cni/net.d/10-ipsec-lab.conflist",
                       lambda s: s.replace('"/run/cni/networks"', '"/var/log/cni-networks"'))
    must_fail(lab, "ipam-no-exhaustion", "host-local dataDir /var/log/cni-networks is on persistent storage, not under /run "
                                         "(the seed's IP exhaustion); 10 leaked reservations survived a reboot of kube-node3")


def test_ipam_fails_when_the_range_runs_out_during_churn(lab):
    # Vacuous-pass guard: node3's range ends at .4, which its three pods fill: the first ADD fails.
    brk.narrow_ipam_range(lab, "kube-node3")
    must_fail(lab, "ipam-no-exhaustion", "300 create/delete cycles on kube-node3 ran out: add-failed 1")


def test_recover_tunnel_down_fails_when_the_peer_cannot_restart_it(lab):
    brk.block_ike_from(lab, "kube-node1", "kube-node2")  # ESP still flows until the SAs are gone
    must_fail(lab, "recover-tunnel-down", "traffic kube-node1 -> kube-node2 did not come back within 3 s after "
                                          "kube-node1: swanctl --terminate --ike mesh-left (ipsec down mesh-left)")


def test_recover_ipsec_restart_fails_when_the_new_daemon_cannot_reach_its_peer(lab):
    brk.block_ike_from(lab, "kube-node1", "kube-node3")  # the restarted charon on node3 gets no SA with node1
    must_fail(lab, "recover-ipsec-restart", "traffic kube-node1 -> kube-node3 did not come back within 6 s after "
                                            "restart the IPsec daemon on kube-node3")


def test_recover_node_reboot_fails_when_the_node_does_not_rejoin(lab):
    brk.boot_blocks_ike(lab, "kube-node2")  # after the reboot node2 drops every IKE packet
    must_fail(lab, "recover-node-reboot", "traffic kube-node1 -> kube-node2 did not come back within 11 s after reboot kube-node2")


@pytest.mark.timeout(120)
def test_recover_node_reboot_fails_when_the_gap_exceeds_the_bound(lab):
    # Vacuous-pass guard: traffic does come back, but only after the 10 s bound (the boot script
    # sleeps 11 s first): 11 s is the shortest cut that proves it.
    brk.slow_boot(lab, "kube-node2", 11)
    r = must_fail(lab, "recover-node-reboot", re.compile(r"traffic kube-node1 -> kube-node2 stopped 1[1-9]\.\d\d s after "
                                                         r"reboot kube-node2 \(bound 10\.0 s\)"))
    assert r.observation["first_reply_after_s"] < catalog.BOUND_NODE_REBOOT_S + 1


@pytest.mark.timeout(120)
def test_recover_underlay_outage_fails_with_the_default_keyingtries(lab, monkeypatch):
    # The field notes' trap: keyingtries=1 ends the tunnel for good after a long outage.
    brk.keyingtries_1(lab)
    set_catalog(monkeypatch, OUTAGE_S=LONG_OUTAGE_S, HEAL_TIMEOUT_S=5.0)
    must_fail(lab, "recover-underlay-outage", f"after a {LONG_OUTAGE_S:.0f} s underlay outage, traffic kube-node1 -> kube-node2 "
                                              "did not come back within 16 s (keyingtries exhausted? the tunnel ended for good)")


def test_no_leak_during_faults_fails_without_the_cleartext_guard(lab, monkeypatch):
    # mesh-left stays down on purpose (node1 drops node2's IKE): the faults heal within
    # milliseconds otherwise, too fast for a 10 ms ping loop to fall into the gap. The mesh is
    # never whole again, so a 3 s heal wait is enough.
    set_catalog(monkeypatch, HEAL_TIMEOUT_S=3.0)
    brk.sh(lab, "kube-node1", "ip route del unreachable 10.128.0.0/16")
    brk.block_ike_from(lab, "kube-node1", "kube-node2")
    r = check(lab, "no-leak-during-faults")
    assert r.outcome is Outcome.FAILED, r.detail
    assert re.fullmatch(r"[1-9]\d* pod packets in clear on the underlay during kube-node1: swanctl --terminate --ike mesh-left "
                        r"\(ipsec down mesh-left\), restart the IPsec daemon on kube-node3 \(e\.g\. .*\): "
                        r"is the unreachable guard route missing\?", r.detail), r.detail


def test_on_result_streams_each_check_as_it_finishes(lab):
    seen = []
    results = run_checks(lab, ["nodes-ready", "forward-policy"], on_result=seen.append)
    assert [r.name for r in seen] == ["nodes-ready", "forward-policy"] == [r.name for r in results]
    assert all(r.passed for r in results)
