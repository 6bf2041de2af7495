"""`ipsec-lab` with no command: open the TUI on a lab (attach if it runs, else bring one up).

After the app exits, say plainly whether the lab is still running.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from .backends.registry import get_backend, lab_backend_name
from .exitcodes import ExitCode
from .lab import preflight
from .lab.events import Reporter
from .lab.errors import UsageError
from .lab.model import LabSpec, node_count


def run_tui(args: argparse.Namespace) -> int:
    from .app import IpsecLabApp  # noqa: PLC0415  (Textual is imported here, never by the CLI)

    out = Console(highlight=False)
    lab = args.lab
    nodes = node_count(args.nodes)
    auth = getattr(args, "auth", None) or "psk"
    LabSpec.build(lab, nodes, auth=auth)  # bad input is a usage error before the screen is taken over
    if args.read_only and getattr(args, "tutorial", False):
        raise UsageError("--tutorial and --read-only: the tutorial acts on the lab, so it has no read-only view")
    backend = get_backend(lab_backend_name(lab, args.backend), lab, Reporter(), node_mode=args.kubernetes)
    if not backend.exists() and not args.read_only:
        preflight.require(backend.doctor())  # a missing package is one line before the screen is taken
    tutorial = None
    if getattr(args, "tutorial", False):
        from .tutorial.session import TutorialSession  # noqa: PLC0415

        tutorial = TutorialSession(backend)
    # In tutorial mode deploying is a step of its own, so a new lab starts without pods.
    app = IpsecLabApp(backend, nodes=nodes, tutorial=tutorial, deploy_replicas=0 if tutorial else 9,
                      read_only=args.read_only, auth=auth)
    choice = app.run()
    app._stop.set()
    if args.web_session:  # a browser tab of `ipsec-lab web`: its stdout is the web driver's pipe, no place for text
        if choice == "stop":
            backend.reporter = Reporter()
            backend.down()
        return int(app.return_code or 0)
    if choice == "stop":
        out.print(f"stopping lab [bold]{lab}[/] …")
        backend.reporter = Reporter()
        removed = backend.down()
        out.print(f"lab [bold]{lab}[/] stopped: removed {len(removed)} items (namespaces, processes, state).")
        return ExitCode.OK
    if backend.exists():
        made = "brought up by this session" if app.lab_created else "attached"
        out.print(f"lab [bold]{lab}[/] ({made}) is [green]still running[/]. "
                  f"`ipsec-lab --lab {lab}` attaches again; `ipsec-lab --lab {lab} down` stops it.")
    else:
        out.print(f"no lab [bold]{lab}[/] is running.")
    if app.return_code not in (None, 0):
        return int(app.return_code)
    return ExitCode.OK


