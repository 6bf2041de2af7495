"""Records what each check observes on real labs, healthy and broken, into tests/recordings/.

    .venv/bin/python -m tests.record_observations            # every scenario (needs root)
    .venv/bin/python -m tests.record_observations NAME...    # some: check/scenario, or a check

Never run by the suite: tests/test_judges.py replays the files without root. Each scenario brings
up its own fresh 3-node netns lab (a unique name), breaks one thing in it for real (a firewall
rule, a config file, a boot script: never a backend subclass), runs the check with the real
collect(), and writes {check, scenario, broken, how, recorded, outcome, detail, observation}.
The lab is torn down afterwards, also when a step fails. tests/test_checks.py reuses the
breakages below for the branches it proves on a live lab.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

RECORDINGS = Path(__file__).resolve().parent / "recordings"


# -- breakages (shared with tests/test_checks.py) -----------------------------------------------
def sh(lab: Any, node: str, script: str) -> str:
    res = lab.exec(node, ["sh", "-c", script])
    assert res.ok, f"{script!r} on {node}: {res.stderr.strip()}"
    return str(res.stdout)


def underlay_ip(lab: Any, node: str) -> str:
    return str(lab.spec().node(node).underlay_ip)


def block_ike_from(lab: Any, node: str, peer: str) -> None:
    """`node` drops the IKE_SA_INIT requests and replies of `peer` (exchange type 34, on UDP 500, or
    on 4500 after the zero non-ESP marker): the SAs up now keep carrying traffic and can still be
    deleted promptly, but none can be made again."""
    src = underlay_ip(lab, peer)
    sh(lab, node, f"iptables -w -I INPUT -s {src} -p udp --dport 500 -m u32 --u32 '0>>22&0x3C@24>>8&0xFF=34' -j DROP && "
                  f"iptables -w -I INPUT -s {src} -p udp --dport 4500 -m u32 --u32 '0>>22&0x3C@8=0 && 0>>22&0x3C@28>>8&0xFF=34' -j DROP")


def cut_node1_node2(lab: Any) -> None:
    """kube-node2 drops every UDP packet from kube-node1 (IKE and ESP), then kube-node1's mesh-left
    is taken down; returns once kube-node2's DPD has cleared its end too (about 9 s)."""
    from .conftest import wait_for

    sh(lab, "kube-node2", "iptables -w -I INPUT -s 192.168.56.11 -p udp -j DROP")
    lab.tunnel_down("kube-node1", "mesh-left")
    wait_for(lambda: not lab.status().tunnel("kube-node2", "mesh-left").up, timeout=20, interval=0.2,
             what="kube-node2's mesh-left down")


def kill_charon(lab: Any, node: str) -> None:
    """charon dies (SIGKILL) and nothing starts it again."""
    import os

    pid = int(sh(lab, node, "cat /run/charon.pid").strip())
    sh(lab, node, f"kill -9 {pid}")
    with contextlib.suppress(ChildProcessError):  # the lab was started by this process: reap it
        os.waitpid(pid, 0)


def edit_node_file(lab: Any, node: str, rel: str, fn: Callable[[str], str]) -> None:
    path = lab.paths.node_etc(node) / rel
    path.write_text(fn(path.read_text()))


def slow_boot(lab: Any, node: str, seconds: float) -> None:
    """The node's boot script sleeps first: a reboot takes that much longer."""
    edit_node_file(lab, node, "ipsec-lab/node-boot.sh", lambda s: s.replace("set -eu\n", f"set -eu\nsleep {seconds}\n", 1))


def boot_blocks_ike(lab: Any, node: str) -> None:
    """After its next boot the node drops all IKE and ESP-in-UDP: it never rejoins the mesh."""
    edit_node_file(lab, node, "ipsec-lab/node-boot.sh",
                   lambda s: s + "\niptables -w -I INPUT -p udp --dport 500 -j DROP\n"
                                 "iptables -w -I INPUT -p udp --dport 4500 -j DROP\n")


def drop_nodeport_endpoint(lab: Any, node: str, sep: str = "KUBE-SEP-000") -> None:
    """kube-proxy's rules on `node` lose the jump to one endpoint: that pod is never reached there."""
    sh(lab, node, f"iptables -w -t nat -S KUBE-SVC-BOOTCAMP | grep -- '-j {sep}$' | sed 's/^-A/-D/' "
                  "| xargs iptables -w -t nat")


