"""The scripting interface: `ipsec-lab up | down | status | exec | ssh | deploy | ...`.

Headless (imports no Textual). Progress is the same event stream the TUI shows, printed with rich.
Every failure the user can act on is one line on stderr and a non-zero exit (see ExitCode).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table

from .backends.base import Backend
from .backends.registry import BACKENDS, get_backend, lab_backend_name
from .exitcodes import ExitCode
from .lab.errors import LabError, UsageError
from .lab import preflight
from .lab.events import Reporter
from .lab.model import AUTH_METHODS, LabSpec, node_count
from .lab.state import list_labs
from .live.console import ConsoleSink
from .live.fault import FaultPlan, run_fault
from .live.text import seed_command

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but bad usage is one line on stderr and exit code 3."""

    def error(self, message: str) -> None:  # type: ignore[override]  # argparse says NoReturn; sys.exit below
        err.print(f"ipsec-lab: {message} (see `ipsec-lab --help`)", markup=False)
        sys.exit(ExitCode.USAGE)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="ipsec-lab",
        description="A live lab of the seed's Kubernetes IPsec pod network. With no command, opens the TUI.",
    )
    p.add_argument("--backend", choices=BACKENDS, default=None, help="netns (default) or vagrant")
    p.add_argument("--kubernetes", choices=("none", "kubeadm"), default=None,
                   help="vagrant: none (default, offline: pods as on netns) or kubeadm (the seed's cluster, online)")
    p.add_argument("--lab", default=os.environ.get("IPSEC_LAB", "lab"), help="lab name (default: lab)")
    p.add_argument("--nodes", type=int, default=None, help="node count for a new lab (2-32, default 3)")
    p.add_argument("--tutorial", action="store_true", help="open the TUI in tutorial mode")
    p.add_argument("--run-checks", action="store_true", help="run the check suite headless (for CI)")
    p.add_argument("--list-checks", action="store_true", help="print the check catalog")
    p.add_argument("--only", nargs="+", metavar="NAME", help="with --run-checks: only these checks")
    p.add_argument("--junit", metavar="PATH", help="with --run-checks: write JUnit XML")
    p.add_argument("--json", dest="json_path", metavar="PATH", help="with --run-checks: write JSON results")
    p.add_argument("--keep", action="store_true", help="with --run-checks: keep the lab up afterwards")
    p.add_argument("--auth", choices=AUTH_METHODS, default=None,
                   help="how a lab the TUI or --run-checks brings up authenticates: psk (default) or x509")
    p.add_argument("-q", "--quiet", action="store_true", help="print steps, not every provisioning line")
    p.add_argument("--read-only", action="store_true",
                   help="open the TUI as a view: no action, shell, fault or check is offered")
    p.add_argument("--web-session", action="store_true", help=argparse.SUPPRESS)  # a tab of `ipsec-lab web`
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    up = sub.add_parser("up", help="bring a lab up")
    up.add_argument("--nodes", dest="up_nodes", type=int, default=None, help="node count (2-32, default 3)")
    up.add_argument("--underlay", default="192.168.56.0/24", help="node subnet (default 192.168.56.0/24)")
    up.add_argument("--pod-supernet", default="10.128.0.0/16", help="pod supernet, a /24 per node (default 10.128.0.0/16)")
    up.add_argument("--datapath", choices=("auto", "kernel-xfrm", "kernel-libipsec"), default="auto",
                    help="IPsec data path (default: detect)")
    up.add_argument("--auth", dest="up_auth", choices=AUTH_METHODS, default=None,
                    help="psk (default: a random pre-shared key per node pair) or x509 (a lab CA, a certificate per node)")
    up.add_argument("--deploy", type=int, metavar="N", default=None, help="also deploy N bootcamp replicas")
    up.add_argument("--rekey-s", type=int, metavar="N", default=None,
                    help="short SA lifetimes: CHILD SAs rekey every N s, IKE SAs every 4 N s (default: strongSwan's 1 h)")
    sub.add_parser("down", help="remove the lab and everything it created (works after a crash)")
    st = sub.add_parser("status", help="nodes, tunnels (from strongSwan over vici), pods and services")
    st.add_argument("--json", action="store_true", help="machine-readable")
    sub.add_parser("labs", help="list the labs that are up on this machine")
    box = sub.add_parser("box", help="the Vagrant backend's offline box: box build [--force]")
    box.add_argument("action", choices=("build", "path"), help="build: make it (cached); path: where it is")
    box.add_argument("--force", action="store_true", help="build again even when the cached box is current")
    doc = sub.add_parser("doctor", help="check that this machine has every package a lab needs")
    doc.add_argument("--install", action="store_true", help="apt-get install the missing Debian packages")
    ex = sub.add_parser("exec", help="run a command on a node: exec NODE -- CMD...")
    ex.add_argument("node")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    ssh = sub.add_parser("ssh", help="an interactive shell on a node")
    ssh.add_argument("node")
    dep = sub.add_parser("deploy", help="deploy or scale the kubernetes-bootcamp deployment")
    dep.add_argument("--replicas", type=int, default=9)
    dp = sub.add_parser("delete-pod", help="delete a pod; the deployment replaces it")
    dp.add_argument("pod")
    exp = sub.add_parser("expose", help="publish the deployment on a NodePort on every node")
    exp.add_argument("--node-port", type=int, default=None, help="30000-32767 (default: random)")
    td = sub.add_parser("tunnel-down", help="take a connection down, as the seed's `ipsec down mesh-left`")
    td.add_argument("node")
    td.add_argument("conn")
    tu = sub.add_parser("tunnel-up", help="initiate a connection now")
    tu.add_argument("node")
    tu.add_argument("conn")
    ri = sub.add_parser("restart-ipsec", help="restart a node's IPsec daemon")
    ri.add_argument("node")
    rb = sub.add_parser("reboot", help="reboot a node (processes, namespace and /run wiped, booted again)")
    rb.add_argument("node")
    rk = sub.add_parser("rekey", help="rekey a connection's CHILD SA (or IKE SA) now, under a 10 ms ping loop")
    rk.add_argument("node")
    rk.add_argument("conn")
    rk.add_argument("--ike", action="store_true", help="rekey the IKE SA instead of the CHILD SA")
    cap = sub.add_parser("capture", help="tcpdump on a node: decoded lines here, or a pcap with -w")
    cap.add_argument("node")
    cap.add_argument("--iface", default=None, help="interface (default: the node's underlay; cni0, a veth, ipsec0, ...)")
    cap.add_argument("--filter", dest="bpf", default="", metavar="BPF", help="a tcpdump filter, e.g. 'esp or udp port 4500'")
    cap.add_argument("-w", dest="write", default=None, metavar="FILE", help="write a pcap (Wireshark opens it)")
    cap.add_argument("--count", type=int, default=None, metavar="N", help="stop after N packets")
    cap.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    lk = sub.add_parser("link", help="impair a node's underlay link: delay, jitter, loss, rate; cut it; clear it",
                        description="With no option: the link's impairment now. Acts inside the node only.")
    lk.add_argument("node")
    lk.add_argument("--delay", type=float, metavar="MS", help="delay every packet leaving the node (netem)")
    lk.add_argument("--jitter", type=float, metavar="MS", help="vary the delay by up to this much (netem)")
    lk.add_argument("--loss", type=float, metavar="PCT", help="drop this percentage (netem, else an iptables random drop)")
    lk.add_argument("--rate", type=float, metavar="MBIT", help="limit to this many Mbit/s (tbf)")
    lk.add_argument("--cut", action="store_true", help="cut the link (as recover-underlay-outage does)")
    lk.add_argument("--for", dest="for_s", type=float, metavar="S", help="with --cut: restore it after S seconds")
    lk.add_argument("--clear", action="store_true", help="remove every impairment and restore a cut link")
    web = sub.add_parser("web", help="serve the TUI to browsers (each tab its own session on the lab)")
    web.add_argument("--lab", dest="web_lab", default=None, help="the lab (default: the global --lab)")
    web.add_argument("--tutorial", dest="web_tutorial", action="store_true", help="serve the tutorial")
    web.add_argument("--read-only", dest="web_read_only", action="store_true",
                     help="serve a view: no action, shell, fault or check (for a class watching)")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    web.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    return p


