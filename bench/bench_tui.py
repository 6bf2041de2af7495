#!/usr/bin/env python3
"""Measures the TUI: time to first frame, time until all tunnels are shown ESTABLISHED, and the
cost of one refresh of the Tunnels view with 20 nodes (190 tunnels, 380 tunnel ends).

    .venv/bin/python bench/bench_tui.py [--runs 3] [--refreshes 50] [--json PATH]

First frame and "all ESTABLISHED" run the real `ipsec-lab` command in a tmux server of its own
(150x48) and poll the screen every 5 ms with capture-pane, from the moment the command is
started: cold (the app brings a 3-node lab up) and attached (the lab already runs). The refresh
cost is measured in process with a fake backend replaying a synthetic 20-node status (the shape
of a recorded real one): show_status() plus rendering every line of the screen, with statuses
that alternate so that every cell changes. Goals: first frame 1 s, refresh 50 ms or less.
Runs on its own lab name (tuibench) and always tears it down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tui.backends.netns import NetnsBackend  # noqa: E402

LAB = "tuibench"
SOCKET = "ilab-tui-bench"
IPSEC_LAB = ROOT / ".venv" / "bin" / "ipsec-lab"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, timeout=10).stdout


def time_app(attach: bool) -> tuple[float, float]:
    """(seconds to the first frame, seconds until the screen shows every tunnel end ESTABLISHED)."""
    session = "bench"
    backend = NetnsBackend(LAB)
    if not attach:
        backend.down()
    cmd = f"env -u COLUMNS -u LINES {IPSEC_LAB} --lab {LAB}; sleep 30"
    tmux("kill-server")
    t0 = time.monotonic()
    tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "48", "sh", "-c", cmd)
    first = everything = None
    try:
        while time.monotonic() - t0 < 60:
            s = tmux("capture-pane", "-p", "-t", session)
            now = time.monotonic() - t0
            if first is None and "ipsec-lab" in s:
                first = now
            if "6/6 ESTABLISHED" in s:
                everything = now
                break
            time.sleep(0.005)
        tmux("send-keys", "-t", session, "q")
        time.sleep(0.3)
        tmux("send-keys", "-t", session, "l")
        time.sleep(1.0)
    finally:
        tmux("kill-server")
    return first or float("nan"), everything or float("nan")


async def refresh_cost(nodes: int, refreshes: int) -> tuple[float, float, float]:
    """(median ms of show_status + full render, p95 ms, median ms of show_status alone)."""
    from tests.tui_fakes import make_app, synthetic_status
    from tui.screens.tunnels import TunnelsScreen

    healthy = synthetic_status(nodes)
    broken = replace(healthy, tunnels=[replace(t, ike_state="CONNECTING", child_state="DOWN") if i % 3 == 0 else t
                                       for i, t in enumerate(healthy.tunnels)])
    app = make_app("tunnels", status=healthy)
    totals, updates = [], []
    async with app.run_test(size=(150, 50)) as pilot:
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, TunnelsScreen)
        for i in range(refreshes):
            st = broken if i % 2 else healthy
            app.reach.observe_status(st)
            t0 = time.perf_counter()
            screen.show_status(st)
            t1 = time.perf_counter()
            screen._compositor.render_strips()  # every line of the screen, as the next frame draws it
            t2 = time.perf_counter()
            await pilot.pause()
            updates.append((t1 - t0) * 1000)
            totals.append((t2 - t0) * 1000)
    totals.sort()
    return statistics.median(totals), totals[int(len(totals) * 0.95) - 1], statistics.median(updates)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--refreshes", type=int, default=50)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_tui: needs root (it starts a netns lab)", file=sys.stderr)
        return 2
    rows = []
    try:
        cold = [time_app(attach=False) for _ in range(args.runs)]
        warm = [time_app(attach=True) for _ in range(args.runs)]
    finally:
        NetnsBackend(LAB).down()
    med = lambda xs: statistics.median(xs)  # noqa: E731
    rows.append(("first frame, attaching to a running 3-node lab", med([w[0] for w in warm]) * 1000, "ms", "≤ 1000"))
    rows.append(("first frame, no lab yet (the app brings it up)", med([c[0] for c in cold]) * 1000, "ms", "≤ 1000"))
    rows.append(("all 6 tunnel ends shown ESTABLISHED, attaching", med([w[1] for w in warm]) * 1000, "ms", ""))
    rows.append(("all 6 tunnel ends shown ESTABLISHED, cold (up + deploy 9)", med([c[1] for c in cold]) * 1000, "ms", ""))
    total, p95, update = asyncio.run(refresh_cost(20, args.refreshes))
    rows.append(("Tunnels view refresh, 20 nodes / 380 ends: update + render, median", total, "ms", "≤ 50"))
    rows.append(("Tunnels view refresh, 20 nodes / 380 ends: update + render, p95", p95, "ms", "≤ 50"))
    rows.append(("Tunnels view refresh, 20 nodes: show_status() alone, median", update, "ms", ""))
    t = Table(title=f"ipsec-lab TUI ({args.runs} runs each; tmux 150x48)", title_justify="left")
    for col in ("measure", "value", "unit", "goal"):
        t.add_column(col)
    for name, value, unit, goal in rows:
        t.add_row(name, f"{value:.1f}", unit, goal)
    Console().print(t)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps([dict(zip(("measure", "value", "unit", "goal"), r)) for r in rows],
                                                   indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