def narrow_ipam_range(lab: Any, node: str) -> None:
    """host-local's range on `node` ends at .4: the node's three pods (.2-.4) fill it."""
    def edit(text: str) -> str:
        conf = json.loads(text)
        r = conf["plugins"][0]["ipam"]["ranges"][0][0]
        r["rangeEnd"] = r["subnet"].rsplit(".", 2)[0] + "." + r["subnet"].split(".")[2] + ".4"
        return json.dumps(conf, indent=2)
    edit_node_file(lab, node, "cni/net.d/10-ipsec-lab.conflist", edit)


def block_icmp_across_restore(lab: Any, node: str, after_restore_s: float) -> None:
    """`node` drops ICMP from the moment its underlay link goes down until `after_restore_s`
    after it is back: traffic returns that long after the link, whatever IPsec does."""
    script = (
        "while [ \"$(cat /sys/class/net/eth0/carrier 2>/dev/null)\" = 1 ]; do sleep 0.01; done; "
        "iptables -w -I INPUT -p icmp -j DROP; "
        "while [ \"$(cat /sys/class/net/eth0/carrier 2>/dev/null)\" != 1 ]; do sleep 0.01; done; "
        f"sleep {after_restore_s}; iptables -w -D INPUT -p icmp -j DROP"
    )
    import subprocess

    # Runs inside the node, ends by itself; `down` kills it with the node's other processes.
    subprocess.Popen(lab.node_argv(node, ["sh", "-c", script]), stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def block_create_child_sa_from(lab: Any, node: str, peer: str) -> None:
    """`node` drops `peer`'s CREATE_CHILD_SA requests (exchange type 36, on UDP 4500 after the zero
    non-ESP marker, or on 500): the SAs up now keep working, but none can be rekeyed."""
    src = underlay_ip(lab, peer)
    sh(lab, node, f"iptables -w -I INPUT -s {src} -p udp --dport 500 -m u32 --u32 '0>>22&0x3C@24>>8&0xFF=36' -j DROP && "
                  f"iptables -w -I INPUT -s {src} -p udp --dport 4500 -m u32 --u32 '0>>22&0x3C@8=0 && 0>>22&0x3C@28>>8&0xFF=36' -j DROP")


def pin_esp_spi(lab: Any, node: str, conn: str) -> None:
    """`node` accepts UDP-encapsulated ESP on `conn` only with the inbound SPI it has now (a
    middlebox that pins SPIs): after a rekey, the new SA's packets are dropped."""
    t = lab.status().tunnel(node, conn)
    spi, src = t.detail["spi_in"], underlay_ip(lab, t.peer)
    sh(lab, node, f"iptables -w -N SPI-PIN && iptables -w -A SPI-PIN -m u32 --u32 '0>>22&0x3C@8=0' -j RETURN && "
                  f"iptables -w -A SPI-PIN -m u32 --u32 '0>>22&0x3C@8=0x{spi}' -j RETURN && iptables -w -A SPI-PIN -j DROP && "
                  f"iptables -w -I INPUT -s {src} -p udp --dport 4500 -j SPI-PIN")


# -- scenarios ---------------------------------------------------------------------------------
@dataclass
class Scenario:
    check: str
    name: str
    broken: str  # what is broken, for the note in the file
    brk: Callable[[Any], Any] | None = None  # breaks the lab; may return a CheckResult itself
    replicas: int = 9
    node_port: int | None = 31990
    catalog: dict[str, float] = field(default_factory=dict)  # catalog constants for this run

    @property
    def key(self) -> str:
        return f"{self.check}/{self.name}"


def _run(lab: Any, check: str) -> Any:
    from tui.checks import catalog
    from tui.checks.base import CheckContext
    from tui.checks.runner import run_one
    from tui.lab.events import Reporter

    return run_one(catalog.BY_NAME[check], CheckContext(lab, lab.spec(), Reporter()))


def _during_reboot(lab: Any) -> Any:
    """pod-addresses while kube-node2 reboots slowly: its pods have no address yet."""
    slow_boot(lab, "kube-node2", 4)
    t = threading.Thread(target=lab.reboot, args=("kube-node2",))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not any(p.node == "kube-node2" and p.ip is None for p in lab.status().pods):
            assert time.monotonic() < deadline, "kube-node2's pods kept their addresses"
            time.sleep(0.05)
        return _run(lab, "pod-addresses")
    finally:
        t.join()


def _reuse_an_address(lab: Any) -> None:
    """kube-node1's host-local forgets the reservation of its second pod (.3) and is told its
    round stopped at the first (.2, still reserved): the third pod's replacement gets .3 again.
    (host-local restarts from the range start when the last reserved address was released.)"""
    pods = sorted((p for p in lab.status().pods if p.node == "kube-node1"), key=lambda p: p.ip)
    first, second, third = pods[0], pods[1], pods[2]
    sh(lab, "kube-node1", f"rm /run/cni/networks/ipsec-lab/{second.ip} && "
                          f"echo {first.ip} > /run/cni/networks/ipsec-lab/last_reserved_ip.0")
    lab.delete_pod(third.name)  # the replacement lands on kube-node1, which now has the fewest


def _hand_out_backwards(lab: Any) -> None:
    """kube-node1's host-local restarts its round at the start of the range: a new pod gets a
    lower address than pods made before it."""
    first = min((p for p in lab.status().pods if p.node == "kube-node1"), key=lambda p: p.created)
    sh(lab, "kube-node1", "echo 10.128.1.1 > /run/cni/networks/ipsec-lab/last_reserved_ip.0")
    lab.delete_pod(first.name)


def _foreign_range(lab: Any) -> None:
    edit_node_file(lab, "kube-node1", "cni/net.d/10-ipsec-lab.conflist",
                   lambda s: s.replace("10.128.1.0/24", "10.128.9.0/24").replace("10.128.1.1", "10.128.9.1")
                   .replace('"isGateway": true', '"isGateway": false'))
    lab.delete_pod(next(p for p in lab.status().pods if p.node == "kube-node1").name)


def _pod_link_down(lab: Any) -> None:
    pod = next(p for p in lab.status().pods if p.node == "kube-node3")
    assert lab.pod_exec(pod.name, ["ip", "link", "set", "eth0", "down"]).ok


def _reject_http(lab: Any) -> None:
    pod = next(p for p in lab.status().pods if p.node == "kube-node2")
    assert lab.pod_exec(pod.name, ["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "REJECT"]).ok


def _shrink_underlay_mtu(lab: Any) -> None:
    import subprocess

    sh(lab, "kube-node1", "ip link set eth0 mtu 1400")
    subprocess.run(["ip", "-n", f"ilab-{lab.lab}-underlay", "link", "set", "v1", "mtu", "1400"], check=True)


def _late_boot_script(lab: Any) -> None:
    script = (lab.paths.node_etc("kube-node2") / "ipsec-lab" / "node-boot.sh").read_text()
    time.sleep(0.05)  # process start times tick in 10 ms
    assert lab.exec("kube-node2", ["sh", "-s"], input=script).ok


def keyingtries_1(lab: Any) -> None:
    from .conftest import wait_for

    for node in ("kube-node1", "kube-node2"):
        edit_node_file(lab, node, "swanctl/swanctl.conf", lambda c: c.replace("keyingtries = 0", "keyingtries = 1"))
        lab.restart_ipsec(node)
    wait_for(lambda: lab.status().all_tunnels_up, timeout=30, interval=0.2, what="the mesh under keyingtries = 1")


def _mesh_stuck_elsewhere(lab: Any) -> None:
    """kube-node2 <-> kube-node3 taken down for good (kube-node3 drops kube-node2's IKE);
    the pair the check measures (kube-node1 -> kube-node2) is unharmed."""
    block_ike_from(lab, "kube-node3", "kube-node2")
    block_ike_from(lab, "kube-node2", "kube-node3")
    lab.tunnel_down("kube-node2", "mesh-right")


def _duplicate_ike(lab: Any) -> None:
    """A real duplicate: both ends allow more than one IKE SA per peer, and one initiates again."""
    for node in ("kube-node1", "kube-node2"):
        edit_node_file(lab, node, "swanctl/swanctl.conf", lambda s: s.replace("unique = keep", "unique = never"))
        sh(lab, node, "swanctl --load-all --noprompt >/dev/null")
    sh(lab, "kube-node2", "swanctl --initiate --ike mesh-left --timeout 5 >/dev/null")


def _no_pod_traffic_from_node1(lab: Any) -> None:
    """kube-node1 sends nothing to the pod network (its own or its pods'): no ESP can appear."""
    sh(lab, "kube-node1", "iptables -w -I OUTPUT -d 10.128.0.0/16 ! -o cni0 -j DROP && "
                          "iptables -w -I FORWARD -i cni0 ! -o cni0 -j DROP")


SCENARIOS: list[Scenario] = [
    Scenario("nodes-ready", "charon-killed", "charon on kube-node2 killed (SIGKILL), not restarted",
             lambda lab: kill_charon(lab, "kube-node2")),
    Scenario("tunnels-established", "ike-blocked",
             "kube-node2 drops all UDP from kube-node1, then kube-node1's mesh-left is terminated; "
             "recorded once kube-node2's end is down too (its DPD)", cut_node1_node2),
    Scenario("pod-addresses", "no-pods", "nothing deployed", replicas=0, node_port=None),
    Scenario("pod-addresses", "foreign-range",
             "kube-node1's CNI config hands out 10.128.9.0/24, then a pod there is replaced", _foreign_range),
    Scenario("pod-addresses", "no-address", "status taken while kube-node2 reboots (boot script sleeps 4 s)",
             _during_reboot),
    Scenario("pod-addresses", "shared-address",
             "kube-node1's host-local reservation file of one pod removed and its round reset, then a pod replaced",
             _reuse_an_address),
    Scenario("pod-addresses", "out-of-order",
             "kube-node1's host-local round reset to the range start, then its oldest pod replaced", _hand_out_backwards),
    Scenario("node-to-pod", "no-pods", "nothing deployed", replicas=0, node_port=None),
    Scenario("node-to-pod", "pod-link-down", "eth0 of one kube-node3 pod set down", _pod_link_down),
    Scenario("pod-to-pod-http", "one-pod", "one replica deployed", replicas=1, node_port=None),
    Scenario("pod-to-pod-http", "http-rejected", "one kube-node2 pod REJECTs tcp/8080 (ping still answered)",
             _reject_http),
    Scenario("nodeport-balance", "no-service", "the deployment is not exposed", node_port=None),
    Scenario("nodeport-balance", "rules-flushed", "kube-node2's KUBE-NODEPORTS chain flushed",
             lambda lab: sh(lab, "kube-node2", "iptables -w -t nat -F KUBE-NODEPORTS")),
    Scenario("nodeport-balance", "endpoint-dropped", "kube-node2's jump to KUBE-SEP-000 (one pod) deleted",
             lambda lab: drop_nodeport_endpoint(lab, "kube-node2")),
    Scenario("underlay-encrypted", "control-unseen",
             "kube-node1 drops its own ICMP to kube-node2's underlay address: the cleartext control never reaches the wire",
             lambda lab: sh(lab, "kube-node1", f"iptables -w -I OUTPUT -d {underlay_ip(lab, 'kube-node2')} -p icmp -j DROP")),
    Scenario("underlay-encrypted", "cleartext",
             "kube-node1: ip rule 220 (the IPsec routes) and the unreachable guard route deleted",
             lambda lab: sh(lab, "kube-node1", "ip rule del pref 220 && ip route del unreachable 10.128.0.0/16")),
    Scenario("underlay-encrypted", "no-esp", "kube-node1 drops everything it would send to the pod network",
             _no_pod_traffic_from_node1),
    Scenario("pmtu", "one-pod", "one replica deployed: no node pair has pods", replicas=1, node_port=None),
    Scenario("pmtu", "underlay-mtu-1400", "kube-node1's eth0 and its underlay port set to MTU 1400",
             _shrink_underlay_mtu),
    Scenario("pmtu", "fragmenting-route",
             "kube-node1's route to the underlay gets `mtu lock 1400`: the kernel sends its ESP without DF and fragments it",
             lambda lab: sh(lab, "kube-node1", "ip route replace 192.168.56.0/24 dev eth0 proto kernel scope link "
                                               "src 192.168.56.11 mtu lock 1400")),
    Scenario("forward-policy", "policy-accept", "kube-node2: iptables -P FORWARD ACCEPT",
             lambda lab: sh(lab, "kube-node2", "iptables -w -P FORWARD ACCEPT")),
    Scenario("forward-policy", "accept-missing", "kube-node3's 'pods out' ACCEPT rule deleted",
             lambda lab: sh(lab, "kube-node3", "iptables -w -D FORWARD -i cni0 -m comment --comment 'ipsec-lab: pods out' -j ACCEPT")),
    Scenario("boot-order", "cni0-unaddressed", "kube-node1: ip addr flush dev cni0",
             lambda lab: sh(lab, "kube-node1", "ip addr flush dev cni0")),
    Scenario("boot-order", "no-boot-stamp", "kube-node2's boot stamp /run/ipsec-lab-boot.done removed",
             lambda lab: sh(lab, "kube-node2", "rm /run/ipsec-lab-boot.done")),
    Scenario("boot-order", "late-setup", "kube-node2's boot script run again after charon started", _late_boot_script),
    Scenario("ipam-no-exhaustion", "persistent-datadir", "kube-node3's host-local dataDir moved to /var/log/cni-networks",
             lambda lab: edit_node_file(lab, "kube-node3", "cni/net.d/10-ipsec-lab.conflist",
                                        lambda s: s.replace('"/run/cni/networks"', '"/var/log/cni-networks"'))),
    Scenario("ipam-no-exhaustion", "range-exhausted", "kube-node3's host-local range ends at .4, filled by its 3 pods",
             lambda lab: narrow_ipam_range(lab, "kube-node3")),
    Scenario("rekey-no-loss", "healthy", "nothing: a fresh lab, this check alone (recorded apart from the suite's run)"),
    Scenario("rekey-no-loss", "create-child-blocked", "kube-node2 drops kube-node1's CREATE_CHILD_SA requests",
             lambda lab: block_create_child_sa_from(lab, "kube-node2", "kube-node1")),
    Scenario("rekey-no-loss", "spi-pinned",
             "kube-node2 accepts kube-node1's ESP only with mesh-left's current inbound SPI (a middlebox pinning SPIs)",
             lambda lab: pin_esp_spi(lab, "kube-node2", "mesh-left")),
    Scenario("recover-tunnel-down", "ike-blocked", "kube-node1 drops kube-node2's IKE (ESP still flows)",
             lambda lab: block_ike_from(lab, "kube-node1", "kube-node2")),
    Scenario("recover-tunnel-down", "mesh-stuck-elsewhere",
             "kube-node2 <-> kube-node3 down for good (IKE dropped both ways); heal wait 3 s",
             _mesh_stuck_elsewhere, catalog={"HEAL_TIMEOUT_S": 3.0}),
    Scenario("recover-ipsec-restart", "ike-blocked", "kube-node1 drops kube-node3's IKE (ESP still flows)",
             lambda lab: block_ike_from(lab, "kube-node1", "kube-node3")),
    Scenario("recover-node-reboot", "boot-blocks-ike", "kube-node2's boot script ends by dropping UDP 500 and 4500",
             lambda lab: boot_blocks_ike(lab, "kube-node2")),
    Scenario("recover-node-reboot", "slow-boot", "kube-node2's boot script sleeps 11 s first",
             lambda lab: slow_boot(lab, "kube-node2", 11)),
    Scenario("recover-underlay-outage", "keyingtries-1",
             "swanctl.conf keyingtries = 1 on kube-node1 and kube-node2; a 20 s outage", keyingtries_1,
             catalog={"OUTAGE_S": 20.0, "HEAL_TIMEOUT_S": 5.0}),
    Scenario("recover-underlay-outage", "slow-after-restore",
             "kube-node2 drops ICMP from the cut until 15.5 s after the link returns; a 3 s outage",
             lambda lab: block_icmp_across_restore(lab, "kube-node2", 15.5), catalog={"OUTAGE_S": 3.0}),
    Scenario("recover-underlay-loss", "healthy", "nothing: a fresh lab, this check alone (the catalog's 30 s of loss)"),
    Scenario("recover-underlay-loss", "loss-not-in-effect",
             "kube-node2 accepts all it sends on eth0 in mangle POSTROUTING, ahead of the drop rule; 10 s",
             lambda lab: sh(lab, "kube-node2", "iptables -w -t mangle -I POSTROUTING -o eth0 -j ACCEPT"),
             catalog={"LOSS_S": 10.0}),
    Scenario("recover-underlay-loss", "pods-not-answering",
             "kube-node2 drops TCP 8080 forwarded to its pods; 12 s", lambda lab: sh(
                 lab, "kube-node2", "iptables -w -I FORWARD -o cni0 -p tcp --dport 8080 -j DROP"),
             catalog={"LOSS_S": 12.0}),
    Scenario("recover-underlay-loss", "duplicate-ike",
             "swanctl.conf unique = never on kube-node1 and kube-node2, reloaded, and kube-node2 initiates "
             "mesh-left's IKE SA again; 10 s", _duplicate_ike, catalog={"LOSS_S": 10.0}),
    Scenario("recover-underlay-loss", "mesh-stuck-elsewhere",
             "kube-node2 <-> kube-node3 down for good (IKE dropped both ways); 10 s, heal wait 3 s",
             _mesh_stuck_elsewhere, catalog={"LOSS_S": 10.0, "HEAL_TIMEOUT_S": 3.0}),
    Scenario("no-leak-during-faults", "guard-missing",
             "kube-node1's unreachable guard route deleted and it drops kube-node2's IKE: mesh-left stays down; heal wait 3 s",
             lambda lab: (sh(lab, "kube-node1", "ip route del unreachable 10.128.0.0/16"),
                          block_ike_from(lab, "kube-node1", "kube-node2")), catalog={"HEAL_TIMEOUT_S": 3.0}),
    Scenario("no-leak-during-faults", "fault-not-healed",
             "kube-node1 drops kube-node2's IKE (the guard route in place): mesh-left stays down; heal wait 3 s",
             lambda lab: block_ike_from(lab, "kube-node1", "kube-node2"), catalog={"HEAL_TIMEOUT_S": 3.0}),
    Scenario("no-leak-during-faults", "no-esp", "kube-node1 drops everything it would send to the pod network",
             _no_pod_traffic_from_node1),
]
HEALTHY_OUTAGE_S = 10.0  # the healthy run's underlay outage (the catalog's default is 60 s)


@contextlib.contextmanager
def catalog_set(values: dict[str, float]) -> Iterator[None]:
    from tui.checks import catalog, impairment

    where = {k: impairment if hasattr(impairment, k) else catalog for k in values}
    old = {k: getattr(where[k], k) for k in values}
    try:
        for k, v in values.items():
            setattr(where[k], k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(where[k], k, v)


def write(check: str, scenario: str, broken: str, result: Any, how: str) -> Path:
    path = RECORDINGS / check / f"{scenario}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "check": check, "scenario": scenario, "broken": broken, "how": how,
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "outcome": result.outcome.value, "detail": result.detail,
        "observation": result.observation,
    }, indent=1) + "\n")
    return path


def record(s: Scenario) -> Path:
    from .conftest import started_lab

    with catalog_set(s.catalog), started_lab("rec", replicas=s.replicas, node_port=s.node_port) as lab:
        got = s.brk(lab) if s.brk else None
        result = got if got is not None and hasattr(got, "outcome") else _run(lab, s.check)
    return write(s.check, s.name, s.broken, result, f".venv/bin/python -m tests.record_observations {s.key}")


def record_healthy() -> list[Path]:
    from tui.checks.runner import run_checks

    from .conftest import started_lab

    paths = []
    with catalog_set({"OUTAGE_S": HEALTHY_OUTAGE_S}), started_lab("rec", node_port=31990) as lab:
        for r in run_checks(lab):
            paths.append(write(r.name, "healthy", f"nothing: a fresh lab, the whole suite in order "
                               f"(underlay outage {HEALTHY_OUTAGE_S:.0f} s)", r,
                               ".venv/bin/python -m tests.record_observations healthy"))
    return paths


def main(argv: list[str]) -> int:
    want = argv or ["healthy", *(s.key for s in SCENARIOS)]
    for w in want:
        if w == "healthy":
            for p in record_healthy():
                print(p.relative_to(RECORDINGS.parent), json.loads(p.read_text())["outcome"], flush=True)
            continue
        chosen = [s for s in SCENARIOS if w in (s.key, s.check)]
        if not chosen:
            print(f"no scenario {w!r}", file=sys.stderr)
            return 3
        for s in chosen:
            p = record(s)
            d = json.loads(p.read_text())
            print(f"{s.key}: {d['outcome']}: {d['detail']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