def print_status(status, console: Console, links: dict[str, str] | None = None) -> None:
    console.print(f"[bold]lab[/] {status.lab}  [bold]backend[/] {status.backend}  [bold]data path[/] {status.datapath}"
                  + (f"  [bold]VMs[/] {status.hypervisor}" if status.hypervisor else ""))
    t = Table(title="nodes", title_justify="left")
    for col in ("NAME", "IP", "POD CIDR", "STATE", "IPSEC", "PODS", "IPAM", *(["LINK"] if links is not None else [])):
        t.add_column(col)
    for n in status.nodes:
        t.add_row(n.name, n.ip, n.pod_cidr, n.state, n.ipsec_state, str(n.pods), f"{n.ipam_used}/253",
                  *([links.get(n.name, "?")] if links is not None else []))
    console.print(t)
    t = Table(title="tunnels (from strongSwan over vici)", title_justify="left")
    for col in ("NODE", "CONN", "PEER", "IKE", "CHILD", "BYTES IN", "BYTES OUT"):
        t.add_column(col)
    for tun in status.tunnels:
        colour = "green" if tun.up else "red"
        t.add_row(tun.node, tun.name, tun.peer, f"[{colour}]{tun.ike_state}[/]", f"[{colour}]{tun.child_state}[/]",
                  str(tun.bytes_in), str(tun.bytes_out))
    console.print(t)
    if status.pods:
        t = Table(title="pods (network namespaces, not a kubelet)", title_justify="left")
        for col in ("NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"):
            t.add_column(col)
        now = time.time()
        for p in status.pods:
            t.add_row(p.name, "1/1" if p.state == "Running" else "0/1", p.state, str(p.restarts),
                      f"{int(now - p.created)}s", p.ip or "<none>", p.node)
        console.print(t)
    for s in status.services:
        console.print(f"service {s.name}: {s.type} port {s.port} node port {s.node_port}")


