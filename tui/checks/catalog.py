"""The check catalog: every property of the lab a user relies on, as collect + judge pairs.

collect() runs things on the lab through the Backend (the same on every backend); judge() turns
what it observed into a Verdict with one actionable line. Disruptive checks inject a fault and
measure how long traffic stopped with a fast ping loop; the lab heals by itself.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..lab import pcap, probes
from ..lab.errors import LabError
from .base import Check, CheckContext, Measurement, Observation, Verdict

# Bounds the recovery checks assert (seconds). Generous against the measured figures (tens to
# hundreds of milliseconds on netns) so a busy CI machine does not flake; the value is reported.
BOUND_TUNNEL_DOWN_S = 2.0
BOUND_IPSEC_RESTART_S = 5.0
BOUND_NODE_REBOOT_S = 10.0
BOUND_OUTAGE_RECOVERY_S = 15.0
OUTAGE_S = float(os.environ.get("IPSEC_LAB_OUTAGE_S", "60"))
HEAL_TIMEOUT_S = 30.0
IPAM_CHURN = 300  # more than the 253 addresses of a node's /24


# -- helpers ----------------------------------------------------------------------------------
def _pods_by_node(ctx: CheckContext) -> dict[str, list]:
    by: dict[str, list] = defaultdict(list)
    for p in ctx.status().pods:
        if p.ip:
            by[p.node].append(p)
    return by


def _wait_healthy(ctx: CheckContext, timeout: float = HEAL_TIMEOUT_S) -> float:
    """Seconds until every tunnel end is up again; raises LabError if it never is."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ctx.status().all_tunnels_up:
            return time.monotonic() - t0
        time.sleep(0.05)
    down = [f"{t.node}/{t.name}" for t in ctx.status().tunnels if not t.up]
    raise LabError(f"the mesh did not heal within {timeout:.0f} s: {', '.join(down[:4])} still down")


def _peer_conn(ctx: CheckContext, node: str, peer: str) -> str:
    return next(t.name for t in ctx.spec.tunnels_of(node) if t.peer == peer)


# -- nodes-ready --------------------------------------------------------------------------------
def collect_nodes(ctx: CheckContext) -> Observation:
    return {"nodes": [(n.name, n.state, n.ipsec_state) for n in ctx.status().nodes], "expected": ctx.spec.nodes}


def judge_nodes(obs: Observation) -> Verdict:
    bad = [f"{n} is {state}, IPsec {ipsec}" for n, state, ipsec in obs["nodes"] if state != "ready" or ipsec != "running"]
    if len(obs["nodes"]) != obs["expected"]:
        bad.append(f"{len(obs['nodes'])} nodes, expected {obs['expected']}")
    if bad:
        return Verdict.failed("; ".join(bad))
    return Verdict.passed(f"{len(obs['nodes'])} nodes Ready, an IPsec daemon running on each")


# -- tunnels-established ------------------------------------------------------------------------
def collect_tunnels(ctx: CheckContext) -> Observation:
    tunnels = ctx.status().tunnels
    return {
        "ends": [(t.node, t.name, t.peer, t.ike_state, t.child_state) for t in tunnels],
        "duplicates": sum(max(0, t.ike_sas - 1) for t in tunnels),
        "nodes": [n.name for n in ctx.spec.node_list()],
    }


def judge_tunnels(obs: Observation) -> Verdict:
    ends = {(node, peer): (name, ike, child) for node, name, peer, ike, child in obs["ends"]}
    nodes = obs["nodes"]
    bad = []
    pairs = 0
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            pairs += 1
            for x, y in ((a, b), (b, a)):
                name, ike, child = ends.get((x, y), ("?", "MISSING", "MISSING"))
                if (ike, child) != ("ESTABLISHED", "INSTALLED"):
                    bad.append(f"{x} {name} (to {y}): IKE {ike}, CHILD {child}")
    if bad:
        return Verdict.failed(f"{len(bad)} tunnel ends not up: " + "; ".join(bad[:4]) +
                              " — see `swanctl --list-sas` and the node's charon log")
    dup = obs.get("duplicates", 0)
    note = f"; {dup} extra IKE SAs (both ends initiated at once)" if dup else ", one IKE SA each"
    return Verdict.passed(f"{pairs} node pairs, both ends IKE ESTABLISHED and CHILD INSTALLED (read over vici){note}",
                          Measurement("node_pairs", pairs, "pairs"), Measurement("duplicate_ike_sas", dup, "SAs"))


