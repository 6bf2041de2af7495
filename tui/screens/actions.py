"""What the keys and the palette do: the app's actions over the lab (nodes, tunnels, pods, checks,
the tutorial). A mixin of IpsecLabApp, kept apart from its composition, state and message handlers.

An action asks first where it is destructive, then runs the backend call on an action worker
(one at a time); the worker reports by messages (tui/messages.py), never by setting app state.
"""

from __future__ import annotations

import subprocess
from functools import partial
from typing import TYPE_CHECKING, Callable

from textual import work
from textual.app import SuspendNotSupported

from ..lab.events import Reporter
from ..lab.probes import http_get_many
from ..lab.status import LabStatus
from ..live.fault import FaultPlan, run_fault
from ..live.text import seed_command, take_down_command
from ..messages import ActionDone, CheckDone, CurlReplied, FaultChanged, StatusUpdated, TutorialChanged
from ..tutorial import controller as tutorial_control
from .dialogs import ChoiceScreen, ConfirmScreen, PromptScreen
from .link import LINK_ACTIONS

if TYPE_CHECKING:
    from ..app import IpsecLabApp

    _Base = IpsecLabApp
else:
    _Base = object

SHELL = ["bash", "--norc", "--noprofile", "-i"]


class LabActions(_Base):
    """action_* of the lab; `self` is the IpsecLabApp."""

    def refuse_if_read_only(self, what: str) -> bool:
        """True (and a notice) in a read-only view: the last guard behind check_action, for the paths
        that call an action directly (a row selected, a button)."""
        if self.read_only:
            self.notify(f"read-only view: cannot {what}", severity="warning")
        return self.read_only

    def _node(self, node: str | None) -> str | None:
        screen = self.active_lab_screen()
        node = node or (screen.selected_node if screen else None)
        return node or (self.status.nodes[0].name if self.status and self.status.nodes else None)

    def _tunnel(self, node: str | None, conn: str | None) -> tuple[str, str] | None:
        if node and conn:
            return node, conn
        screen = self.active_lab_screen()
        if screen is not None and screen.selected_tunnel:
            return screen.selected_tunnel
        if self.status and self.status.tunnels:
            t = self.status.tunnels[0]
            return t.node, t.name
        return None

    def _pod(self, pod: str | None) -> str | None:
        screen = self.active_lab_screen()
        return pod or (screen.selected_pod if screen else None)

    def _need_lab(self) -> bool:
        if self.status is None:
            self.notify("no lab status yet; wait for the lab to come up", severity="warning")
            return False
        return True

    def start_action(self, title: str, fn: Callable[[], str]) -> None:
        """Run `fn` (blocking, in a thread); its return value is the one-line outcome."""
        if self.refuse_if_read_only(title):
            return
        if self.busy:
            self.notify(f"busy: {self.busy}; wait until it finishes", severity="warning")
            return
        self.busy = title
        self._action_worker(title, fn)

    @work(thread=True, exclusive=True, group="action", exit_on_error=False, name="action")
    def _action_worker(self, title: str, fn: Callable[[], str]) -> str:
        self.log_line("actions", f"▶ {title}")
        try:
            outcome = fn()
        except Exception as exc:
            self.log_line("actions", f"✗ {title}: {exc}", stream="stderr")
            self.post_message(ActionDone(title, False, str(exc)))
            raise
        self.log_line("actions", f"✓ {title}: {outcome}")
        self.post_message(ActionDone(title, True, outcome))
        return outcome

    def confirm(self, title: str, body: str, then: Callable[[], None], *, confirm: str = "Do it",
                command: str | None = None) -> None:
        if self.refuse_if_read_only(title.rstrip("?").lower()):
            return

        def done(ok: bool | None) -> None:
            if ok:
                then()
        self.push_screen(ConfirmScreen(title, body, confirm, command=command), done)

    def _fault(self, plan: FaultPlan, inject: Callable[[], str]) -> str:
        """Runs on an action worker: the fault watch of tui/live/fault.py, reported by messages."""
        # Shown in the events list until the summary replaces it: the gap is too short to see live.
        self.post_message(FaultChanged(f"{plan.label}: under way; watching strongSwan and pinging across the pair "
                                       "(about 3 s)"))

        def on_status(st: LabStatus) -> None:
            now = self.clock()
            self.reach.observe_status(st, now, source="watch")
            self.post_message(StatusUpdated(st, now))

        report = run_fault(self.backend, plan, inject, on_status=on_status, stop=self._stop)
        report.record(self.reach)
        self.post_message(FaultChanged(report.summary))
        return report.summary

    def action_reboot_node(self, node: str | None = None) -> None:
        node = self._node(node)
        if not node or not self._need_lab():
            return
        self.confirm(f"Reboot {node}?",
                     f"{node} powers off: charon, the pod server and every process in it stop, its namespace and "
                     f"/run (host-local's IPAM data) are wiped, its pods lose their addresses. Then it boots again "
                     f"and its tunnels come back by themselves.",
                     lambda: self.start_action(f"reboot {node}", partial(self._do_reboot, node)), confirm="Reboot")

    def _do_reboot(self, node: str) -> str:
        assert self.status is not None
        return self._fault(FaultPlan.node_fault(self.status, node, f"reboot {node}"),
                           lambda: (self.backend.reboot(node), f"{node} rebooted")[1])

    def action_restart_ipsec(self, node: str | None = None) -> None:
        node = self._node(node)
        if not node or not self._need_lab():
            return
        self.confirm(f"Restart IPsec on {node}?",
                     f"charon on {node} stops (its SAs go) and starts again; the mesh re-establishes by itself.",
                     lambda: self.start_action(f"restart IPsec on {node}", partial(self._do_restart, node)),
                     confirm="Restart", command=f"on {node}: stop charon, wait for it to exit, start it")

    def _do_restart(self, node: str) -> str:
        assert self.status is not None
        return self._fault(FaultPlan.node_fault(self.status, node, f"restart IPsec on {node}"),
                           lambda: (self.backend.restart_ipsec(node), "charon restarted")[1])

    def action_shell(self, node: str | None = None) -> None:
        if self.refuse_if_read_only("open a shell"):
            return
        node = self._node(node)
        if not node:
            return
        argv = self.backend.node_argv(node, ["env", f"PS1=root@{node}:\\w# ", f"IPSEC_LAB_NODE={node}", *SHELL],
                                      interactive=True)
        self.log_line("actions", f"shell on {node}: {' '.join(argv)}", node=node)
        try:
            with self.suspend():
                print(f"\nshell on {node} (lab {self.lab_name}); `exit` returns to ipsec-lab\n", flush=True)
                subprocess.run(argv)
        except SuspendNotSupported:
            self.notify("this terminal cannot suspend the app; use `ipsec-lab --lab "
                        f"{self.lab_name} ssh {node}` in another terminal", severity="error")
            return
        self.log_line("actions", f"back from the shell on {node}", node=node)
        self.refresh_now()

    def action_tunnel_down(self, node: str | None = None, conn: str | None = None) -> None:
        sel = self._tunnel(node, conn)
        if sel is None or not self._need_lab():
            return
        node, conn = sel
        self.confirm(f"Take {conn} down on {node}?",
                     f"Runs on {node} the command below, the seed's `{seed_command(conn)}`. strongSwan "
                     f"(close_action = start on the peer) brings the tunnel back by itself; the app watches it "
                     f"leave ESTABLISHED and come back, and measures the gap.",
                     lambda: self.start_action(f"take {conn} down on {node}", partial(self._do_tunnel_down, node, conn)),
                     confirm="Take down", command=f"{node}# {take_down_command(conn)}    (the seed's `{seed_command(conn)}`)")

    def _do_tunnel_down(self, node: str, conn: str) -> str:
        assert self.status is not None
        self.log_line("actions", f"{node}# {take_down_command(conn)}   (the seed's `{seed_command(conn)}`)", node=node)
        return self._fault(FaultPlan.tunnel_down(self.status, node, conn), lambda: self.backend.tunnel_down(node, conn))

    def action_tunnel_up(self, node: str | None = None, conn: str | None = None) -> None:
        sel = self._tunnel(node, conn)
        if sel is None or not self._need_lab():
            return
        node, conn = sel
        self.start_action(f"bring {conn} up on {node}", lambda: f"{node}# {self.backend.tunnel_up(node, conn)}")

    def action_rekey_tunnel(self, node: str | None = None, conn: str | None = None) -> None:
        sel = self._tunnel(node, conn)
        if sel is None or not self._need_lab():
            return
        node, conn = sel
        self.start_action(f"rekey {conn} on {node}", partial(self._do_rekey, node, conn))

    def _do_rekey(self, node: str, conn: str) -> str:
        """Runs on an action worker: tui/live/rekey.py's rekey under a 10 ms ping, its statuses posted."""
        from ..live.rekey import rekey_now

        self.log_line("actions", f"{node}# swanctl --rekey --child {conn}", node=node)
        self.post_message(FaultChanged(f"{node} {conn}: rekeying the CHILD SA; pinging across the pair every 10 ms"))

        def on_status(st: LabStatus) -> None:
            self.post_message(StatusUpdated(st, self.clock()))

        report = rekey_now(self.backend, node, conn, on_status=on_status)
        self.rekeys.measured(report, self.clock())
        self.post_message(FaultChanged(report.summary))
        return report.summary

    def action_scale(self, replicas: int | None = None) -> None:
        if not self._need_lab():
            return
        if replicas is not None:
            self._scale(replicas)
            return
        current = len(self.status.pods) if self.status else 0

        def done(value: str | None) -> None:
            if value is None:
                return
            if not value.isdigit() or int(value) > 250:
                self.notify(f"replicas must be a whole number 0-250, not {value!r}", severity="error")
                return
            self._scale(int(value))
        self.push_screen(PromptScreen("Deploy / scale kubernetes-bootcamp",
                                      f"Replicas (now {current}); pods spread evenly over the nodes:",
                                      str(current or self.deploy_replicas or 9), restrict=r"[0-9]*"), done)

    def _scale(self, n: int) -> None:
        self.start_action(f"scale kubernetes-bootcamp to {n}",
                          lambda: f"deployment kubernetes-bootcamp: {len(self.backend.deploy(n))} pods")

    def action_delete_pod(self, pod: str | None = None) -> None:
        pod = self._pod(pod)
        if not pod or not self._need_lab():
            self.notify("select a pod first", severity="warning")
            return
        p = next((x for x in self.status.pods if x.name == pod), None) if self.status else None
        where = f" on {p.node} ({p.ip})" if p else ""
        self.confirm(f"Delete pod {pod}?",
                     f"The pod{where} is deleted (CNI DEL frees its address); the deployment replaces it with a new "
                     f"pod whose address host-local hands out next.",
                     lambda: self.start_action(f"delete pod {pod}", partial(self._do_delete, pod)), confirm="Delete")

    def _do_delete(self, pod: str) -> str:
        new = self.backend.delete_pod(pod)
        return f"pod {pod} deleted; replaced by {new.name} on {new.node} ({new.ip})"

    def action_expose(self, node_port: int | None = None) -> None:
        if not self._need_lab():
            return

        def done(value: str | None) -> None:
            if value is None:
                return
            port = int(value) if value.strip() else None

            def run() -> str:
                s = self.backend.expose(port)
                return f'service "{s.name}" exposed: NodePort {s.node_port} on every node'
            self.start_action("expose kubernetes-bootcamp", run)
        if node_port is not None:
            done(str(node_port))
            return
        self.push_screen(PromptScreen("Expose kubernetes-bootcamp (kubectl expose --type=NodePort)",
                                      "Node port 30000-32767 (empty: random, the seed got 31990):", "",
                                      placeholder="random", restrict=r"[0-9]*"), done)

    def action_curl_pod(self, pod: str | None = None, node: str | None = None) -> None:
        pod = self._pod(pod)
        if not pod or not self._need_lab():
            self.notify("select a pod first", severity="warning")
            return
        if node:
            self._curl(pod, node)
            return
        nodes = [(n.name, f"from {n.name}") for n in self.status.nodes] if self.status else []
        self.push_screen(ChoiceScreen(f"curl {pod}", "From which node?", nodes),
                         lambda choice: self._curl(pod, choice) if choice else None)

    def _curl(self, pod: str, node: str) -> None:
        p = next((x for x in self.status.pods if x.name == pod), None) if self.status else None
        if p is None or not p.ip:
            self.notify(f"pod {pod} has no address right now", severity="error")
            return
        url = f"http://{p.ip}:8080"

        def run() -> str:
            reply = http_get_many(self.backend, node, [url])[0]
            self.post_message(CurlReplied(node, url, reply.code, reply.body))
            if reply.code == 0:
                raise RuntimeError(f"curl {url} from {node}: no answer")
            return f"{node}$ curl {url} → {reply.code} {reply.body}"
        self.start_action(f"curl {url} from {node}", run)

    def action_run_checks(self, name: str | None = None) -> None:
        if self.refuse_if_read_only("run checks"):
            return
        catalog, why = self.load_catalog()
        if catalog is None:
            self.show_error("check suite not available", why)
            return
        if self.busy:
            self.notify(f"busy: {self.busy}; wait until it finishes", severity="warning")
            return
        chosen = [c for c in catalog if name is None or c.name == name]
        disruptive = [c.name for c in chosen if c.disruptive]

        def go() -> None:
            self.checks_pending = {c.name for c in chosen}
            self.check_results = {k: v for k, v in self.check_results.items() if k not in self.checks_pending}
            self.checks_running = True
            self.busy = f"checks ({len(chosen)})"
            if self.current_mode != "checks":
                self.switch_mode("checks")
            self._checks_worker([name] if name else None)

        if disruptive:
            self.confirm("Run disruptive checks?",
                         f"{len(disruptive)} of these checks inject faults ({', '.join(disruptive[:4])}"
                         f"{', …' if len(disruptive) > 4 else ''}); the lab recovers by itself.", go, confirm="Run")
        else:
            go()

    @work(thread=True, exclusive=True, group="checks", exit_on_error=False, name="check suite")
    def _checks_worker(self, names: list[str] | None) -> None:
        from ..checks.runner import run_checks  # noqa: PLC0415

        run_checks = self.check_runner or run_checks
        reporter = Reporter(lambda e: self.logs.add_event(e, default_source="checks"), source="checks")
        try:
            run_checks(self.backend, names, reporter=reporter, on_result=lambda r: self.post_message(CheckDone(r)))
        finally:
            self.post_message(CheckDone(None))

    def _tutorial_ready(self) -> bool:  # a read-only app has no tutorial (IpsecLabApp refuses both)
        if self.tutorial is not None and self.tutorial_busy:
            self.notify(f"busy: {self.tutorial_busy}", severity="warning")
        return self.tutorial is not None and not self.tutorial_busy

    def action_tutorial_do(self, do_it: bool = True) -> None:
        if self._tutorial_ready():
            self.tutorial_busy = tutorial_control.busy_text(self.tutorial, do_it)
            self._tutorial_worker(do_it)

    def action_tutorial_check(self) -> None:
        self.action_tutorial_do(False)

    @work(thread=True, exclusive=True, group="tutorial", exit_on_error=False, name="tutorial step")
    def _tutorial_worker(self, do_it: bool) -> None:
        reporter = Reporter(lambda e: self.logs.add_event(e, default_source="tutorial"), source="tutorial")
        tutorial_control.run_step(self.tutorial, do_it, reporter,
                                  lambda text, stream: self.log_line("tutorial", text, stream=stream),
                                  lambda busy: self.post_message(TutorialChanged(busy)))

    def action_tutorial_move(self, how: str) -> None:
        if self._tutorial_ready():
            refused = tutorial_control.move(self.tutorial, how)
            if refused:
                self.notify(refused, severity="warning")
            self.tutorial_version += 1

    def action_tutorial_next(self) -> None:
        self.action_tutorial_move("next")

    def action_tutorial_back(self) -> None:
        self.action_tutorial_move("back")

    def action_tutorial_skip(self) -> None:
        self.action_tutorial_move("skip")

    def action_tutorial_restart(self) -> None:
        if self.tutorial is not None:
            self.confirm("Restart the tutorial?", "Your progress on this lab is forgotten; the lab itself stays as it is.",
                         lambda: self.action_tutorial_move("restart"), confirm="Restart")


# Every action of this mixin acts on the lab or a node (a fault, a shell, a pod, a check, the
# tutorial), and so do the app's own bring_up and stop_lab: a read-only view offers none of them.
# Derived, so that a new action is read-only-safe by default: it is hidden until it is proven harmless.
CHANGES_THE_LAB = frozenset(
    {name.removeprefix("action_") for name in vars(LabActions) if name.startswith("action_")} | {"bring_up", "stop_lab"}
    | LINK_ACTIONS
)
