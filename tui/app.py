"""The Textual app: five modes over one lab, every action a key (and a palette entry) away.

Threads never touch widgets: the status poller, the pinger, the charon tails and the action
workers post messages (or append to the thread-safe LogStore / Reachability), and the UI thread
renders the active screen from the latest LabStatus.
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import subprocess
import threading
import time
from functools import partial
from typing import Callable

from rich.text import Text
from textual import work
from textual.app import App, SuspendNotSupported
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.worker import Worker, WorkerState, get_current_worker

from .backends.base import Backend
from .lab import resources
from .lab.events import Event, Reporter
from .lab.model import LabSpec
from .lab.probes import http_get_many
from .lab.status import LabStatus
from .live import (FileTail, LogStore, ProgressCounter, Reachability, bringup_steps, fmt_gap, pair_of, ping_gap,
                   probe_pairs, watch_tunnels)
from .screens.base import LabScreen
from .screens.checks import ChecksScreen, load_catalog
from .screens.commands import LabCommands
from .screens.dialogs import ChoiceScreen, ConfirmScreen, ErrorScreen, HelpScreen, PromptScreen, QuitScreen, ReplyScreen
from .screens.lesson import LessonPanel
from .screens.logs import LogsScreen
from .screens.nodes import NodesScreen
from .screens.pods import PodsScreen
from .screens.tunnels import TunnelsScreen, seed_command, take_down_command

ASSETS = resources.assets_dir()
MAX_PING_NODES = 8  # above this the timeline comes from tunnel states only (pings would cost N^2 a second)
SHELL = ["bash", "--norc", "--noprofile", "-i"]


class StatusUpdated(Message):
    def __init__(self, status: LabStatus, at: float) -> None:
        super().__init__()
        self.status, self.at = status, at


class StatusFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class ActionDone(Message):
    def __init__(self, title: str, ok: bool, message: str) -> None:
        super().__init__()
        self.title, self.ok, self.message = title, ok, message


class LabReady(Message):
    def __init__(self, created: bool) -> None:
        super().__init__()
        self.created = created


class TutorialChanged(Message):
    """The tutorial's step, output or check results changed."""


class CheckDone(Message):
    def __init__(self, result) -> None:
        super().__init__()
        self.result = result