# -- pod-addresses ------------------------------------------------------------------------------
def collect_pod_addresses(ctx: CheckContext) -> Observation:
    return {
        "ranges": {n.name: str(n.pod_cidr) for n in ctx.spec.node_list()},
        "pods": [(p.name, p.node, p.ip, p.created) for p in ctx.status().pods],
    }


def judge_pod_addresses(obs: Observation) -> Verdict:
    if not obs["pods"]:
        return Verdict.failed("no pods: deploy first (`ipsec-lab deploy`)")
    bad = []
    seen: dict[str, str] = {}
    by_node: dict[str, list] = defaultdict(list)
    for name, node, ip, created in obs["pods"]:
        net = ipaddress.ip_network(obs["ranges"][node])
        if ip is None:
            bad.append(f"{name} has no address")
            continue
        addr = ipaddress.ip_address(ip)
        if addr not in net or addr in (net.network_address, net.network_address + 1, net.broadcast_address):
            bad.append(f"{name} on {node} has {ip}, outside {net}'s pod range")
        if ip in seen:
            bad.append(f"{name} and {seen[ip]} share {ip}")
        seen[ip] = name
        by_node[node].append((created, addr, name))
    for node, pods in by_node.items():
        ordered = [a for _, a, _ in sorted(pods)]
        if ordered != sorted(ordered):
            bad.append(f"{node}: addresses not handed out in order ({', '.join(map(str, ordered))})")
    if bad:
        return Verdict.failed("; ".join(bad[:4]))
    return Verdict.passed(f"{len(obs['pods'])} pods, each in its node's /24, in host-local order")


# -- node-to-pod --------------------------------------------------------------------------------
def collect_node_to_pod(ctx: CheckContext) -> Observation:
    pods = [p for p in ctx.status().pods if p.ip]
    results = {}
    script = "for ip in " + " ".join(p.ip for p in pods) + "; do " \
             "(ping -n -q -c 1 -W 2 $ip >/dev/null 2>&1 && echo ok $ip || echo fail $ip) & done; wait"
    for n in ctx.spec.node_list():
        res = ctx.backend.exec(n.name, ["sh", "-c", script], timeout=30)
        results[n.name] = dict(line.split()[::-1] for line in res.stdout.splitlines() if len(line.split()) == 2)
    return {"pods": [(p.name, p.node, p.ip) for p in pods], "results": results}


def judge_node_to_pod(obs: Observation) -> Verdict:
    if not obs["pods"]:
        return Verdict.failed("no pods to ping: deploy first")
    bad = [f"{node} -> {name} ({ip})" for node, res in obs["results"].items()
           for name, _, ip in obs["pods"] if res.get(ip) != "ok"]
    total = len(obs["results"]) * len(obs["pods"])
    if bad:
        return Verdict.failed(f"{len(bad)}/{total} pings unanswered: " + ", ".join(bad[:4]))
    return Verdict.passed(f"{total} pings from every node to every pod answered")


# -- pod-to-pod-http ----------------------------------------------------------------------------
def collect_pod_to_pod(ctx: CheckContext) -> Observation:
    pods = [p for p in ctx.status().pods if p.ip]

    def from_pod(src) -> tuple[str, dict[str, str]]:
        targets = [p for p in pods if p.name != src.name]
        urls = [f"http://{t.ip}:8080/" for t in targets]
        res = ctx.backend.pod_exec(src.name, probes.curl_argv(urls), timeout=len(urls) * 2 + 10)
        replies = probes.parse_curl(urls, res.stdout)
        return src.name, {t.name: r.body for t, r in zip(targets, replies)}

    # Every source pod at once: a broken path costs its timeouts once per source, not in sum.
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = dict(pool.map(from_pod, pods))
    return {"pods": [(p.name, p.node) for p in pods], "replies": replies}


def judge_pod_to_pod(obs: Observation) -> Verdict:
    if len(obs["pods"]) < 2:
        return Verdict.failed("fewer than two pods: deploy first")
    bad = [f"{src} -> {dst}: {body[:60]!r}" for src, got in obs["replies"].items() for dst, body in got.items()
           if body != probes.bootcamp_reply(dst)]
    total = sum(len(g) for g in obs["replies"].values())
    if bad:
        return Verdict.failed(f"{len(bad)}/{total} requests without the target pod's reply: " + "; ".join(bad[:3]))
    return Verdict.passed(f"{total} HTTP requests pod to pod on 8080, each answered by its target")