def print_findings(findings: Sequence[preflight.Finding], console: Console) -> None:
    t = Table(title="what a new lab needs on this machine", title_justify="left")
    t.add_column("", no_wrap=True)
    t.add_column("KIND", no_wrap=True)
    for col in ("NAME", "DEBIAN PACKAGE", "WHERE"):  # folded, never cut: a reader copies them
        t.add_column(col, overflow="fold")
    for f in findings:
        mark = "[green]ok[/]" if f.ok else ("[yellow]absent[/]" if f.optional else "[red]missing[/]")
        t.add_row(mark, f.kind, f.name, f.package or "", f.detail)
    console.print(t)


def doctor(backend: Backend, *, install: bool) -> int:
    """All findings at once; with `install`, apt-get the missing packages and look again."""
    findings = backend.doctor()
    print_findings(findings, out)
    packages = preflight.packages_to_install(findings)
    if install and packages:
        out.print(f"installing: {' '.join(packages)}")
        code = preflight.install_packages(packages, lambda line: out.print(f"  {line}", style="dim", markup=False))
        if code != 0:
            raise LabError(f"apt-get install failed (exit {code}); the lines above say why")
        findings = backend.doctor()
        print_findings(findings, out)
    gaps = preflight.missing(findings)
    if gaps:
        hint = "`ipsec-lab doctor --install` installs them" if not install else "they are still missing"
        named = ", ".join(f"{f.name} ({f.package})" if f.package else f.name for f in gaps)
        err.print(f"ipsec-lab: {len(gaps)} missing: {named}; {hint}", markup=False)
        return ExitCode.USAGE
    out.print("everything a new lab needs is here")
    return ExitCode.OK


def box_command(action: str, *, force: bool) -> int:
    from .vm import box

    recipe = box.Recipe()
    if action == "path":
        path = box.cached(recipe)
        out.print(str(path) if path else f"not built yet (recipe {recipe.digest()}): `ipsec-lab box build`")
        return ExitCode.OK if path else ExitCode.CHECK_FAILED
    t0 = time.monotonic()
    report = box.build(recipe, lambda line: out.print(f"  {line}", style="dim", markup=False), force=force)
    if not report.built:
        out.print(f"box {box.BOX_NAME} is current: {report.box} (recipe {recipe.digest()}); --force builds it again")
        return ExitCode.OK
    steps = ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in report.seconds.items())
    out.print(f"box {box.BOX_NAME} built in {time.monotonic() - t0:.1f} s ({steps}): {report.box}")
    return ExitCode.OK