class IpsecLabApp(App[str]):
    """ipsec-lab's TUI. `exit()` returns "stop" when the user chose to stop the lab, else "leave"."""

    TITLE = "ipsec-lab"
    CSS_PATH = str(resources.app_css())
    MODES = {
        "nodes": NodesScreen,
        "tunnels": TunnelsScreen,
        "pods": PodsScreen,
        "logs": LogsScreen,
        "checks": ChecksScreen,
    }
    DEFAULT_MODE = "nodes"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    COMMANDS = App.COMMANDS | {LabCommands}
    BINDINGS = [
        Binding("1", "switch_mode('nodes')", "Nodes", id="mode.nodes", tooltip="Nodes: state, IPsec daemon, pods, IPAM"),
        Binding("2", "switch_mode('tunnels')", "Tunnels", id="mode.tunnels",
                tooltip="Tunnels: the mesh matrix, SA details, reachability timeline"),
        Binding("3", "switch_mode('pods')", "Pods", id="mode.pods", tooltip="Pods: kubectl get pods -o wide"),
        Binding("4", "switch_mode('logs')", "Logs", id="mode.logs",
                tooltip="Logs: provisioning, charon per node, actions, checks"),
        Binding("5", "switch_mode('checks')", "Checks", id="mode.checks", tooltip="Checks: run the check suite"),
        Binding("question_mark", "help", "Help", id="app.help", tooltip="What this screen shows and its keys"),
        Binding("q", "request_quit", "Quit", id="app.quit",
                tooltip="Quit: leave the lab running (default) or stop it"),
        Binding("ctrl+q", "quit", "Quit now", show=False, priority=True, id="app.quit_now",
                tooltip="Quit at once; the lab keeps running"),
        # Tutorial mode only (check_action hides them otherwise); function keys, so that no
        # screen's own keys shadow them.
        Binding("f5", "tutorial_do", "Do it", priority=True, id="tutorial.do",
                tooltip="Tutorial: run this step for real, then its checks"),
        Binding("f6", "tutorial_check", "Check", priority=True, id="tutorial.check",
                tooltip="Tutorial: run this step's checks again"),
        Binding("f7", "tutorial_back", "Back", priority=True, id="tutorial.back", tooltip="Tutorial: the previous step"),
        Binding("f8", "tutorial_next", "Next", priority=True, id="tutorial.next",
                tooltip="Tutorial: the next step, once this one's checks passed"),
        Binding("f9", "tutorial_skip", "Skip", priority=True, id="tutorial.skip",
                tooltip="Tutorial: move on without passing the checks"),
    ]

    def __init__(
        self,
        backend: Backend,
        *,
        nodes: int = 3,
        bring_up: bool = True,
        deploy_replicas: int = 9,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.5,
        live_probes: bool = True,
        tail_logs: bool = True,
        initial_mode: str | None = None,
        initial_status: LabStatus | None = None,
        catalog_loader: Callable[[], tuple[list | None, str]] = load_catalog,
        tutorial=None,
    ) -> None:
        super().__init__()
        self.tutorial = tutorial  # a tui.tutorial.session.TutorialSession in tutorial mode
        self.tutorial_busy = ""
        self.backend = backend
        self.lab_name = backend.lab
        self.nodes_wanted = nodes
        self.bring_up = bring_up
        self.deploy_replicas = deploy_replicas
        self.clock = clock
        self.poll_interval = poll_interval
        self.live_probes = live_probes
        self.tail_logs = tail_logs
        self.initial_mode = initial_mode
        self.load_catalog = catalog_loader
        self.logs = LogStore()
        self.reach = Reachability(clock)
        self.status: LabStatus | None = None
        self.status_at: float = 0.0
        self.status_error = ""
        self.phase_text = "starting"
        self.progress: ProgressCounter | None = None
        self.event_source = "provisioning"
        self.busy: str | None = None
        self.last_fault = ""
        self.lab_created = False  # this app brought the lab up
        self.lab_ready = False
        self.selected_node: str | None = None
        self.selected_tunnel: tuple[str, str] | None = None
        self.selected_pod: str | None = None
        self.check_results: dict = {}
        self.checks_running = False
        self.checks_pending: set[str] = set()
        self.render_ms: float = 0.0  # cost of the last render of the active screen
        self.first_all_up_at: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._started_at = time.monotonic()
        backend.reporter = Reporter(self._on_lab_event, source="provisioning")
        if initial_status is not None:
            self.status, self.status_at = initial_status, clock()
            self.reach.observe_status(initial_status, clock())
            self.lab_ready = True

    # ------------------------------------------------------------------ lifecycle
    def on_mount(self) -> None:
        # Everything built so far (Textual, rich, the screens) lives as long as the app: keep it out of
        # the cyclic GC, whose full collections otherwise cost ~40 ms of a frame with 20 nodes.
        gc.freeze()
        self._set_subtitle()
        if self.initial_mode and self.initial_mode != self.DEFAULT_MODE:
            self.switch_mode(self.initial_mode)
        self.set_interval(1.0, self._tick)
        if self.status is not None and not self.bring_up:
            self._render_active()
        if self.bring_up:
            self.start_lab()
        elif self.status is None and self.backend.exists():
            self._start_live()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()

    def _set_subtitle(self) -> None:
        dp = self.status.datapath if self.status else "…"
        self.sub_title = f"lab {self.lab_name} · backend {self.backend.name} · data path {dp}"

    def _on_lab_event(self, event: Event) -> None:
        """The backend's reporter sink; runs on whatever thread the backend runs on."""
        self.logs.add_event(event, default_source=self.event_source)
        if self.progress is not None and self.event_source == "provisioning":
            self.progress.feed(event)

    def log_line(self, source: str, text: str, node: str | None = None, stream: str = "stdout") -> None:
        self.logs.add(source, text, node=node, stream=stream)

    @work(thread=True, exclusive=True, group="lifecycle", exit_on_error=False, name="bring the lab up")
    def start_lab(self) -> None:
        b = self.backend
        if b.exists():
            self.phase_text = "attaching"
            self.log_line("app", f"attaching to lab {self.lab_name} (backend {b.name}); it is already running")
            self.post_message(LabReady(created=False))
            return
        self.phase_text = f"bringing lab {self.lab_name} up ({self.nodes_wanted} nodes)…"
        self.progress = ProgressCounter(bringup_steps(self.nodes_wanted) + (1 if self.deploy_replicas else 0))
        self.call_from_thread(self.switch_mode, "logs")
        self.log_line("app", f"no lab {self.lab_name!r} is running: bringing one up with {self.nodes_wanted} nodes")
        self.event_source = "provisioning"
        b.reporter.source = "provisioning"
        try:
            spec = LabSpec.build(self.lab_name, self.nodes_wanted)
            b.up(spec)
            self.lab_created = True
            if self.deploy_replicas:
                b.deploy(self.deploy_replicas)
        except Exception:
            if self.progress is not None:
                self.progress.failed = True
            self.phase_text = "bring-up failed (see Logs); the palette offers 'Bring the lab up' to retry"
            raise
        finally:
            self.event_source = "actions"
            b.reporter.source = "actions"
        self.post_message(LabReady(created=True))

    def on_lab_ready(self, message: LabReady) -> None:
        self.lab_ready = True
        self.event_source = "actions"
        self.backend.reporter.source = "actions"
        self.phase_text = "waiting for the first status"
        if message.created:
            self.log_line("app", f"lab {self.lab_name} is up")
            self.notify(f"lab {self.lab_name} is up", title="ipsec-lab")
            if self.current_mode == "logs":
                self.switch_mode("tunnels")
        self._start_live()

    def _start_live(self) -> None:
        self.lab_ready = True
        self.poll_status()
        if self.live_probes:
            self.ping_pairs()
        if self.tail_logs and hasattr(self.backend, "paths"):
            self.tail_charon()

    # ------------------------------------------------------------------ background workers
    @work(thread=True, exclusive=True, group="status", exit_on_error=False, name="status poller")
    def poll_status(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stop.is_set():
            t0 = time.monotonic()
            try:
                st = self.backend.status()
                now = self.clock()
                self.reach.observe_status(st, now)
                self.post_message(StatusUpdated(st, now))
            except Exception as exc:  # the lab went away under us, or a node is mid-reboot
                self.post_message(StatusFailed(str(exc)))
            self._wake.wait(max(0.05, self.poll_interval - (time.monotonic() - t0)))
            self._wake.clear()

    def refresh_now(self) -> None:
        self._wake.set()

    @work(thread=True, exclusive=True, group="probes", exit_on_error=False, name="pinger")
    def ping_pairs(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stop.is_set():
            t0 = time.monotonic()
            st = self.status
            if st is not None and 2 <= len(st.nodes) <= MAX_PING_NODES:
                nodes = [(n.name, cni0_of(n.pod_cidr)) for n in st.nodes if n.state == "ready"]
                for pair, up in probe_pairs(self.backend, nodes).items():
                    self.reach.observe(pair, up, source="ping", why="no ping reply between the cni0 addresses")
            self._stop.wait(max(0.2, 1.0 - (time.monotonic() - t0)))

    @work(thread=True, exclusive=True, group="tails", exit_on_error=False, name="charon log tails")
    def tail_charon(self) -> None:
        worker = get_current_worker()
        tails: dict[str, FileTail] = {}
        while not worker.is_cancelled and not self._stop.is_set():
            st = self.status
            if st is not None:
                for n in st.nodes:
                    if n.name not in tails:
                        tails[n.name] = FileTail(self.backend.paths.charon_log(n.name), from_end_lines=20)  # type: ignore[attr-defined]
                    for line in tails[n.name].poll():
                        if line:
                            self.logs.add("charon", line, node=n.name)
            self._stop.wait(0.3)

    # ------------------------------------------------------------------ status → screens
    def on_status_updated(self, message: StatusUpdated) -> None:
        first = self.status is None
        self.status, self.status_at, self.status_error = message.status, message.at, ""
        if first or self.status.datapath not in self.sub_title:
            self._set_subtitle()
        if self.first_all_up_at is None and self.status.all_tunnels_up:
            self.first_all_up_at = time.monotonic()
        self._render_active()

    def on_status_failed(self, message: StatusFailed) -> None:
        if message.error != self.status_error:
            self.status_error = message.error
            self.log_line("app", f"status: {message.error}", stream="stderr")
        self.phase_text = f"status unavailable: {message.error}"

    def active_lab_screen(self) -> LabScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, LabScreen):
                return screen
        return None

    def _paint(self, paint: Callable[[LabScreen], object]) -> bool:
        """Run `paint` on the active lab screen, if that screen can be painted now.

        Status and check messages queued by threads still arrive while a screen composes (after a
        mode switch) or is torn down (the app exiting: seen once in CI). Its widgets are missing
        then (NoMatches); the next message paints it again."""
        screen = self.active_lab_screen()
        if screen is None or not screen.is_mounted or not screen.is_attached:
            return False
        try:
            paint(screen)
        except NoMatches:
            return False
        return True

    def _render_active(self) -> None:
        t0 = time.perf_counter()
        if self._paint(self._show_status):
            self.render_ms = (time.perf_counter() - t0) * 1000

    def _show_status(self, screen: LabScreen) -> None:
        if self.status is not None:
            screen.show_status(self.status)
        screen.refresh_bar()

    def _tick(self) -> None:
        self._paint(self._tick_screen)

    def _tick_screen(self, screen: LabScreen) -> None:
        screen.refresh_bar()
        if isinstance(screen, TunnelsScreen) and self.status is not None:
            screen.render_panels(self.status)

    def status_age_text(self) -> str:
        if not self.status_at:
            return "never"
        return f"{max(0.0, self.clock() - self.status_at):.1f} s ago"

    # ------------------------------------------------------------------ selections
    def _node(self, node: str | None) -> str | None:
        if node:
            return node
        screen = self.active_lab_screen()
        if isinstance(screen, NodesScreen) and screen.selected_node:
            return screen.selected_node
        if isinstance(screen, TunnelsScreen) and self.selected_tunnel:
            return self.selected_tunnel[0]
        if self.selected_node:
            return self.selected_node
        return self.status.nodes[0].name if self.status and self.status.nodes else None

    def _tunnel(self, node: str | None, conn: str | None) -> tuple[str, str] | None:
        if node and conn:
            return node, conn
        if self.selected_tunnel:
            return self.selected_tunnel
        if self.status and self.status.tunnels:
            t = self.status.tunnels[0]
            return t.node, t.name
        return None

    def _pod(self, pod: str | None) -> str | None:
        if pod:
            return pod
        screen = self.active_lab_screen()
        if isinstance(screen, PodsScreen) and screen.selected_pod:
            return screen.selected_pod
        return self.selected_pod

    def _need_lab(self) -> bool:
        if self.status is None:
            self.notify("no lab status yet; wait for the lab to come up", severity="warning")
            return False
        return True

    # ------------------------------------------------------------------ running actions
    def start_action(self, title: str, fn: Callable[[], str]) -> None:
        """Run `fn` (blocking, in a thread); its return value is the one-line outcome."""
        if self.busy:
            self.notify(f"busy: {self.busy}; wait until it finishes", severity="warning")
            return
        self.busy = title
        self._render_active()
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

    def on_action_done(self, message: ActionDone) -> None:
        self.busy = None
        self.refresh_now()
        if message.ok:
            self.notify(message.message, title=message.title, timeout=8)
        self._render_active()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            err = worker.error
            what = worker.name or "a background task"
            text = str(err) or type(err).__name__
            self.log_line("app", f"{what} failed: {text}", stream="stderr")
            if worker.group == "checks":
                self.checks_running = False
                self.busy = None
            self.show_error(f"{what} failed", text)

    def show_error(self, title: str, message: str) -> None:
        self.push_screen(ErrorScreen(title, message))

    def confirm(self, title: str, body: str, then: Callable[[], None], *, confirm: str = "Do it",
                command: str | None = None) -> None:
        def done(ok: bool | None) -> None:
            if ok:
                then()
        self.push_screen(ConfirmScreen(title, body, confirm, command=command), done)

    # -- fault watch: poll strongSwan every few ms and ping across while a fault runs ---------------
    def _watch_fault(self, ends: list[tuple[str, str]], ping_from: str | None, ping_to: str | None,
                     pair: tuple[str, str] | None, inject: Callable[[], str], label: str) -> str:
        results: dict = {}
        started, injected = threading.Event(), threading.Event()
        # Shown in the events list until the summary replaces it: the gap is too short to see live.
        self.last_fault = f"{label}: under way; watching strongSwan and pinging across the pair (about 3 s)"

        def on_status(st: LabStatus) -> None:
            now = self.clock()
            self.reach.observe_status(st, now, source="watch")
            self.post_message(StatusUpdated(st, now))

        def watcher() -> None:
            results["watch"] = watch_tunnels(self.backend, ends, until=time.monotonic() + 90, on_status=on_status,
                                             started=started, stop=self._stop, injected=injected)

        def pinger() -> None:
            if ping_from and ping_to:
                try:
                    results["ping"] = ping_gap(self.backend, ping_from, ping_to, seconds=3.0)
                except Exception as exc:
                    results["ping_error"] = str(exc)

        tp = threading.Thread(target=pinger, daemon=True, name="fault-ping")
        tw = threading.Thread(target=watcher, daemon=True, name="fault-watch")
        tp.start()
        time.sleep(0.3)  # the ping is running before the fault
        tw.start()
        started.wait(2.0)
        try:
            ran = inject()
        finally:
            injected.set()
        tw.join(95)
        tp.join(15)
        w = results.get("watch")
        parts = [f"{label}: {ran}"]
        if w is not None and w.seen_down:
            first_bad = next((s for _, s in w.states if s != "ESTABLISHED/INSTALLED"), "DOWN")
            if w.recovered:
                parts.append(f"left ESTABLISHED ({first_bad}) and came back ESTABLISHED/INSTALLED after "
                             f"{fmt_gap(w.gap)} ({w.samples} samples of strongSwan)")
            else:
                parts.append(f"left ESTABLISHED ({first_bad}) and is NOT back yet")
        elif w is not None and w.replaced:
            parts.append(f"left ESTABLISHED (IKE SA {w.old_spi[:8]}… deleted) and came back ESTABLISHED/INSTALLED "
                         f"(new IKE SA {w.new_spi[:8]}…) within {fmt_gap(w.gap)}, between two samples of strongSwan")
        elif w is not None:
            parts.append("no watched SA changed: strongSwan kept the tunnel up")
        if w is not None and w.left_established and pair is not None:
            self.reach.note_bounce(pair, w.gap, "watch" if w.seen_down else "spi")
        if "ping" in results and pair is not None:
            gap, replies = results["ping"]
            if gap is None:
                note = "no ping reply in 3 s"
            else:
                note = f"largest gap between replies {fmt_gap(gap)} ({replies} replies, one ping every 10 ms)"
            self.reach.note_ping_gap(pair, gap, note)
            parts.append(f"data plane: {note}")
        summary = "; ".join(parts)
        self.last_fault = summary
        return summary

    # ------------------------------------------------------------------ actions: nodes
    def action_reboot_node(self, node: str | None = None) -> None:
        node = self._node(node)
        if not node or not self._need_lab():
            return
        self.confirm(f"Reboot {node}?",
                     f"{node} powers off: charon, the pod server and every process in it stop, its namespace and "
                     f"/run (host-local's IPAM data) are wiped, its pods lose their addresses. Then it boots again "
                     f"and its tunnels come back by themselves.",
                     lambda: self.start_action(f"reboot {node}", partial(self._do_reboot, node)), confirm="Reboot")

    def _peers_of(self, node: str) -> list[tuple[str, str]]:
        st = self.status
        assert st is not None
        return [(t.node, t.name) for t in st.tunnels if t.node == node or t.peer == node]

    def _other_node(self, node: str) -> tuple[str | None, str | None]:
        st = self.status
        if st is None:
            return None, None
        other = next((n for n in st.nodes if n.name != node and n.state == "ready"), None)
        target = next((n for n in st.nodes if n.name == node), None)
        if other is None or target is None:
            return None, None
        return other.name, cni0_of(target.pod_cidr)

    def _do_reboot(self, node: str) -> str:
        src, dst = self._other_node(node)
        return self._watch_fault(self._peers_of(node), src, dst, pair_of(src, node) if src else None,
                                 lambda: (self.backend.reboot(node), f"{node} rebooted")[1], f"reboot {node}")

    def action_restart_ipsec(self, node: str | None = None) -> None:
        node = self._node(node)
        if not node or not self._need_lab():
            return
        self.confirm(f"Restart IPsec on {node}?",
                     f"charon on {node} stops (its SAs go) and starts again; the mesh re-establishes by itself.",
                     lambda: self.start_action(f"restart IPsec on {node}", partial(self._do_restart, node)),
                     confirm="Restart", command=f"on {node}: stop charon, wait for it to exit, start it")

    def _do_restart(self, node: str) -> str:
        src, dst = self._other_node(node)
        return self._watch_fault(self._peers_of(node), src, dst, pair_of(src, node) if src else None,
                                 lambda: (self.backend.restart_ipsec(node), "charon restarted")[1],
                                 f"restart IPsec on {node}")

    def action_shell(self, node: str | None = None) -> None:
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

    # ------------------------------------------------------------------ actions: tunnels
    def action_tunnel_down(self, node: str | None = None, conn: str | None = None) -> None:
        sel = self._tunnel(node, conn)
        if sel is None or not self._need_lab():
            return
        node, conn = sel
        cmd = take_down_command(conn)
        self.confirm(f"Take {conn} down on {node}?",
                     f"Runs on {node} the command below, the seed's `{seed_command(conn)}`. strongSwan "
                     f"(close_action = start on the peer) brings the tunnel back by itself; the app watches it "
                     f"leave ESTABLISHED and come back, and measures the gap.",
                     lambda: self.start_action(f"take {conn} down on {node}", partial(self._do_tunnel_down, node, conn)),
                     confirm="Take down", command=f"{node}# {cmd}    (the seed's `{seed_command(conn)}`)")

    def _do_tunnel_down(self, node: str, conn: str) -> str:
        st = self.status
        assert st is not None
        t = st.tunnel(node, conn)
        peer = t.peer if t else None
        peer_end = next(((x.node, x.name) for x in st.tunnels if x.node == peer and x.peer == node), None)
        ends = [(node, conn)] + ([peer_end] if peer_end else [])
        target = next((n for n in st.nodes if n.name == node), None)
        self.log_line("actions", f"{node}# {take_down_command(conn)}   (the seed's `{seed_command(conn)}`)", node=node)
        return self._watch_fault(ends, peer, cni0_of(target.pod_cidr) if target and peer else None,
                                 pair_of(node, peer) if peer else None,
                                 lambda: self.backend.tunnel_down(node, conn), f"{node} {conn}")

    def action_tunnel_up(self, node: str | None = None, conn: str | None = None) -> None:
        sel = self._tunnel(node, conn)
        if sel is None or not self._need_lab():
            return
        node, conn = sel
        self.start_action(f"bring {conn} up on {node}",
                        lambda: f"{node}# {self.backend.tunnel_up(node, conn)}")

    # ------------------------------------------------------------------ actions: pods
    def action_scale(self, replicas: int | None = None) -> None:
        if not self._need_lab():
            return
        if replicas is not None:
            self._scale(replicas)
            return
        current = len(self.status.pods) if self.status else 0
        default = current or self.deploy_replicas or 9

        def done(value: str | None) -> None:
            if value is None:
                return
            try:
                n = int(value)
                if n < 0 or n > 250:
                    raise ValueError
            except ValueError:
                self.notify(f"replicas must be a whole number 0-250, not {value!r}", severity="error")
                return
            self._scale(n)
        self.push_screen(PromptScreen("Deploy / scale kubernetes-bootcamp",
                                      f"Replicas (now {current}); pods spread evenly over the nodes:",
                                      str(default), restrict=r"[0-9]*"), done)

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
            self.start_action("expose kubernetes-bootcamp",
                            lambda: (lambda s: f'service "{s.name}" exposed: NodePort {s.node_port} on every node')(
                                self.backend.expose(port)))
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
            self.call_from_thread(self._show_curl, node, url, reply.code, reply.body)
            if reply.code == 0:
                raise RuntimeError(f"curl {url} from {node}: no answer")
            return f"{node}$ curl {url} → {reply.code} {reply.body}"
        self.start_action(f"curl {url} from {node}", run)

    def _show_curl(self, node: str, url: str, code: int, body: str) -> None:
        t = Text()
        t.append(f"{node}$ ", style="bold")
        t.append(f"curl {url}\n", style="cyan")
        t.append(body or "(no answer)", style="green" if code == 200 else "red")
        t.append(f"   [HTTP {code or '—'}]", style="dim")
        screen = self.active_lab_screen()
        if isinstance(screen, PodsScreen):
            screen.show_reply(t)
        else:
            self.push_screen(ReplyScreen("curl", t))

    # ------------------------------------------------------------------ actions: checks
    def action_run_checks(self, name: str | None = None) -> None:
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
            for c in chosen:
                self.check_results.pop(c.name, None)
            self.checks_running = True
            self.busy = f"checks ({len(chosen)})"
            if self.current_mode != "checks":
                self.switch_mode("checks")
            self._checks_worker([name] if name else None)
            self._render_active()

        if disruptive:
            self.confirm("Run disruptive checks?",
                         f"{len(disruptive)} of these checks inject faults ({', '.join(disruptive[:4])}"
                         f"{', …' if len(disruptive) > 4 else ''}); the lab recovers by itself.", go, confirm="Run")
        else:
            go()

    @work(thread=True, exclusive=True, group="checks", exit_on_error=False, name="check suite")
    def _checks_worker(self, names: list[str] | None) -> None:
        from .checks.runner import run_checks  # noqa: PLC0415

        reporter = Reporter(lambda e: self.logs.add_event(e, default_source="checks"), source="checks")
        try:
            run_checks(self.backend, names, reporter=reporter, on_result=lambda r: self.post_message(CheckDone(r)))
        finally:
            self.post_message(CheckDone(None))

    def on_check_done(self, message: CheckDone) -> None:
        if message.result is None:
            self.checks_running = False
            self.busy = None
            done = list(self.check_results.values())
            failed = sum(1 for r in done if r.outcome.value == "failed")
            self.notify(f"checks finished: {len(done) - failed} passed or skipped, {failed} failed",
                        severity="error" if failed else "information")
        else:
            self.check_results[message.result.name] = message.result
            self.checks_pending.discard(message.result.name)
        self._paint(self._show_check_results)

    def _show_check_results(self, screen: LabScreen) -> None:
        if isinstance(screen, ChecksScreen):
            screen.show_results()
        screen.refresh_bar()

    # ------------------------------------------------------------------ tutorial mode
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action.startswith("tutorial_"):
            return self.tutorial is not None
        return True

    def refresh_lesson(self) -> None:
        for screen in self.screen_stack:
            for panel in screen.query(LessonPanel):
                if panel.is_attached:
                    with contextlib.suppress(NoMatches):  # a panel still composing: shown on mount
                        panel.show()

    def on_tutorial_changed(self, message: TutorialChanged) -> None:
        self.refresh_lesson()
        self.refresh_now()

    def _tutorial_ready(self) -> bool:
        if self.tutorial is None:
            return False
        if self.tutorial_busy:
            self.notify(f"busy: {self.tutorial_busy}", severity="warning")
            return False
        return True

    def action_tutorial_do(self) -> None:
        if not self._tutorial_ready():
            return
        self.tutorial_busy = f"doing step {self.tutorial.index + 1}"
        self.refresh_lesson()
        self._tutorial_worker(True)

    def action_tutorial_check(self) -> None:
        if not self._tutorial_ready():
            return
        self.tutorial_busy = f"checking step {self.tutorial.index + 1}"
        self.refresh_lesson()
        self._tutorial_worker(False)

    @work(thread=True, exclusive=True, group="tutorial", exit_on_error=False, name="tutorial step")
    def _tutorial_worker(self, do_it: bool) -> None:
        session = self.tutorial
        reporter = Reporter(lambda e: self.logs.add_event(e, default_source="tutorial"), source="tutorial")
        try:
            if do_it:
                self.log_line("tutorial", f"▶ step {session.index + 1}: {session.step.title}")
                try:
                    session.do_it(reporter)
                except Exception as exc:
                    session.step_state().error = str(exc)
                    self.log_line("tutorial", f"✗ {exc}", stream="stderr")
                    return
                self.post_message(TutorialChanged())
                self.tutorial_busy = f"checking step {session.index + 1}"
                self.post_message(TutorialChanged())
            results = session.check(reporter)
            failed = [r.name for r in results if not r.passed]
            self.log_line("tutorial", f"{'✓' if not failed else '✗'} step {session.index + 1} checks: "
                          + (", ".join(failed) + " failed" if failed else "passed"))
        finally:
            self.tutorial_busy = ""
            self.post_message(TutorialChanged())

    def _tutorial_move(self, how: str) -> None:
        if not self._tutorial_ready():
            return
        session = self.tutorial
        if how == "next" and not session.can_next:
            why = "this is the last step" if session.index == len(session.steps) - 1 else "its checks have not passed yet"
            self.notify(f"Next is offered once the step is done: {why} (F5 does it)", severity="warning")
            return
        getattr(session, how)()
        self.refresh_lesson()

    def action_tutorial_next(self) -> None:
        self._tutorial_move("next")

    def action_tutorial_back(self) -> None:
        self._tutorial_move("back")

    def action_tutorial_skip(self) -> None:
        self._tutorial_move("skip")

    def action_tutorial_restart(self) -> None:
        if self.tutorial is None:
            return
        self.confirm("Restart the tutorial?", "Your progress on this lab is forgotten; the lab itself stays as it is.",
                     lambda: self._tutorial_move("restart"), confirm="Restart")

    # ------------------------------------------------------------------ app-level actions
    def action_bring_up(self) -> None:
        if self.backend.exists():
            self.notify(f"lab {self.lab_name} is already up")
            return
        self.start_lab()

    def action_request_quit(self) -> None:
        def done(choice: str | None) -> None:
            if choice == "stop":
                self.exit("stop")
            elif choice == "leave":
                self.exit("leave")
        self.push_screen(QuitScreen(self.lab_name), done)

    async def action_quit(self) -> None:
        self.exit("leave")

    def action_stop_lab(self) -> None:
        self.confirm(f"Stop lab {self.lab_name} and quit?",
                     "Every namespace, process and file of the lab is removed.", lambda: self.exit("stop"),
                     confirm="Stop lab")

    def action_help(self) -> None:
        screen = self.active_lab_screen()
        md = [screen.HELP.strip() if screen is not None and screen.HELP else "# ipsec-lab", ""]
        md += ["## Keys on this screen", "", "| key | action | what it does |", "|---|---|---|"]
        seen = set()
        for b in (screen.BINDINGS if screen else []) + self.BINDINGS:
            if not isinstance(b, Binding) or b.key in seen or self.check_action(b.action, ()) is False:
                continue
            seen.add(b.key)
            key = b.key_display or b.key.replace("question_mark", "?")
            md.append(f"| `{key}` | {b.description} | {b.tooltip} |")
        md += ["", "## Everywhere",
               "- `ctrl+p` opens the **command palette**: every action, with the node, tunnel or pod it acts on.",
               "- Destructive actions ask first. A failed action shows an error; the app keeps running.",
               f"- `q` quits and leaves lab `{self.lab_name}` running unless you choose to stop it.",
               "- On the netns backend pods are network namespaces served by a small HTTP server, not a kubelet."]
        self.push_screen(HelpScreen("\n".join(md)))

    def action_log_filter(self, source: str | None = None, node: str | None = None) -> None:
        self.switch_mode("logs")
        screen = self.active_lab_screen()
        if isinstance(screen, LogsScreen):
            screen.set_filters(source=source or "all", node=node or "all")

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        out: list[tuple[str, str, Callable[[], object]]] = []
        add = lambda title, help_text, cb: out.append((title, help_text, cb))  # noqa: E731
        for key, name in (("nodes", "Nodes"), ("tunnels", "Tunnels"), ("pods", "Pods"), ("logs", "Logs"),
                          ("checks", "Checks")):
            add(f"Show {name}", f"switch to the {name} screen", partial(self.switch_mode, key))
        st = self.status
        if st is not None:
            for n in st.nodes:
                add(f"Reboot {n.name}", "power off, wipe namespace, /run and pods, boot again (asks first)",
                    partial(self.action_reboot_node, n.name))
                add(f"Restart IPsec on {n.name}", "restart charon (asks first)", partial(self.action_restart_ipsec, n.name))
                add(f"Open a shell on {n.name}", "the app suspends; exit the shell to return", partial(self.action_shell, n.name))
                add(f"Show charon log of {n.name}", "Logs filtered to this node's charon",
                    partial(self.action_log_filter, "charon", n.name))
            for t in st.tunnels:
                add(f"Take down {t.name} on {t.node}",
                    f"{take_down_command(t.name)} (the seed's `{seed_command(t.name)}`), asks first",
                    partial(self.action_tunnel_down, t.node, t.name))
                add(f"Bring up {t.name} on {t.node}", f"swanctl --initiate --child {t.name}",
                    partial(self.action_tunnel_up, t.node, t.name))
            for p in st.pods:
                add(f"Delete pod {p.name}", f"on {p.node} ({p.ip}); the deployment replaces it (asks first)",
                    partial(self.action_delete_pod, p.name))
                for n in st.nodes:
                    add(f"Curl pod {p.name} from {n.name}", f"curl http://{p.ip}:8080 on {n.name}",
                        partial(self.action_curl_pod, p.name, n.name))
        add("Deploy / scale kubernetes-bootcamp…", "choose the replica count", self.action_scale)
        add("Expose kubernetes-bootcamp on a NodePort…", "kubectl expose --type=NodePort", self.action_expose)
        add("Run all checks", "the whole check suite", self.action_run_checks)
        catalog, _ = self.load_catalog()
        for c in catalog or []:
            add(f"Run check {c.name}", c.purpose, partial(self.action_run_checks, c.name))
        for source in ("provisioning", "charon", "actions", "checks", "app"):
            add(f"Show {source} logs", f"Logs filtered to {source}", partial(self.action_log_filter, source, None))
        add("Bring the lab up", f"create lab {self.lab_name} if it is not running", self.action_bring_up)
        add("Help", "what this screen shows and its keys", self.action_help)
        add("Quit, leave the lab running", f"lab {self.lab_name} keeps running", partial(self.exit, "leave"))
        add("Stop the lab and quit", "remove every namespace, process and file of the lab (asks first)",
            self.action_stop_lab)
        return out


def cni0_of(pod_cidr: str) -> str:
    return str(ipaddress.ip_network(pod_cidr).network_address + 1)
