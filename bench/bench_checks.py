#!/usr/bin/env python3
"""Times the whole check suite on a fresh 3-node netns lab, check by check.

    .venv/bin/python bench/bench_checks.py [--nodes 3] [--outage 60] [--json PATH]

recover-underlay-outage waits out its outage (60 s by default, as the catalog); its cost is
shown apart, so the rest of the suite can be read against the 30 s goal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--outage", type=float, default=None, help="seconds the underlay is cut (default: the catalog's)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.outage is not None:
        os.environ["IPSEC_LAB_OUTAGE_S"] = str(args.outage)
    from tui.backends.netns import NetnsBackend
    from tui.checks import catalog
    from tui.checks.runner import run_checks
    from tui.lab.model import LabSpec

    name = f"benchck{args.nodes}"
    lab = NetnsBackend(name)
    lab.down()
    try:
        t0 = time.monotonic()
        lab.up(LabSpec.build(name, args.nodes))
        t_up = time.monotonic() - t0
        t1 = time.monotonic()
        results = run_checks(lab)
        t_checks = time.monotonic() - t1
    finally:
        lab.down()
    table = Table(title=f"check suite on {args.nodes} netns nodes (outage {catalog.OUTAGE_S:.0f} s)")
    for col in ("check", "result", "seconds", "measured"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for r in results:
        measured = ", ".join(f"{m.name}={m.value}{'' if m.unit in ('packets', 'pairs', 'SAs') else ' ' + m.unit}"
                             for m in r.measurements)
        table.add_row(r.name, r.outcome.value, f"{r.seconds:.2f}", measured)
    outage = next((r.seconds for r in results if r.name == "recover-underlay-outage"), 0.0)
    console = Console(width=140)
    console.print(table)
    console.print(f"lab up {t_up:.2f} s; checks (with deploy/expose) {t_checks:.2f} s, of which the underlay outage "
                  f"{outage:.2f} s; everything but the outage {t_up + t_checks - outage:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"up_s": t_up, "checks_s": t_checks, "outage_check_s": outage,
                                               "checks": [r.to_json() for r in results]}, indent=2))
    return 0 if all(r.outcome.value != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
