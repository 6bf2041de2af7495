"""Capture: tcpdump on a node's interface, its lines as they arrive, and on the underlay a verdict.

A mode of its own (key 6), not a panel: the lines want the screen's full width and height, and a
capture keeps running while you look at other modes. The headless part is tui/live/capture.py
(the same CaptureSession `ipsec-lab capture` runs); the verdict is underlay-encrypted's judgement
(tui.checks.catalog.judge_wire) over the pcap read with tui.lab.pcap.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Input, Label, RichLog, Select, Static

from ..checks.base import Outcome
from ..checks.catalog import judge_wire, wire_of
from ..lab.errors import LabError
from ..lab.status import LabStatus
from ..live.capture import CaptureSession, Interface, describe, interfaces
from ..messages import CaptureEnded, CaptureInterfaces, CaptureLines, CaptureVerdict
from .base import LabScreen

MAX_LINES = 5000


def save_name(lab: str, node: str, iface: str, at: float) -> str:
    """Where Ctrl+S saves: the working directory, one file per save."""
    return os.path.abspath(f"ipsec-lab-{lab}-{node}-{iface}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(at))}.pcap")


def underlay_verdict(summary: Any) -> tuple[str, bool, bool]:
    """(text, alarm, good) for what an underlay capture saw: the underlay-encrypted judgement once
    it saw ESP or a pod address; neutral before."""
    seen = describe(summary)
    if summary is None or not (summary.esp or summary.cleartext_pod):
        return f"{seen} · no ESP or pod address seen yet", False, False
    v = judge_wire(wire_of(summary))
    if v.outcome is Outcome.PASSED:
        return f"{seen} · encrypted: {v.detail}", False, True
    if summary.cleartext_pod:
        return f"{seen} · ALARM: {v.detail}", True, False
    return f"{seen} · {v.detail}", False, False


class CaptureScreen(LabScreen):
    HELP = """# Capture
tcpdump on one node's interface, its own decoding, a line per packet as it arrives. Pick the node and the
interface (the **underlay**, the pod bridge **cni0**, a **pod's veth**, **ipsec0** on libipsec or an **XFRM
interface** on the kernel data path), optionally a tcpdump filter, and press **c** to start or stop.

