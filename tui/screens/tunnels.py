"""Tunnels: the mesh as an N x N matrix, the selected tunnel's SAs, and reachability over time."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from ..lab.status import LabStatus, TunnelStatus
from ..live.reach import Reachability, pair_of
from ..live.rekey import RekeyLog, SeenRekey
from ..live.text import bring_up_command, fmt_gap, seed_command, take_down_command
from ..widgets.matrix import TunnelMatrix, legend, state_style
from ..widgets.timeline import Timeline, timeline_text
from .base import LabScreen

MAX_ALL_PAIRS = 6  # above this, the timeline shows the pairs of the selected node


def _n(v: int) -> str:
    x = float(v)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if x < 1024 or unit == "GiB":
            return f"{v} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return str(v)


def detail_text(t: TunnelStatus | None, peer_end: TunnelStatus | None, fetched_at: float, *,
                actions: bool = True) -> Text:
    text = Text(no_wrap=False)
    if t is None:
        text.append("select a tunnel in the matrix (arrow keys)", style="dim")
        return text
    d = t.detail
    text.append(f"{t.node} ", style="bold")
    text.append(t.name, style="bold cyan")
    text.append(f" → {t.peer}\n")
    text.append("IKE SA    ")
    text.append(t.ike_state, style=state_style(t) if not t.up else "bold green")
    if t.ike_sas > 1:
        text.append(f"  ({t.ike_sas} IKE SAs: a duplicate)", style="yellow")
    text.append("\nCHILD SA  ")
    text.append(t.child_state, style="bold green" if t.child_state == "INSTALLED" else "bold red")
    text.append("\n")
    rows = [
        ("IKE proposal", d.get("ike_proposal", "—")),
        ("ESP proposal", d.get("esp_proposal", "—")),
        ("IKE SPI (local)", d.get("ike_spi_local", "—")),
        ("ESP SPI in/out", f"{d.get('spi_in', '—')} / {d.get('spi_out', '—')}"),
        ("hosts", f"{d.get('local_host', '?')} ↔ {d.get('remote_host', '?')}" + ("  (UDP-encapsulated)" if d.get("nat_encap") else "")),
        ("selectors", f"{d.get('local_ts', '—')} ↔ {d.get('remote_ts', '—')}"),
        ("bytes in/out", f"{_n(t.bytes_in)} / {_n(t.bytes_out)}"),
        ("packets in/out", f"{t.packets_in} / {t.packets_out}"),
        ("IKE up for", f"{d['ike_established_s']} s" if "ike_established_s" in d else "—"),
        ("IKE rekey in", f"{d['ike_rekey_in_s']} s" if d.get("ike_rekey_in_s") else "—"),
        ("CHILD rekey in", f"{d['child_rekey_in_s']} s" if d.get("child_rekey_in_s") else "—"),
        ("CHILD expires in", f"{d['child_expires_in_s']} s" if d.get("child_expires_in_s") else "—"),
    ]
    if "auth" in d:  # how the peer authenticated (the netns backend reads it over vici)
        rows.insert(5, ("authentication", {"pubkey": "public key (X.509)", "psk": "pre-shared key"}.get(d["auth"], d["auth"])))
        if d.get("peer_cert"):
            rows.insert(6, ("peer certificate", d["peer_cert"]))
    for k, v in rows:
        text.append(f"{k:<17}", style="dim")
        text.append(f"{v}\n")
    if peer_end is not None:
        text.append("peer end  ", style="dim")
        text.append(f"{peer_end.node} {peer_end.name}: ")
        text.append(f"{peer_end.ike_state}/{peer_end.child_state}\n", style="green" if peer_end.up else "bold red")
    text.append(f"from strongSwan over vici at {time.strftime('%H:%M:%S', time.localtime(fetched_at))}"
                f".{int(fetched_at * 1000) % 1000:03d}\n", style="dim")
    if not actions:  # a read-only view offers no key
        return text
    text.append("d ", style="bold")
    text.append("take down: ")
    text.append(take_down_command(t.name), style="bold cyan")
    text.append(f" on {t.node}\n   (the seed's ")
    text.append(seed_command(t.name), style="cyan")
    text.append(")\nu ", style="bold")
    text.append(f"bring up: {bring_up_command(t.name)}")
    text.append("\nk ", style="bold")
    text.append(f"rekey the CHILD SA: swanctl --rekey --child {t.name}")
    return text


def timeline_pairs(status: LabStatus, selected_node: str | None) -> tuple[list[tuple[str, str]], int]:
    nodes = [n.name for n in status.nodes]
    pairs = [pair_of(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]]
    if len(pairs) <= MAX_ALL_PAIRS or selected_node is None:
        return pairs[:MAX_ALL_PAIRS] if len(pairs) > MAX_ALL_PAIRS else pairs, len(pairs)
    return [p for p in pairs if selected_node in p], len(pairs)


def rekey_ping_note(reach: Reachability, ev: SeenRekey, now: float) -> str:
    """What the app's 1 s pings across the pair saw around a rekey nobody measured with a 10 ms ping."""
    tl = reach.pairs.get(pair_of(ev.node, ev.peer))
    o = tl.outages.get("ping") if tl is not None else None
    if o is not None and abs(o.start - ev.at) < 3:
        return f"data plane: the 1 s pings across the pair missed replies ({fmt_gap(o.seconds)})"
    if now - ev.at < 2:
        return "data plane: waiting for the next 1 s ping"
    return "data plane: the 1 s pings across the pair kept answering (k measures a rekey with a 10 ms ping)"


