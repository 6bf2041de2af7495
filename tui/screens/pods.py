"""Pods: `kubectl get pods -o wide`; deploy/scale, delete, expose, curl from a node."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from ..lab.status import LabStatus
from ..live.text import age
from .base import LabScreen, sync_rows

COLUMNS = ("NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE")

NETNS_NOTICE = (
    "On the netns backend, pods are network namespaces served by a small HTTP server, not a kubelet: each is "
    "attached by the real CNI bridge + host-local plugins, and one server per node answers as kubernetes-bootcamp "
    "does (there is no container image)."
)

class PodsScreen(LabScreen):
    HELP = """# Pods
The layout of `kubectl get pods -o wide`. Addresses come from each node's /24 by host-local, in order.

**d** deploys or scales the kubernetes-bootcamp deployment · **x** deletes the selected pod (the
deployment replaces it, with a new address from host-local) · **e** exposes the deployment on a
NodePort on every node · **c** curls the selected pod from a node you choose and shows the reply."""

    BINDINGS = [
        Binding("d", "app.scale", "Deploy/scale", id="pods.scale",
                tooltip="Deploy or scale the kubernetes-bootcamp deployment to N replicas"),
        Binding("x", "app.delete_pod", "Delete pod", id="pods.delete",
                tooltip="Delete the selected pod (asks first); the deployment replaces it"),
        Binding("e", "app.expose", "Expose", id="pods.expose",
                tooltip="Publish the deployment on a NodePort on every node (kubectl expose)"),
        Binding("c", "app.curl_pod", "Curl from node", id="pods.curl",
                tooltip="curl the selected pod's :8080 from a node you choose and show the reply"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Pods", classes="screen-title")
        yield Static(Text(NETNS_NOTICE if self.lab_app.backend.pods_are_namespaces else "", style="italic"),
                     id="pods-notice", classes="notice")
        table = DataTable(id="pods-table", cursor_type="row", zebra_stripes=True)
        table.add_columns(*COLUMNS)
        yield table
        yield Static("", id="pods-service", classes="detail")
        yield Static("", id="pods-reply", classes="detail")

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.watch(self.lab_app, "curl_reply", lambda t: self.show_reply(t) if t is not None else None, init=False)

    @property
    def selected_pod(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def show_status(self, status: LabStatus) -> None:
        now = self.lab_app.clock()
        rows = {}
        for p in sorted(status.pods, key=lambda p: p.name):
            running = p.state == "Running"
            rows[p.name] = (
                p.name, "1/1" if running else "0/1",
                Text(p.state, style="green" if running else "yellow"), str(p.restarts),
                age(now - p.created if p.created else None), p.ip or "<none>", p.node,
            )
        sync_rows(self.query_one(DataTable), rows, len(COLUMNS))
        t = Text()
        if not status.pods:
            t.append("No pods. Press d to deploy kubernetes-bootcamp (the seed runs 9 replicas, 3 per node).",
                     style="yellow")
        else:
            t.append(f"deployment kubernetes-bootcamp: {len(status.pods)} replicas", style="bold")
            for s in status.services:
                t.append(f" · service {s.name}: {s.type} port {s.port} → node port {s.node_port} on every node")
            if not status.services:
                t.append(" · not exposed" + ("" if self.lab_app.read_only else " (e exposes a NodePort)"),
                         style="dim")
        self.query_one("#pods-service", Static).update(t)

    def show_reply(self, text: Text) -> None:
        self.query_one("#pods-reply", Static).update(text)