On the underlay the view counts ESP, UDP 4500 and IKE packets, and packets with a pod address in clear:
those are an **alarm**, the judgement of the underlay-encrypted check. **Ctrl+S** saves what was captured
as a pcap in the working directory (`ipsec-lab-LAB-NODE-IFACE-TIME.pcap`; Wireshark opens it). A capture
stops when you stop it, when the app exits or the lab stops; no tcpdump is left behind. The same from a
shell: `ipsec-lab capture NODE [--iface IF] [--filter BPF] [-w FILE]`."""

    BINDINGS = [
        Binding("c", "toggle_capture", "Start/stop", id="capture.toggle",
                tooltip="Start a capture on the selected node and interface, or stop the one running"),
        Binding("ctrl+s", "save_pcap", "Save pcap", id="capture.save",
                tooltip="Save what was captured as a pcap in the working directory"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.session: CaptureSession | None = None
        self.queue: collections.deque[str] = collections.deque()
        self.lines_seen = 0
        self._notified = threading.Event()  # a CaptureLines message is on its way
        self._ifaces: dict[str, list[Interface]] = {}
        self._node_names: list[str] = []
        self.verdict = ""
        self.capturing = False

    def compose_body(self) -> ComposeResult:
        yield Static("Capture", classes="screen-title")
        with Horizontal(id="capture-controls"):
            yield Label("node")
            yield Select([], allow_blank=True, prompt="node", id="capture-node")
            yield Label("interface")
            yield Select([], allow_blank=True, prompt="interface", id="capture-iface")
            yield Label("filter")
            yield Input(placeholder="tcpdump filter, e.g. esp or udp port 4500", id="capture-filter")
        yield Static("", id="capture-verdict", classes="detail")
        yield RichLog(max_lines=MAX_LINES, wrap=False, id="capture-log", auto_scroll=True)
        yield Static("", id="capture-state", classes="dim")

    def on_mount(self) -> None:
        self.set_interval(1.0, self._judge_tick)
        self._show_state()

    def on_unmount(self) -> None:
        """The app exits (and, when asked, the lab stops after): no tcpdump and no pcap left."""
        if self.session is not None:
            self.session.close()

    # -- choosing ------------------------------------------------------------------------------
    def show_status(self, status: LabStatus) -> None:
        sel = self.query_one("#capture-node", Select)
        names = [n.name for n in status.nodes]
        if self._node_names != names:
            self._node_names = names
            sel.set_options([(n, n) for n in names])
            if names and sel.value is Select.NULL:
                sel.value = names[0]

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "capture-node" and event.value is not Select.NULL:
            self.load_interfaces(str(event.value))

    @work(thread=True, exclusive=True, group="capture-ifaces", exit_on_error=False, name="list interfaces")
    def load_interfaces(self, node: str) -> None:
        try:
            self.post_message(CaptureInterfaces(node, interfaces(self.lab_app.backend, node)))
        except LabError as exc:
            self.post_message(CaptureInterfaces(node, [], str(exc)))

    def on_capture_interfaces(self, message: CaptureInterfaces) -> None:
        if message.error:
            self.notify(f"interfaces of {message.node}: {message.error}", severity="error")
            return
        self._ifaces[message.node] = message.interfaces
        if self.query_one("#capture-node", Select).value != message.node:
            return
        sel = self.query_one("#capture-iface", Select)
        keep = sel.value
        sel.set_options([(i.label(), i.name) for i in message.interfaces])
        names = [i.name for i in message.interfaces]
        sel.value = keep if keep in names else (names[0] if names else Select.NULL)

    @property
    def selected_node(self) -> str | None:
        v = self.query_one("#capture-node", Select).value
        return None if v is Select.NULL else str(v)

    def select(self, node: str, iface: str | None = None, bpf: str | None = None) -> None:
        """Choose what to capture (the palette, tests): the interface once the node's are listed."""
        self.query_one("#capture-node", Select).value = node
        if iface is not None and iface in [i.name for i in self._ifaces.get(node, [])]:
            self.query_one("#capture-iface", Select).value = iface
        if bpf is not None:
            self.query_one("#capture-filter", Input).value = bpf

    # -- running -------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """A capture is starting or running (its worker has not ended)."""
        return self.capturing

    def action_toggle_capture(self) -> None:
        if self.capturing:
            self.stop_capture()
            return
        if self.lab_app.refuse_if_read_only("capture"):
            return
        node = self.selected_node
        iface = self.query_one("#capture-iface", Select).value
        if node is None:
            self.notify("no node to capture on yet", severity="warning")
            return
        if self.session is not None:  # the last one's pcap goes: one capture at a time
            self.session.close()
        bpf = self.query_one("#capture-filter", Input).value.strip()
        self.session = CaptureSession(self.lab_app.backend, node, None if iface is Select.NULL else str(iface), bpf)
        self.capturing = True
        self.query_one("#capture-log", RichLog).clear()
        self.queue.clear()
        self.lines_seen = 0
        self.verdict = ""
        self.query_one("#capture-verdict", Static).update("")
        self.run_capture(self.session)
        self._show_state()

    def stop_capture(self) -> None:
        """Stop tcpdump (by PID); its pcap stays until the next capture (Ctrl+S saves it)."""
        if self.session is not None:
            self.session.stop()

    @work(thread=True, group="capture", exit_on_error=False, name="capture")
    def run_capture(self, session: CaptureSession) -> None:
        try:
            session.start()
        except LabError as exc:  # UsageError too: a bad interface or filter
            self.post_message(CaptureEnded(str(exc)))
            return
        self.post_message(CaptureLines())
        for line in session.lines():
            self.queue.append(line)
            if not self._notified.is_set():
                self._notified.set()
                self.post_message(CaptureLines())
        self.post_message(CaptureEnded())

    def on_capture_lines(self, message: CaptureLines) -> None:
        self._notified.clear()
        log = self.query_one("#capture-log", RichLog)
        while self.queue:
            log.write(Text(self.queue.popleft()))
            self.lines_seen += 1
        self._show_state()

    def on_capture_ended(self, message: CaptureEnded) -> None:
        self.on_capture_lines(CaptureLines())
        self.capturing = False
        if message.error:
            self.notify(message.error, title="capture", severity="error")
        self._judge_tick()
        self._show_state()

    # -- the verdict ---------------------------------------------------------------------------
    def _judge_tick(self) -> None:
        s = self.session
        if s is not None and s.kind == "underlay" and self.lab_app.status is not None:
            self.judge(s)

    @work(thread=True, exclusive=True, group="capture-verdict", exit_on_error=False, name="judge the capture")
    def judge(self, session: CaptureSession) -> None:
        spec = self.lab_app.backend.spec()
        if session.pcap_path is None:
            self.post_message(CaptureVerdict(f"no verdict: a pcap is not supported yet on "
                                             f"{self.lab_app.backend.name} nodes", False, False))
            return
        self.post_message(CaptureVerdict(*underlay_verdict(session.summary(spec.pod_supernet))))

    def on_capture_verdict(self, message: CaptureVerdict) -> None:
        self.verdict = message.text
        style = "bold white on red" if message.alarm else ("green" if message.good else "yellow")
        self.query_one("#capture-verdict", Static).update(Text(message.text, style=style))

    # -- saving --------------------------------------------------------------------------------
    def action_save_pcap(self) -> None:
        s = self.session
        if s is None or s.proc is None:
            self.notify("no capture to save: start one with c", severity="warning")
            return
        if self.lab_app.refuse_if_read_only("save a capture"):
            return
        try:
            path = s.save(save_name(self.lab_app.lab_name, s.node, s.iface, time.time()))
        except (LabError, OSError) as exc:
            self.notify(str(exc), title="save pcap", severity="error")
            return
        self.notify(f"saved {path}", title="pcap")

    def _show_state(self) -> None:
        s = self.session
        if s is None:
            text = "idle · c starts a capture on the chosen node and interface"
        else:
            what = f"{s.node} {s.iface or '(underlay)'}" + (f" ({s.kind})" if s.kind else "")
            state = ("starting" if s.proc is None else "capturing") if self.capturing else "stopped"
            keys = "c stops" if self.capturing else "c starts a new one"
            text = f"{state} on {what}" + (f" filter {s.bpf!r}" if s.bpf else "") + \
                   f" · {self.lines_seen} lines · {keys} · ctrl+s saves the pcap"
        self.query_one("#capture-state", Static).update(text)