def fault_command(backend: Backend, args: argparse.Namespace) -> int:
    """tunnel-down, restart-ipsec, reboot: inject the fault under the same watch as the TUI's
    (tui/live/fault.py) and print what it measured: how long the tunnels were gone, the data plane's
    largest gap, the new IKE SA. Exit 1 when a tunnel left ESTABLISHED and did not come back."""
    node, cmd = args.node, args.command
    backend.spec().node(node)  # an unknown node is one line before anything runs
    status = backend.status()
    if cmd == "tunnel-down":
        conn = args.conn
        if status.tunnel(node, conn) is None:
            backend.tunnel_down(node, conn)  # says why the connection is unknown
            return ExitCode.CHECK_FAILED
        plan = FaultPlan.tunnel_down(status, node, conn)

        def inject() -> str:
            return f"{backend.tunnel_down(node, conn)} (the seed's `{seed_command(conn)}`)"
    elif cmd == "restart-ipsec":
        plan = FaultPlan.node_fault(status, node, f"restart IPsec on {node}")

        def inject() -> str:
            backend.restart_ipsec(node)
            return "charon restarted"
    else:
        plan = FaultPlan.node_fault(status, node, f"reboot {node}")

        def inject() -> str:
            backend.reboot(node)
            return f"{node} rebooted"
    report = run_fault(backend, plan, inject)
    for part in report.parts:
        out.print(part, markup=False)
    if report.new_sa:
        out.print(f"new IKE SA: {report.new_sa}", markup=False)
    left = report.watch is not None and report.watch.left_established
    return ExitCode.CHECK_FAILED if left and not report.watch.recovered else ExitCode.OK


def capture_command(backend: Backend, args: argparse.Namespace) -> int:
    """tcpdump on the node until --count, --duration or Ctrl+C; lines to stdout, or a pcap with -w
    (its lines then go to stderr, with one summary line at the end)."""
    from .live.capture import CaptureSession, describe

    if args.count is not None and args.count < 1 or args.duration is not None and args.duration <= 0:
        raise UsageError("--count and --duration must be positive")
    if args.write and backend.capture_file(args.node, "probe") is None:  # a backend that keeps no pcap
        raise UsageError(f"capture -w is not supported on {backend.name} nodes; without -w the decoded lines stream")
    dest = os.path.abspath(args.write) if args.write else None
    session = CaptureSession(backend, args.node, args.iface, args.bpf, args.count)
    session.start()
    timer = threading.Timer(args.duration, session.stop) if args.duration else None
    lines = sys.stderr if dest else sys.stdout
    err.print(f"capturing on {args.node} {session.iface} ({session.kind})"
              + (f" filter {args.bpf!r}" if args.bpf else "") + "; Ctrl+C stops", style="dim", markup=False)
    try:
        if timer:
            timer.start()
        for line in session.lines():
            lines.write(line + "\n")
            lines.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if timer:
            timer.cancel()
        session.stop()
        try:
            if dest:
                session.save(dest)
                summary = session.summary(backend.spec().pod_supernet)
                err.print(f"{describe(summary)}; wrote {dest}", markup=False)
        finally:
            session.close()
def link_command(backend: Backend, args: argparse.Namespace) -> int:
    """`link NODE [--delay MS] [--jitter MS] [--loss PCT] [--rate MBIT] | --cut [--for S] | --clear`."""
    from .lab.linkshape import Impairment
    from .live import link

    node = args.node
    shaping = [f"--{k}" for k in ("delay", "jitter", "loss", "rate") if getattr(args, k) is not None]
    if sum((bool(shaping), args.cut, args.clear)) > 1:
        raise UsageError("link: give --cut, --clear, or --delay/--jitter/--loss/--rate, one kind at a time")
    if args.for_s is not None and not args.cut:
        raise UsageError("link: --for S goes with --cut")
    imp = Impairment(args.delay, args.jitter, args.loss, args.rate)  # a bad value: one line, before anything
    backend.spec().node(node)
    if args.cut and args.for_s is not None:
        status = backend.status()
        plan = FaultPlan.node_fault(status, node, f"cut {node}'s underlay for {args.for_s:g} s")
        report = run_fault(backend, plan, lambda: link.cut(backend, node, args.for_s))
        for part in report.parts:
            out.print(part, markup=False)
        left = report.watch is not None and report.watch.left_established
        return ExitCode.CHECK_FAILED if left and not report.watch.recovered else ExitCode.OK
    if args.cut:
        out.print(link.cut(backend, node), markup=False)
        return ExitCode.OK
    state = link.clear(backend, node) if args.clear else (link.apply(backend, node, imp) if shaping else link.probe(backend, node))
    out.print(f"{node} {state.dev}: {state.describe() or 'no impairment'}", markup=False)
    return ExitCode.OK