# -- nodeport-balance ---------------------------------------------------------------------------
NODEPORT_REQUESTS = 150  # enough for 9 pods to all be hit with overwhelming probability


def collect_nodeport(ctx: CheckContext) -> Observation:
    st = ctx.status()
    if not st.services:
        return {"service": None}
    port = st.services[0].node_port
    per_node = {}
    for n in st.nodes:
        url = f"http://{n.ip}:{port}/"
        # Five curls at once, 30 requests each: a broken NodePort costs 30 timeouts, not 150.
        with ThreadPoolExecutor(max_workers=5) as pool:
            batches = pool.map(lambda _: probes.http_get_many(ctx.backend, n.name, [url] * (NODEPORT_REQUESTS // 5)),
                               range(5))
        replies = [r for batch in batches for r in batch]
        per_node[n.name] = [r.body.split("Running on: ")[-1].split(" |")[0] if r.ok else None for r in replies]
    return {"service": port, "pods": [p.name for p in st.pods if p.ip], "per_node": per_node}


def judge_nodeport(obs: Observation) -> Verdict:
    if obs["service"] is None:
        return Verdict.failed("no NodePort service: run `ipsec-lab expose`")
    bad = []
    for node, names in obs["per_node"].items():
        failed = names.count(None)
        missing = set(obs["pods"]) - set(n for n in names if n)
        if failed:
            bad.append(f"{node}: {failed}/{len(names)} requests failed")
        if missing:
            bad.append(f"{node}: never reached {len(missing)} pods ({sorted(missing)[0]}, ...)")
    if bad:
        return Verdict.failed(f"NodePort {obs['service']}: " + "; ".join(bad[:4]))
    return Verdict.passed(f"NodePort {obs['service']} on every node reached all {len(obs['pods'])} pods "
                          f"over {NODEPORT_REQUESTS} requests each")


# -- underlay-encrypted -------------------------------------------------------------------------
def _cross_node_pair(ctx: CheckContext):
    by = _pods_by_node(ctx)
    nodes = [n.name for n in ctx.spec.node_list() if by.get(n.name)]
    if len(nodes) < 2:
        raise LabError("needs pods on two nodes: deploy first")
    return by[nodes[0]][0], by[nodes[1]][0]


def collect_underlay_encrypted(ctx: CheckContext) -> Observation:
    marker = "IPSECLAB" + secrets.token_hex(4).upper()
    control = "CTRL" + secrets.token_hex(4).upper()
    src, dst = _cross_node_pair(ctx)
    n1, n2 = ctx.spec.node(src.node), ctx.spec.node(dst.node)
    cap = ctx.backend.start_capture(f"encrypted-{secrets.token_hex(3)}")
    try:
        # The negative control: the same kind of marker sent in clear between the nodes' own
        # underlay addresses must show up in the capture, or the capture proves nothing.
        ctx.backend.exec(n1.name, ["ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "1", "-p", control.encode().hex(), str(n2.underlay_ip)])
        # Pod traffic across the tunnel, carrying the marker: HTTP from a pod, ping from the node.
        for _ in range(3):
            ctx.backend.pod_exec(src.name, ["curl", "-s", "-m", "2", f"http://{dst.ip}:8080/{marker}"])
        ctx.backend.exec(n1.name, ["ping", "-n", "-q", "-c", "3", "-i", "0.05", "-W", "1", "-p", marker.encode().hex(), dst.ip])
        time.sleep(0.1)
    finally:
        path = ctx.backend.stop_capture(cap)
    summary = pcap.summarize(path, ctx.spec.pod_supernet, marker.encode())
    control_hits = pcap.summarize(path, ctx.spec.pod_supernet, control.encode()).marker_hits
    with contextlib.suppress(OSError):
        os.unlink(path)
    return {"summary": summary.__dict__, "control_hits": control_hits, "marker_hits": summary.marker_hits,
            "pair": f"{src.name} ({src.node}) -> {dst.name} ({dst.node})"}


def judge_underlay_encrypted(obs: Observation) -> Verdict:
    s = obs["summary"]
    ms = (Measurement("esp_packets", s["esp"], "packets"), Measurement("cleartext_pod_packets", s["cleartext_pod"], "packets"))
    if obs["control_hits"] == 0:
        return Verdict.failed("negative control failed: the capture did not see a marker sent in clear, so it proves nothing", *ms)
    if s["cleartext_pod"] or obs["marker_hits"]:
        ex = ", ".join(s["examples"]) or "marker bytes in payload"
        return Verdict.failed(f"pod traffic in clear on the underlay: {s['cleartext_pod']} packets with pod addresses, "
                              f"{obs['marker_hits']} with the marker (e.g. {ex})", *ms)
    if s["esp"] == 0:
        return Verdict.failed("no ESP on the underlay while pod traffic flowed: is it taking another path?", *ms)
    return Verdict.passed(f"{s['esp']} ESP packets, 0 with pod addresses or the marker in clear; "
                          f"the control marker was seen {obs['control_hits']}x ({obs['pair']})", *ms)


# -- pmtu ---------------------------------------------------------------------------------------
def collect_pmtu(ctx: CheckContext) -> Observation:
    by = _pods_by_node(ctx)
    mtu = ctx.spec.pod_mtu
    payload = mtu - 28  # IPv4 20 + ICMP 8: a full-size pod packet
    results = []
    cap = ctx.backend.start_capture(f"pmtu-{secrets.token_hex(3)}")
    try:
        for a in ctx.spec.node_list():
            for b in ctx.spec.node_list():
                if a.name == b.name or not by.get(a.name) or not by.get(b.name):
                    continue
                src, dst = by[a.name][0], by[b.name][0]
                res = ctx.backend.pod_exec(src.name, ["ping", "-n", "-q", "-c", "2", "-i", "0.05", "-W", "2",
                                                      "-M", "do", "-s", str(payload), dst.ip])
                results.append((src.node, dst.node, res.ok))
    finally:
        path = ctx.backend.stop_capture(cap)
    s = pcap.summarize(path, ctx.spec.pod_supernet)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return {"mtu": mtu, "results": results, "fragments": s.fragments, "largest": s.largest_ip, "esp": s.esp}


def judge_pmtu(obs: Observation) -> Verdict:
    ms = (Measurement("pod_mtu", obs["mtu"], "bytes"), Measurement("largest_underlay_packet", obs["largest"], "bytes"),
          Measurement("underlay_fragments", obs["fragments"], "packets"))
    if not obs["results"]:
        return Verdict.failed("needs pods on two nodes: deploy first", *ms)
    bad = [f"{a}->{b}" for a, b, ok in obs["results"] if not ok]
    if bad:
        return Verdict.failed(f"full-size ({obs['mtu']} bytes) don't-fragment pings lost on {', '.join(bad[:4])}: "
                              "pod MTU larger than the tunnel carries, or ICMP 'fragmentation needed' filtered", *ms)
    if obs["fragments"]:
        return Verdict.failed(f"{obs['fragments']} IP fragments on the underlay at full-size pod packets "
                              f"(largest {obs['largest']} bytes): lower the pod MTU", *ms)
    return Verdict.passed(f"{len(obs['results'])} node pairs carry {obs['mtu']}-byte DF packets; "
                          f"no fragments on the underlay (largest {obs['largest']} bytes)", *ms)


# -- forward-policy -----------------------------------------------------------------------------
def collect_forward(ctx: CheckContext) -> Observation:
    return {n.name: ctx.backend.exec(n.name, ["iptables", "-w", "-S", "FORWARD"]).stdout for n in ctx.spec.node_list()}


def judge_forward(obs: Observation) -> Verdict:
    bad = []
    for node, rules in obs.items():
        lines = rules.splitlines()
        if "-P FORWARD DROP" not in lines:
            bad.append(f"{node}: FORWARD policy is not DROP ({lines[0] if lines else 'no output'})")
        for flag, what in (("-i cni0", "out of cni0"), ("-o cni0", "into cni0")):
            if not any(flag in line and line.endswith("-j ACCEPT") for line in lines):
                bad.append(f"{node}: no explicit ACCEPT for pod traffic {what} (iptables -A FORWARD {flag} -j ACCEPT)")
    if bad:
        return Verdict.failed("; ".join(bad[:4]))
    return Verdict.passed(f"{len(obs)} nodes: FORWARD policy DROP with explicit ACCEPTs in and out of cni0")


# -- boot-order ---------------------------------------------------------------------------------
BOOT_ORDER_SCRIPT = (
    "hz=$(getconf CLK_TCK); "
    "echo cni0 $(ip -o -4 addr show dev cni0 2>/dev/null | awk '{print $4}') $(cat /sys/class/net/cni0/operstate 2>/dev/null); "
    "echo boot $(cat /run/ipsec-lab-boot.done 2>/dev/null || echo none); "
    "pid=$(cat /run/charon.pid 2>/dev/null); "
    "echo charon $(awk -v hz=$hz '{s=$0; sub(/.*\\) /, \"\", s); split(s, f, \" \"); printf \"%.2f\", f[20]/hz}' /proc/$pid/stat 2>/dev/null || echo none)"
)


def collect_boot_order(ctx: CheckContext) -> Observation:
    out = {}
    for n in ctx.spec.node_list():
        res = ctx.backend.exec(n.name, ["sh", "-c", BOOT_ORDER_SCRIPT])
        fields = {line.split()[0]: line.split()[1:] for line in res.stdout.splitlines() if line.split()}
        out[n.name] = {"cni0": fields.get("cni0", []), "boot": fields.get("boot", ["none"])[0],
                       "charon": fields.get("charon", ["none"])[0], "expected": f"{n.cni0_ip}/{n.pod_cidr.prefixlen}"}
    return out


def judge_boot_order(obs: Observation) -> Verdict:
    bad = []
    for node, o in obs.items():
        if o["expected"] not in o["cni0"]:
            bad.append(f"{node}: cni0 lacks {o['expected']} ({' '.join(o['cni0']) or 'no cni0'})")
        if o["boot"] == "none" or o["charon"] == "none":
            bad.append(f"{node}: no boot stamp or no charon ({o['boot']}, {o['charon']})")
            continue
        if float(o["boot"]) > float(o["charon"]):
            bad.append(f"{node}: cni0/firewall set up at {o['boot']} s, after the IPsec daemon started at {o['charon']} s")
    if bad:
        return Verdict.failed("; ".join(bad[:4]))
    return Verdict.passed(f"{len(obs)} nodes: cni0 up with its address and the firewall in place before charon started")


# -- ipam-no-exhaustion -------------------------------------------------------------------------
def _ipam_script(ctx: CheckContext, node: str, command_loop: str) -> str:
    return (
        f"cfg=$(cat); export CNI_NETNS=/proc/self/ns/net CNI_IFNAME=eth0 CNI_PATH={ctx.backend.cni_bin_dir}; "
        + command_loop
    )


def _ipam_conf(ctx: CheckContext, node: str) -> tuple[str, str]:
    conflist = ctx.backend.cni_config(node)
    plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"], name=conflist["name"])
    return json.dumps(plugin), plugin["ipam"].get("dataDir", "/var/lib/cni/networks")


def collect_ipam(ctx: CheckContext) -> Observation:
    node = ctx.spec.node_list()[-1].name
    conf, data_dir = _ipam_conf(ctx, node)
    hl = f"{ctx.backend.cni_bin_dir}/host-local"
    churn = _ipam_script(ctx, node,
        f"i=0; while [ $i -lt {IPAM_CHURN} ]; do i=$((i+1)); "
        f"echo \"$cfg\" | CNI_COMMAND=ADD CNI_CONTAINERID=ipamchurn$i {hl} >/dev/null || {{ echo add-failed $i; exit 1; }}; "
        f"echo \"$cfg\" | CNI_COMMAND=DEL CNI_CONTAINERID=ipamchurn$i {hl} >/dev/null || {{ echo del-failed $i; exit 1; }}; "
        "done; echo churned $i")
    res = ctx.backend.exec(node, ["sh", "-c", churn], input=conf, timeout=120)
    # Leak reservations the way a crash does (ADD, never DEL), then reboot the node: with the
    # data under /run they are gone; on persistent storage they would pile up until exhaustion.
    leak = _ipam_script(ctx, node,
        f"for i in 1 2 3 4 5 6 7 8 9 10; do echo \"$cfg\" | CNI_COMMAND=ADD CNI_CONTAINERID=ipamleak$i {hl} >/dev/null; done; "
        f"grep -l ipamleak {data_dir}/{json.loads(conf)['name']}/* 2>/dev/null | wc -l")
    leaked_before = ctx.backend.exec(node, ["sh", "-c", leak], input=conf).stdout.strip()
    ctx.backend.reboot(node)
    _wait_healthy(ctx)
    left = ctx.backend.exec(node, ["sh", "-c", f"grep -l ipamleak {data_dir}/{json.loads(conf)['name']}/* 2>/dev/null | wc -l"]).stdout.strip()
    return {"node": node, "data_dir": data_dir, "churn": res.stdout.strip() or res.stderr.strip(), "churn_ok": res.ok,
            "leaked_before_reboot": int(leaked_before or 0), "leaked_after_reboot": int(left or 0)}


def judge_ipam(obs: Observation) -> Verdict:
    ms = (Measurement("churned_allocations", IPAM_CHURN, "pods"), Measurement("leaked_after_reboot", obs["leaked_after_reboot"], "addresses"))
    bad = []
    if not obs["data_dir"].startswith("/run/"):
        bad.append(f"host-local dataDir {obs['data_dir']} is on persistent storage, not under /run (the seed's IP exhaustion)")
    if not obs["churn_ok"]:
        bad.append(f"{IPAM_CHURN} create/delete cycles on {obs['node']} ran out: {obs['churn']}")
    if obs["leaked_after_reboot"]:
        bad.append(f"{obs['leaked_after_reboot']} leaked reservations survived a reboot of {obs['node']}")
    if bad:
        return Verdict.failed("; ".join(bad), *ms)
    return Verdict.passed(f"{IPAM_CHURN} allocations churned on {obs['node']} without exhaustion; dataDir {obs['data_dir']} "
                          f"was emptied by a reboot ({obs['leaked_before_reboot']} leaked reservations gone)", *ms)


# -- recovery -----------------------------------------------------------------------------------
def _recovery(ctx: CheckContext, src: str, dst: str, fault, *, wait_s: float, settle: float = 0.3,
              fault_s: float = 0.0) -> Observation:
    """Ping dst's cni0 from src's (through their tunnel) while the fault happens; measure the gap.

    Traffic must be back within `wait_s` of the fault's end; past that the check has failed
    anyway, so it waits no longer.
    """
    ip = str(ctx.spec.node(dst).cni0_ip)
    loop = probes.PingLoop(ctx.backend, src, ip, max_seconds=fault_s + wait_s + 30)
    heal = None
    try:
        if loop.wait_reply_after(0, 5) is None:
            raise LabError(f"no ping reply from {dst} ({ip}) to {src} before the fault")
        time.sleep(settle)
        t_fault = time.time()
        info = fault() or {}
        t_done = time.time()
        first = loop.wait_reply_after(t_done, wait_s)
        if first is not None:
            heal = _wait_healthy(ctx)
            time.sleep(settle)
    finally:
        loop.stop()
    return {"gap": loop.gap(after=t_fault - 0.001) if first else None, "fault_s": t_done - t_fault,
            "first_reply_after_s": (first - t_done) if first else None, "mesh_heal_s": heal,
            "waited_s": wait_s, "pair": f"{src} -> {dst}", **info}


def _judge_recovery(obs: Observation, bound: float, what: str) -> Verdict:
    if obs["gap"] is None:
        return Verdict.failed(f"traffic {obs['pair']} did not come back within {obs['waited_s']:.0f} s after {what}")
    # No mesh_heal_s means strongSwan had not shown the mesh whole when the wait ended: not 0 s.
    ms = (Measurement("gap_s", round(obs["gap"], 3), "s"),
          *([Measurement("mesh_heal_s", round(obs["mesh_heal_s"], 3), "s")] if obs["mesh_heal_s"] is not None else []))
    if obs["gap"] > bound:
        return Verdict.failed(f"traffic {obs['pair']} stopped {obs['gap']:.2f} s after {what} (bound {bound} s)", *ms)
    return Verdict.passed(f"{what}: traffic {obs['pair']} stopped {obs['gap']:.3f} s (bound {bound} s), recovered on its own", *ms)


def collect_recover_tunnel_down(ctx: CheckContext) -> Observation:
    a, b = ctx.spec.node_list()[0].name, ctx.spec.node_list()[1].name
    conn = _peer_conn(ctx, a, b)
    obs = _recovery(ctx, a, b, lambda: {"command": ctx.backend.tunnel_down(a, conn)}, wait_s=BOUND_TUNNEL_DOWN_S + 1)
    obs["fault"] = f"{a}: swanctl --terminate --ike {conn} (ipsec down {conn})"
    return obs


def collect_recover_ipsec_restart(ctx: CheckContext) -> Observation:
    nodes = ctx.spec.node_list()
    a, b = nodes[0].name, nodes[-1].name
    obs = _recovery(ctx, a, b, lambda: ctx.backend.restart_ipsec(b), wait_s=BOUND_IPSEC_RESTART_S + 1)
    obs["fault"] = f"restart the IPsec daemon on {b}"
    return obs


def collect_recover_node_reboot(ctx: CheckContext) -> Observation:
    a, b = ctx.spec.node_list()[0].name, ctx.spec.node_list()[1].name
    obs = _recovery(ctx, a, b, lambda: ctx.backend.reboot(b), wait_s=BOUND_NODE_REBOOT_S + 1)
    obs["fault"] = f"reboot {b}"
    return obs


def collect_recover_underlay_outage(ctx: CheckContext) -> Observation:
    a, b = ctx.spec.node_list()[0].name, ctx.spec.node_list()[1].name

    def outage() -> dict:
        ctx.backend.set_underlay_link(b, False)
        try:
            time.sleep(OUTAGE_S)
        finally:
            ctx.backend.set_underlay_link(b, True)
        return {"outage_s": OUTAGE_S}

    obs = _recovery(ctx, a, b, outage, wait_s=BOUND_OUTAGE_RECOVERY_S + 1, fault_s=OUTAGE_S)
    if obs["gap"] is not None:
        obs["recovery_after_restore_s"] = max(0.0, obs["gap"] - obs["fault_s"])
    return obs


def judge_recover_underlay_outage(obs: Observation) -> Verdict:
    if obs["gap"] is None:
        return Verdict.failed(f"after a {obs['outage_s']:.0f} s underlay outage, traffic {obs['pair']} did not come back "
                              f"within {obs['waited_s']:.0f} s (keyingtries exhausted? the tunnel ended for good)")
    rec = obs["recovery_after_restore_s"]
    ms = (Measurement("recovery_after_restore_s", round(rec, 3), "s"), Measurement("outage_s", obs["outage_s"], "s"))
    if rec > BOUND_OUTAGE_RECOVERY_S:
        return Verdict.failed(f"traffic {obs['pair']} came back {rec:.2f} s after the link returned (bound {BOUND_OUTAGE_RECOVERY_S} s)", *ms)
    return Verdict.passed(f"underlay of {obs['pair'].split(' -> ')[1]} cut for {obs['outage_s']:.0f} s: traffic back "
                          f"{rec:.2f} s after the link returned (bound {BOUND_OUTAGE_RECOVERY_S} s)", *ms)


# -- no-leak-during-faults ----------------------------------------------------------------------
FAULT_CAPTURE = "fault_capture"


def start_fault_capture(ctx: CheckContext) -> None:
    """Started by the runner before the first disruptive check, when no-leak-during-faults runs."""
    if FAULT_CAPTURE not in ctx.shared:
        ctx.shared[FAULT_CAPTURE] = ctx.backend.start_capture(f"faults-{secrets.token_hex(3)}")
        ctx.shared["fault_log"] = []


def collect_no_leak(ctx: CheckContext) -> Observation:
    problems = []
    if FAULT_CAPTURE not in ctx.shared:
        # Run on its own: inject the quick faults here, under capture. A fault that does not heal
        # is noted and the next one still runs: what leaked meanwhile is what this check judges.
        start_fault_capture(ctx)
        for collect in (collect_recover_tunnel_down, collect_recover_ipsec_restart, collect_recover_node_reboot):
            try:
                obs = collect(ctx)
                ctx.shared["fault_log"].append(obs.get("fault", collect.__name__))
                if obs.get("gap") is None:
                    problems.append(f"{obs.get('fault')}: traffic did not come back")
            except LabError as exc:
                problems.append(str(exc))
    path = ctx.backend.stop_capture(ctx.shared.pop(FAULT_CAPTURE))
    s = pcap.summarize(path, ctx.spec.pod_supernet)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return {"summary": s.__dict__, "faults": ctx.shared.pop("fault_log", []), "problems": problems}


def judge_no_leak(obs: Observation) -> Verdict:
    s = obs["summary"]
    ms = (Measurement("cleartext_pod_packets", s["cleartext_pod"], "packets"), Measurement("esp_packets", s["esp"], "packets"))
    faults = ", ".join(obs["faults"]) or "the faults"
    if s["cleartext_pod"]:
        return Verdict.failed(f"{s['cleartext_pod']} pod packets in clear on the underlay during {faults} "
                              f"(e.g. {', '.join(s['examples'])}): is the unreachable guard route missing?", *ms)
    if s["esp"] == 0:
        return Verdict.failed("the fault capture saw no ESP at all: it was not watching the traffic", *ms)
    if obs.get("problems"):
        return Verdict.failed("no cleartext, but the faults did not all heal: " + "; ".join(obs["problems"][:3]), *ms)
    return Verdict.passed(f"0 cleartext pod packets among {s['packets']} captured during {faults}", *ms)


CATALOG: list[Check] = [
    Check("nodes-ready", "every node is up with its IPsec daemon running", "status of every node",
          collect_nodes, judge_nodes),
    Check("tunnels-established", "every node pair has an IKE SA ESTABLISHED and a CHILD SA INSTALLED on both ends",
          "strongSwan's SAs over vici on every node", collect_tunnels, judge_tunnels),
    Check("pod-addresses", "each pod has an address from its node's /24, handed out in order by host-local",
          "the pods' addresses", collect_pod_addresses, judge_pod_addresses),
    Check("node-to-pod", "every node reaches every pod", "ping from every node to every pod",
          collect_node_to_pod, judge_node_to_pod),
    Check("pod-to-pod-http", "every pod reaches every other pod's HTTP server across the tunnels",
          "curl from every pod to every other pod on 8080", collect_pod_to_pod, judge_pod_to_pod),
    Check("nodeport-balance", "each node's NodePort spreads requests over every pod",
          f"{NODEPORT_REQUESTS} curls to each node's NodePort", collect_nodeport, judge_nodeport),
    Check("underlay-encrypted", "pod traffic crosses the underlay only as ESP, never in clear",
          "tcpdump on the underlay while marked pod traffic flows, with a cleartext control",
          collect_underlay_encrypted, judge_underlay_encrypted),
    Check("pmtu", "full-size don't-fragment pod packets cross every tunnel, with no fragments on the underlay",
          "ping -M do at the pod MTU between pods of every node pair, under capture", collect_pmtu, judge_pmtu),
    Check("forward-policy", "FORWARD policy DROP, as on a Kubernetes node, with the seed's explicit accepts",
          "iptables -S FORWARD on every node", collect_forward, judge_forward),
    Check("boot-order", "cni0 has its address and the firewall is set before the IPsec daemon starts",
          "cni0 address, boot stamp and charon's start time on every node", collect_boot_order, judge_boot_order),
    Check("ipam-no-exhaustion", "host-local never runs out: deletes release, and a reboot clears its data",
          f"{IPAM_CHURN} host-local ADD/DEL on one node, leaked reservations, a reboot", collect_ipam, judge_ipam,
          disruptive=True),
    Check("recover-tunnel-down", "a tunnel taken down (`ipsec down mesh-left`) comes back by itself",
          "swanctl --terminate --ike on kube-node1 under a 10 ms ping loop", collect_recover_tunnel_down,
          lambda o: _judge_recovery(o, BOUND_TUNNEL_DOWN_S, o["fault"]), disruptive=True),
    Check("recover-ipsec-restart", "a restarted IPsec daemon re-establishes its tunnels",
          "restart charon on the last node under a 10 ms ping loop", collect_recover_ipsec_restart,
          lambda o: _judge_recovery(o, BOUND_IPSEC_RESTART_S, o["fault"]), disruptive=True),
    Check("recover-node-reboot", "a rebooted node rejoins the mesh with its pods",
          "reboot kube-node2 under a 10 ms ping loop", collect_recover_node_reboot,
          lambda o: _judge_recovery(o, BOUND_NODE_REBOOT_S, o["fault"]), disruptive=True),
    Check("recover-underlay-outage", "the mesh survives a long underlay outage",
          f"cut kube-node2's underlay link for {OUTAGE_S:.0f} s, restore it, under a 10 ms ping loop",
          collect_recover_underlay_outage, judge_recover_underlay_outage, disruptive=True),
    Check("no-leak-during-faults", "no pod traffic leaves in clear while the faults above run",
          "tcpdump on the underlay during every fault", collect_no_leak, judge_no_leak, disruptive=True),
]

BY_NAME = {c.name: c for c in CATALOG}


def catalog_names() -> list[str]:
    return [c.name for c in CATALOG]


def describe(check: Check) -> dict[str, Any]:
    return {"name": check.name, "purpose": check.purpose, "runs": check.runs, "disruptive": check.disruptive}
