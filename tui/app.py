"""The Textual app: five modes over one lab, every action a key (and a palette entry) away.

A thin face. The app holds the session's state as reactives, each set only on the UI thread by a
message handler; worker threads post the typed messages of tui/messages.py (or append to the
thread-safe LogStore / Reachability). Screens watch the reactives they show. The session logic
without Textual lives in tui/live/ (logs, reachability, the fault watch, the palette's entries)
and tui/tutorial/controller.py.
"""

from __future__ import annotations

import gc
import threading
import time
from functools import partial
from typing import Callable

from rich.text import Text
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerState, get_current_worker

from .backends.base import Backend
from .checks.base import CheckResult
from .lab import resources
from .lab.events import Reporter
from .lab.model import LabSpec
from .lab.status import LabStatus
from .live.fault import probe_pairs
from .live.logs import CharonTails, EventSink, LogStore, Progress, ProgressCounter, bringup_steps
from .live.palette import palette_entries
from .live.reach import Reachability
from .live.rekey import RekeyLog
from .messages import (ActionDone, CheckDone, CurlReplied, FaultChanged, LabReady, PhaseChanged, ProgressChanged,
                       StatusFailed, StatusUpdated, TutorialChanged)
from .screens.actions import CHANGES_THE_LAB, LabActions
from .screens.base import LabScreen
from .screens.capture import CaptureScreen
from .screens.checks import ChecksScreen, load_catalog
from .screens.commands import LabCommands
from .screens.link import LinkActions
from .screens.dialogs import ErrorScreen, HelpScreen, QuitScreen, ReplyScreen
from .screens.logs import LogsScreen
from .screens.nodes import NodesScreen
from .screens.pods import PodsScreen
from .screens.tunnels import TunnelsScreen

MAX_PING_NODES = 8  # above this the timeline comes from tunnel states only (pings would cost N^2 a second)