def web_command(backend: Backend, args: argparse.Namespace) -> int:
    """Bring the lab up if it is not running (here, where its progress prints), then serve it."""
    from . import web  # noqa: PLC0415  (aiohttp and textual-serve only for this command)

    tutorial, read_only = args.web_tutorial or args.tutorial, args.web_read_only or args.read_only
    if tutorial and read_only:
        raise UsageError("--tutorial and --read-only: the tutorial acts on the lab, so it has no read-only view")
    web.check_ready(args.host, args.port)
    if not backend.exists():
        preflight.require(backend.doctor())
        nodes = node_count(args.nodes)
        out.print(f"no lab [bold]{args.lab}[/] is running: bringing one up ({nodes} nodes) before serving it")
        backend.up(LabSpec.build(args.lab, nodes, auth=args.auth or "psk"))
        if not tutorial:  # as the TUI does: the tutorial deploys in a step of its own
            backend.deploy(9)
    cfg = web.WebConfig(lab=args.lab, argv=web.session_argv(args.lab, backend.name, tutorial=tutorial,
                                                            read_only=read_only),
                        host=args.host, port=args.port, read_only=read_only)
    if not web.is_loopback(args.host):
        err.print(f"ipsec-lab web: WARNING: listening on {args.host}, not this machine only: anyone who can reach "
                  f"port {args.port} and has the token gets " + ("a view of the lab" if read_only else
                  "a root console (node shells, faults, the lab's stop)") + "; --read-only serves a view only",
                  markup=False)
    mode = "read-only view" if read_only else ("tutorial" if tutorial else "full console, as root")
    out.print(f"ipsec-lab web: lab [bold]{args.lab}[/] ({backend.name}), {mode}; each browser tab is its own session")
    out.print(f"  open [bold]{cfg.url()}[/]", soft_wrap=True)
    out.print("  Ctrl+C stops the server and every session it started; the lab keeps running "
              f"(`ipsec-lab --lab {args.lab} down` stops it).", style="dim")
    try:
        web.serve(cfg, say=lambda line: out.print(f"  {line}", style="dim", markup=False))
    except OSError as exc:  # the port is taken, the address is not this machine's
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; choose --host/--port")
    out.print(f"ipsec-lab web: stopped; lab {args.lab} is still running")
    return ExitCode.OK


