"""Nodes: one row per node; reboot, restart IPsec, open a shell."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ..lab.status import LabStatus
from ..live.text import age
from .base import LabScreen, sync_rows

COLUMNS = ("NAME", "UNDERLAY IP", "POD RANGE", "STATE", "IPSEC", "UPTIME", "PODS", "IPAM (/24)", "LINK")


def state_text(state: str) -> Text:
    return Text(state, style={"ready": "green", "booting": "yellow", "creating": "yellow"}.get(state, "red bold"))


def _link_cell(text: str) -> Text:
    return Text(text, style="red bold" if text.startswith("CUT") else ("yellow" if text and text != "?" else "dim"))


class NodesScreen(LabScreen):
    HELP = """# Nodes
One row per node: its underlay address, its pod range (a /24 handed out by host-local), its state,
its IPsec daemon (charon) and how long it has run, its pods and how much of its /24 IPAM has used,
and its underlay link's impairment (LINK, read from the node: `tc qdisc show` and the lab's drop rule).

A node here is a network namespace with its own charon; **reboot** wipes its processes, namespace,
/run (so host-local's IPAM data, as the seed keeps it under /run) and pods, and boots it again.
**l** impairs the selected node's underlay as `ipsec-lab link` does (delay, jitter, loss, rate, cut, clear)."""

    BINDINGS = [
        Binding("r", "app.reboot_node", "Reboot", id="nodes.reboot",
                tooltip="Reboot the selected node (asks first): processes, namespace, /run and pods go, then it boots"),
        Binding("i", "app.restart_ipsec", "Restart IPsec", id="nodes.restart_ipsec",
                tooltip="Restart the selected node's strongSwan daemon (asks first)"),
        Binding("s", "app.shell", "Shell", id="nodes.shell",
                tooltip="Open a shell inside the selected node; the app suspends and comes back when you exit"),
        Binding("l", "app.impair_link", "Link", id="nodes.link",
                tooltip="Impair the selected node's underlay link: delay, jitter, loss, rate, cut; or clear it "
                        "(as `ipsec-lab link`)"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Nodes", classes="screen-title")
        table = DataTable(id="nodes-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="node-detail", classes="detail")

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.watch(self.lab_app, "links", self._links_changed, init=False)

    def _links_changed(self, links: dict[str, str]) -> None:
        if self.lab_app.status is not None and self.showing:
            self.show_status(self.lab_app.status)

    @property
    def selected_node(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def show_status(self, status: LabStatus) -> None:
        rows = {}
        for n in status.nodes:
            ipsec = Text(n.ipsec_state, style="green" if n.ipsec_state == "running" else "red bold")
            rows[n.name] = (
                n.name, n.ip, n.pod_cidr, state_text(n.state), ipsec, age(n.ipsec_uptime),
                str(n.pods), f"{n.ipam_used}/253", _link_cell(self.lab_app.links.get(n.name, "")),
            )
        sync_rows(self.query_one(DataTable), rows, len(COLUMNS))
        self._show_detail(status)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.lab_app.status is not None:
            self._show_detail(self.lab_app.status)

    def _show_detail(self, status: LabStatus) -> None:
        name = self.selected_node
        node = next((n for n in status.nodes if n.name == name), None)
        if node is None:
            self.query_one("#node-detail", Static).update("")
            return
        tunnels = [t for t in status.tunnels if t.node == node.name]
        up = sum(1 for t in tunnels if t.up)
        t = Text()
        t.append(f"{node.name}", style="bold")
        t.append(f"  cni0 {node.pod_cidr.rsplit('.', 1)[0]}.1 · tunnels {up}/{len(tunnels)} up: ")
        for tun in tunnels:
            t.append(f"{tun.name}→{tun.peer} ", style="green" if tun.up else "red bold")
        if not self.lab_app.read_only:
            t.append("\nr reboot · i restart IPsec · s shell (exit the shell to come back) · l impair its link", style="dim")
        self.query_one("#node-detail", Static).update(t)
