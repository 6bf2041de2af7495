#!/usr/bin/env python3
"""Measures a netns lab: cold up + deploy until every pod answers, and the traffic gap of each fault.

    .venv/bin/python bench/bench_lab.py [--nodes 3 20] [--json PATH]

The gap is the longest interval between two ping replies (ping -D -i 0.01 from kube-node1 to a
pod on the affected node) while the fault happens, minus the 10 ms ping interval. Runs on its own
lab names (bench3, bench20) and always tears them down.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tui.backends.netns import NetnsBackend  # noqa: E402
from tui.lab import naming, probes  # noqa: E402
from tui.lab.model import LabSpec  # noqa: E402

def all_pods_answer(lab: NetnsBackend) -> bool:
    pods = lab.status().pods
    replies = probes.http_get_many(lab, "kube-node1", [f"http://{p.ip}:8080" for p in pods], timeout=1)
    return all(r.body == probes.bootcamp_reply(p.name) for r, p in zip(replies, pods))


def measure_gap(lab: NetnsBackend, target_ip: str, fault, window: float = 4.0) -> tuple[float, float]:
    """(gap seconds, fault command seconds), from the same ping loop the recovery checks use."""
    loop = probes.PingLoop(lab, "kube-node1", target_ip, max_seconds=window + 1)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        fault()
        took = time.monotonic() - t0
        time.sleep(max(0.0, window - 0.5 - took))
    finally:
        loop.stop()
    return loop.gap(), took


def bench(nodes: int) -> dict:
    name = f"bench{nodes}"
    lab = NetnsBackend(name)
    lab.down()
    result: dict = {"nodes": nodes}
    try:
        t0 = time.monotonic()
        lab.up(LabSpec.build(name, nodes))
        result["up_s"] = time.monotonic() - t0
        lab.deploy(3 * nodes)
        while not all_pods_answer(lab):
            time.sleep(0.01)
        result["up_deploy_serving_s"] = time.monotonic() - t0
        spec = lab.spec()
        pods = lab.status().pods
        on = lambda node: next(p.ip for p in pods if p.node == node)  # noqa: E731
        conn = naming.tunnel_name(nodes, 1, 2)
        result["gap_tunnel_down_s"], _ = measure_gap(lab, on("kube-node2"), lambda: lab.tunnel_down("kube-node1", conn))
        result["gap_restart_ipsec_s"], _ = measure_gap(lab, on("kube-node3"), lambda: lab.restart_ipsec("kube-node3"))
        result["gap_reboot_s"], result["reboot_cmd_s"] = measure_gap(lab, on("kube-node2"), lambda: lab.reboot("kube-node2"))
        result["tunnels"] = len(spec.tunnels())
    finally:
        lab.down()
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[3, 20])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = [bench(n) for n in args.nodes]
    table = Table(title="ipsec-lab netns bench (seconds)")
    cols = ["nodes", "tunnels", "up_s", "up_deploy_serving_s", "gap_tunnel_down_s", "gap_restart_ipsec_s", "gap_reboot_s"]
    heads = ["nodes", "tunnel ends", "up", "up + pods serving", "gap tunnel-down", "gap restart-ipsec", "gap reboot"]
    for h in heads:
        table.add_column(h, justify="right")
    for r in results:
        table.add_row(*[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    Console(width=120).print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