def run_command(args: argparse.Namespace) -> int:
    reporter = Reporter(ConsoleSink(out, quiet=args.quiet))
    cmd = args.command
    if cmd == "box":  # no lab, no backend: the box is the machine's
        return box_command(args.action, force=args.force)
    if cmd == "labs":
        for lab in list_labs():
            out.print(lab)
        return ExitCode.OK
    if cmd == "web" and args.web_lab:
        args.lab = args.web_lab
    backend: Backend = get_backend(lab_backend_name(args.lab, args.backend), args.lab, reporter,
                          node_mode=args.kubernetes)

    if cmd == "doctor":
        return doctor(backend, install=args.install)
    if cmd == "up":
        nodes = node_count(args.up_nodes, args.nodes)
        spec = LabSpec.build(args.lab, nodes, args.underlay, args.pod_supernet, rekey_s=args.rekey_s,
                             auth=args.up_auth or args.auth or "psk")
        datapath = None if args.datapath == "auto" else args.datapath
        t0 = time.monotonic()
        try:
            status = backend.up(spec, datapath=datapath)
        except UsageError:
            raise
        except LabError as exc:
            raise LabError(f"lab {args.lab!r} could not be brought up: {exc}") from None
        if args.deploy:
            backend.deploy(args.deploy)
        out.print(f"lab [bold]{args.lab}[/] is up: {len(status.nodes)} nodes, {len(status.tunnels) // 2} tunnels, "
                  f"data path {status.datapath} ({time.monotonic() - t0:.2f} s)")
        return ExitCode.OK
    if cmd == "down":
        removed = backend.down()
        out.print(f"lab {args.lab}: " + ("removed" if removed else "nothing to remove"))
        return ExitCode.OK
    if cmd == "status":
        from .live.link import probe_all

        status = backend.status()
        rekey_s = backend.spec().rekey_s
        links = probe_all(backend, [n.name for n in status.nodes if n.state == "ready"])  # from the nodes themselves
        if args.json:
            doc = status.to_json() | ({"rekey_s": rekey_s} if rekey_s else {})
            for n in doc["nodes"]:
                n["link"] = links[n["name"]].to_json() if links.get(n["name"]) else None
            print(json.dumps(doc, indent=2))
        else:
            print_status(status, out, {n: s.describe() or "-" for n, s in links.items() if s})
            if rekey_s:
                out.print(f"short SA lifetimes (up --rekey-s {rekey_s}): CHILD SAs rekey every {rekey_s} s, "
                          f"IKE SAs every {4 * rekey_s} s")
        return ExitCode.OK
    if cmd == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise UsageError("exec needs a command: ipsec-lab exec NODE -- CMD...")
        backend.spec().node(args.node)
        # Through the backend (on VMs: the node's SSH connection), output as it comes.
        p = backend.stream(args.node, argv, stderr_to_parent=True)
        try:
            for line in p.lines():
                sys.stdout.write(line)
                sys.stdout.flush()
        finally:
            if p.poll() is None:  # interrupted: end it on the node too
                p.stop()
        return p.wait()
    if cmd == "ssh":
        backend.spec().node(args.node)
        shell = [
            "env", f"PS1=root@{args.node}:\\w# ", f"IPSEC_LAB_NODE={args.node}",
            "bash", "--norc", "--noprofile", "-i",
        ]
        full = backend.node_argv(args.node, shell, interactive=True)
        err.print(f"shell on {args.node} (lab {args.lab}); exit to return", style="dim")
        os.execvp(full[0], full)
    if cmd == "deploy":
        pods = backend.deploy(args.replicas)
        out.print(f"deployment kubernetes-bootcamp: {len(pods)} pods")
        return ExitCode.OK
    if cmd == "delete-pod":
        pod = backend.delete_pod(args.pod)
        out.print(f"pod {args.pod} deleted; replaced by {pod.name} on {pod.node} ({pod.ip})")
        return ExitCode.OK
    if cmd == "expose":
        svc = backend.expose(args.node_port)
        out.print(f'service "{svc.name}" exposed: NodePort {svc.node_port} on every node')
        return ExitCode.OK
    if cmd in ("tunnel-down", "restart-ipsec", "reboot"):
        return fault_command(backend, args)
    if cmd == "web":
        return web_command(backend, args)
    if cmd == "rekey":
        from .live.rekey import rekey_now

        report = rekey_now(backend, args.node, args.conn, ike=args.ike)
        for part in report.parts:
            out.print(part, markup=False)
        return ExitCode.OK if report.rekeyed and report.lost == 0 and report.gap is not None else ExitCode.CHECK_FAILED
    if cmd == "capture":
        return capture_command(backend, args)
    if cmd == "link":
        return link_command(backend, args)
    if cmd == "tunnel-up":
        backend.tunnel_up(args.node, args.conn)
        return ExitCode.OK
    raise UsageError(f"unknown command {cmd!r}")


def main(argv: Sequence[str] | None = None, run_tui: Callable[[argparse.Namespace], int] | None = None) -> int:
    """Parse and run one command. `run_tui` opens the TUI; the entry point (tui/__main__.py)
    passes it in, so this module, like the rest of the headless core, never imports Textual."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.list_checks or args.run_checks:
            from .checks.runner import main_checks

            return main_checks(args)
        if args.command is None:
            if run_tui is None:
                raise UsageError("the TUI is not available here; give a command (see `ipsec-lab --help`)")
            return run_tui(args)
        return run_command(args)
    except UsageError as exc:
        err.print(f"ipsec-lab: {exc}", markup=False)
        return ExitCode.USAGE
    except LabError as exc:
        err.print(f"ipsec-lab: {exc}", markup=False)
        return ExitCode.LAB_UNAVAILABLE
    except KeyboardInterrupt:
        err.print("ipsec-lab: interrupted", markup=False)
        return 130