class IpsecLabApp(LinkActions, LabActions, App[str]):
    """ipsec-lab's TUI. `exit()` returns "stop" when the user chose to stop the lab, else "leave"."""

    TITLE = "ipsec-lab"
    CSS_PATH = str(resources.app_css())
    MODES = {"nodes": NodesScreen, "tunnels": TunnelsScreen, "pods": PodsScreen, "logs": LogsScreen,
             "checks": ChecksScreen, "capture": CaptureScreen}
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
        Binding("6", "switch_mode('capture')", "Capture", id="mode.capture",
                tooltip="Capture: tcpdump on a node's interface, lines as they arrive, the underlay's verdict"),
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

    status: reactive[LabStatus | None] = reactive(None, always_update=True, init=False)
    """The latest status of the lab (from the poller or a fault watch); None until the first."""
    phase_text: reactive[str] = reactive("starting", init=False)
    """What the app is doing while there is no status (the lab bar shows it)."""
    progress: reactive[Progress | None] = reactive(None, init=False)
    """The bring-up's progress, while this app brings the lab up (the Logs screen shows it)."""
    links: reactive[dict[str, str]] = reactive(dict, always_update=True, init=False)
    """Node -> its underlay link's impairment as the node reports it ("" none, "?" not asked)."""
    busy: reactive[str | None] = reactive(None, init=False)
    """The action or check run under way (one at a time), or None."""
    last_fault: reactive[str] = reactive("", init=False)
    """The last fault's "under way" line, then its summary (the Tunnels screen's events list)."""
    check_results: reactive[dict[str, CheckResult]] = reactive(dict, always_update=True, init=False)
    """Check name -> its latest result in this session."""
    checks_running: reactive[bool] = reactive(False, init=False)
    """A check run is under way; the checks in checks_pending have no result yet."""
    tutorial_busy: reactive[str] = reactive("", init=False)
    """What the tutorial is doing ("doing step 3"), "" when idle."""
    tutorial_version: reactive[int] = reactive(0, init=False)
    """Bumped whenever the tutorial's step, output or results change (the lesson panel watches it)."""
    curl_reply: reactive[Text | None] = reactive(None, always_update=True, init=False)
    """The last curl from a node, as shown (the Pods screen watches it)."""

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
        check_runner: Callable[..., object] | None = None,
        tutorial=None,
        read_only: bool = False,
        auth: str = "psk",  # how a lab this app brings up authenticates (`ipsec-lab --auth x509`)
    ) -> None:
        super().__init__()
        self.auth = auth
        self.tutorial = tutorial  # a tui.tutorial.session.TutorialSession in tutorial mode
        # A view for watchers (`ipsec-lab web --read-only`): no action, shell, fault or check is offered
        # (check_action hides their keys, the palette leaves them out, and each action refuses).
        self.read_only = read_only
        if read_only and tutorial is not None:
            raise ValueError("the tutorial acts on the lab; it has no read-only view")
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
        self.check_runner = check_runner  # tui.checks.runner.run_checks unless a test gives its own
        self.logs = LogStore()
        self.reach = Reachability(clock)
        self.rekeys = RekeyLog()  # CHILD/IKE SA rekeys seen in the statuses (the Tunnels screen's events)
        self.status_at: float = 0.0
        self.status_error = ""
        self.checks_pending: set[str] = set()
        self.lab_created = False  # this app brought the lab up
        self.lab_ready = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.sink = EventSink(self.logs, lambda p: self.post_message(ProgressChanged(p)))
        backend.reporter = Reporter(self.sink, source="provisioning")
        if initial_status is not None:
            self.set_reactive(IpsecLabApp.status, initial_status)
            self.status_at = clock()
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
        if self.bring_up and not self.read_only:
            self.start_lab()
        elif self.status is None and self.backend.exists():
            self._start_live()
        elif self.status is None:
            self.phase_text = f"lab {self.lab_name} is not running"

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()

    def _set_subtitle(self) -> None:
        dp = self.status.datapath if self.status else "…"
        vm = f" · {self.status.hypervisor}" if self.status and self.status.hypervisor else ""
        ro = " · read-only" if self.read_only else ""
        self.sub_title = f"lab {self.lab_name} · backend {self.backend.name} · data path {dp}{vm}{ro}"

    def log_line(self, source: str, text: str, node: str | None = None, stream: str = "stdout") -> None:
        self.logs.add(source, text, node=node, stream=stream)

    @work(thread=True, exclusive=True, group="lifecycle", exit_on_error=False, name="bring the lab up")
    def start_lab(self) -> None:
        b = self.backend
        if b.exists():
            self.post_message(PhaseChanged("attaching"))
            self.log_line("app", f"attaching to lab {self.lab_name} (backend {b.name}); it is already running")
            self.post_message(LabReady(created=False))
            return
        self.post_message(PhaseChanged(f"bringing lab {self.lab_name} up ({self.nodes_wanted} nodes)…"))
        counter = ProgressCounter(bringup_steps(self.nodes_wanted) + (1 if self.deploy_replicas else 0))
        self.post_message(ProgressChanged(counter.snapshot()))
        self.call_from_thread(self.switch_mode, "logs")
        self.log_line("app", f"no lab {self.lab_name!r} is running: bringing one up with {self.nodes_wanted} nodes")
        self.sink.source, self.sink.counter = "provisioning", counter
        try:
            b.up(LabSpec.build(self.lab_name, self.nodes_wanted, auth=self.auth))
            if self.deploy_replicas:
                b.deploy(self.deploy_replicas)
        except Exception:
            counter.failed = True
            self.post_message(ProgressChanged(counter.snapshot()))
            self.post_message(PhaseChanged("bring-up failed (see Logs); the palette offers 'Bring the lab up' to retry"))
            raise
        finally:
            self.sink.source, self.sink.counter = "actions", None
        self.post_message(LabReady(created=True))

    def on_phase_changed(self, message: PhaseChanged) -> None:
        self.phase_text = message.text

    def on_progress_changed(self, message: ProgressChanged) -> None:
        self.progress = message.progress

    def on_lab_ready(self, message: LabReady) -> None:
        self.sink.source = "actions"
        self.phase_text = "waiting for the first status"
        if message.created:
            self.lab_created = True
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
            self.poll_links()
        if self.tail_logs:
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
                nodes = [(n.name, n.cni0_ip) for n in st.nodes if n.state == "ready"]
                for pair, up in probe_pairs(self.backend, nodes).items():
                    self.reach.observe(pair, up, source="ping", why="no ping reply between the cni0 addresses")
            self._stop.wait(max(0.2, 1.0 - (time.monotonic() - t0)))

    @work(thread=True, exclusive=True, group="tails", exit_on_error=False, name="charon log tails")
    def tail_charon(self) -> None:
        worker = get_current_worker()
        tails = CharonTails(self.backend)
        while not worker.is_cancelled and not self._stop.is_set():
            st = self.status
            if st is not None:
                tails.into(self.logs, [n.name for n in st.nodes])
            self._stop.wait(0.3)

    # ------------------------------------------------------------------ messages → state
    def on_status_updated(self, message: StatusUpdated) -> None:
        first = self.status is None
        self.rekeys.observe(message.status, message.at)
        self.status_at, self.status_error = message.at, ""
        self.status = message.status
        if first or message.status.datapath not in self.sub_title or message.status.hypervisor not in self.sub_title:
            self._set_subtitle()

    def on_status_failed(self, message: StatusFailed) -> None:
        if message.error != self.status_error:
            self.status_error = message.error
            self.log_line("app", f"status: {message.error}", stream="stderr")
        self.phase_text = f"status unavailable: {message.error}"

    def on_fault_changed(self, message: FaultChanged) -> None:
        self.last_fault = message.text

    def status_age_text(self) -> str:
        if not self.status_at:
            return "never"
        return f"{max(0.0, self.clock() - self.status_at):.1f} s ago"

    def active_lab_screen(self) -> LabScreen | None:
        return next((s for s in reversed(self.screen_stack) if isinstance(s, LabScreen)), None)

    def on_action_done(self, message: ActionDone) -> None:
        self.busy = None
        self.refresh_now()
        if message.ok:
            self.notify(message.message, title=message.title, timeout=8)

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

    def on_curl_replied(self, message: CurlReplied) -> None:
        t = Text()
        t.append(f"{message.node}$ ", style="bold")
        t.append(f"curl {message.url}\n", style="cyan")
        t.append(message.body or "(no answer)", style="green" if message.code == 200 else "red")
        t.append(f"   [HTTP {message.code or '—'}]", style="dim")
        self.curl_reply = t
        if not isinstance(self.active_lab_screen(), PodsScreen):
            self.push_screen(ReplyScreen("curl", t))

    def on_check_done(self, message: CheckDone) -> None:
        if message.result is None:
            self.checks_running = False
            self.busy = None
            counts: dict[str, int] = {}
            for r in self.check_results.values():
                counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
            bad = sum(n for outcome, n in counts.items() if outcome not in ("passed", "skipped"))
            self.notify("checks finished: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())),
                        severity="error" if bad else "information")
        else:
            self.checks_pending.discard(message.result.name)
            self.check_results = {**self.check_results, message.result.name: message.result}

    # ------------------------------------------------------------------ tutorial mode
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.read_only and action in CHANGES_THE_LAB:
            return False  # hidden from the footer and the help, and its key does nothing
        if action.startswith("tutorial_"):
            return self.tutorial is not None
        return True

    def on_tutorial_changed(self, message: TutorialChanged) -> None:
        self.tutorial_busy = message.busy
        self.tutorial_version += 1
        self.refresh_now()

    # ------------------------------------------------------------------ app-level actions
    def action_bring_up(self) -> None:
        if self.refuse_if_read_only("bring the lab up"):
            return
        if self.backend.exists():
            self.notify(f"lab {self.lab_name} is already up")
            return
        self.start_lab()

    def action_request_quit(self) -> None:
        if self.read_only:  # a watcher may leave, never stop the lab
            self.exit("leave")
            return
        self.push_screen(QuitScreen(self.lab_name), lambda choice: self.exit(choice) if choice else None)

    async def action_quit(self) -> None:
        self.exit("leave")

    def action_stop_lab(self) -> None:
        if self.refuse_if_read_only("stop the lab"):
            return
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
               f"- `q` quits and leaves lab `{self.lab_name}` running unless you choose to stop it."]
        if self.backend.pods_are_namespaces:
            md.append("- On the netns backend pods are network namespaces served by a small HTTP server, not a kubelet.")
        self.push_screen(HelpScreen("\n".join(md)))

    def action_log_filter(self, source: str | None = None, node: str | None = None) -> None:
        self.switch_mode("logs")
        screen = self.active_lab_screen()
        if isinstance(screen, LogsScreen):
            screen.set_filters(source=source or "all", node=node or "all")

    def palette_commands(self) -> list[tuple[str, str, Callable[[], object]]]:
        """(title, help, callback) of every entry of tui/live/palette.py, for the palette's provider."""
        catalog, _ = self.load_catalog()
        return [(e.title, e.help, partial(self.run_palette_entry, e.action, e.args))
                for e in palette_entries(self.lab_name, self.status, catalog or [])
                if not (self.read_only and e.action in CHANGES_THE_LAB)]

    def run_palette_entry(self, action: str, args: tuple[object, ...]) -> object:
        if action == "quit":
            return self.exit("leave")
        return getattr(self, "switch_mode" if action == "switch_mode" else f"action_{action}")(*args)