def events_text(reach: Reachability, last_fault: str, rekeys: RekeyLog | None = None, now: float | None = None) -> Text:
    text = Text()
    if last_fault:
        text.append(last_fault + "\n", style="bold yellow")
    now = time.time() if now is None else now
    rows = [(at, line, "") for at, line in reach.recent_transitions(6)]
    if rekeys is not None:
        rows += [(ev.at, ev.line(note or rekey_ping_note(reach, ev, now)), "cyan") for ev, note in rekeys.recent(6)]
    for at, line, style in sorted(rows, key=lambda r: r[0])[-8:]:
        text.append(time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d} ", style="dim")
        text.append(line + "\n", style=style or ("red" if " DOWN" in line else "green" if "UP again" in line else
                                                  "yellow" if "left ESTABLISHED" in line else ""))
    if not text:
        text.append("no tunnel has gone down or rekeyed since the app started", style="dim")
    return text


class TunnelsScreen(LabScreen):
    HELP = """# Tunnels
The matrix shows every tunnel end: row = the node that holds it, column = its peer. Colours come from
strongSwan over vici (IKE ESTABLISHED and CHILD INSTALLED is green). The panel on the right is the
selected end's IKE and CHILD SA, refreshed at least every second.

**d** takes the selected connection down with `swanctl --terminate --ike CONN` (the seed's
`ipsec down CONN`); strongSwan brings it back by itself. While it does, the app polls strongSwan every
few milliseconds and pings across the pair, so even a 3 ms gap is seen and measured: the events list and
the timeline show it. **u** initiates the connection at once.

**k** rekeys the selected tunnel's CHILD SA now (`swanctl --rekey --child CONN`) under a 10 ms ping: new
keys and SPIs, make-before-break, so no reply should be lost. Every rekey the polls see (also those
strongSwan makes by itself; `ipsec-lab up --rekey-s 30` makes them frequent) is listed in the events
with its old and new SPIs and what the data plane did across it."""

    BINDINGS = [
        Binding("d", "app.tunnel_down", "Take down", id="tunnels.down",
                tooltip="Take the selected tunnel down: swanctl --terminate --ike CONN (the seed's ipsec down CONN)"),
        Binding("u", "app.tunnel_up", "Bring up", id="tunnels.up",
                tooltip="Initiate the selected tunnel now: swanctl --initiate --child CONN"),
        Binding("k", "app.rekey_tunnel", "Rekey", id="tunnels.rekey",
                tooltip="Rekey the selected tunnel's CHILD SA now (swanctl --rekey --child CONN) under a 10 ms ping: "
                        "old and new SPIs, the largest gap"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static("Tunnels", classes="screen-title")
        with Horizontal(id="tunnels-top"):
            with Vertical(id="matrix-box"):
                yield TunnelMatrix(id="matrix", clock=self.lab_app.clock)
                yield Static(legend(), id="matrix-legend", classes="dim")
            with VerticalScroll(id="tunnel-detail-box"):
                yield Static("", id="tunnel-detail", classes="detail")
        yield Timeline("", id="timeline")
        yield Static("", id="tunnel-events", classes="events")

    def on_mount(self) -> None:
        self.query_one(TunnelMatrix).focus()
        self.watch(self.lab_app, "last_fault", self._fault_changed, init=False)

    def _fault_changed(self) -> None:
        if self.showing and self.lab_app.status is not None:
            self.render_panels(self.lab_app.status)

    def tick(self) -> None:
        if self.lab_app.status is not None:
            self.render_panels(self.lab_app.status)

    @property
    def selected_tunnel(self) -> tuple[str, str] | None:
        t = self.query_one(TunnelMatrix).selected
        return (t.node, t.name) if t is not None else None

    @property
    def selected_node(self) -> str | None:
        t = self.query_one(TunnelMatrix).selected
        return t.node if t is not None else None

    def show_status(self, status: LabStatus) -> None:
        matrix = self.query_one(TunnelMatrix)
        matrix.set_status(status)
        self.render_panels(status)

    def render_panels(self, status: LabStatus) -> None:
        app = self.lab_app
        matrix = self.query_one(TunnelMatrix)
        t = matrix.selected
        peer_end = None
        if t is not None:
            peer_end = next((x for x in status.tunnels if x.node == t.peer and x.peer == t.node), None)
        self.query_one("#tunnel-detail", Static).update(detail_text(t, peer_end, app.status_at,
                                                                      actions=not app.read_only))
        pairs, total = timeline_pairs(status, t.node if t else None)
        self.query_one(Timeline).update(timeline_text(app.reach, pairs, app.clock(), total))
        self.query_one("#tunnel-events", Static).update(events_text(app.reach, app.last_fault, app.rekeys, app.clock()))

    def on_tunnel_matrix_selected(self, event: TunnelMatrix.Selected) -> None:
        if self.lab_app.status is not None:
            self.render_panels(self.lab_app.status)

    def select(self, node: str, conn: str) -> None:
        st = self.lab_app.status
        if st is None:
            return
        t = st.tunnel(node, conn)
        if t is not None:
            self.query_one(TunnelMatrix).select(t.node, t.peer)
