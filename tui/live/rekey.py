"""Rekeys: make strongSwan rekey a CHILD SA (or the IKE SA) now while a 10 ms ping loop runs
across the tunnel, and spot the rekeys that happen by themselves (`up --rekey-s N`) in status
polling: a CHILD SA's SPIs change while its IKE SA stays.

Headless; the CLI's `rekey`, the TUI's `k` and the rekey-no-loss check share it. Both backends:
the command is swanctl's, run on the node through Backend.exec.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..lab import commands, probes
from ..lab.errors import LabError
from .text import fmt_gap

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..lab.status import LabStatus, TunnelStatus

REKEY_WAIT_S = 10.0  # the new SA must show in strongSwan's list within this long
PING_SECONDS = 3.0  # the ping waits this long for a reply before the rekey and after it (as the fault watch's)
SETTLE_S = 0.5  # the ping keeps running this long after the new SA showed (the old one is deleted then)

_SEQ = re.compile(r"icmp_seq=(\d+)")


@dataclass(frozen=True)
class SaIds:
    """What identifies a tunnel end's SAs: the IKE SPI (local) and the CHILD SA's ESP SPIs."""

    ike: str
    spi_in: str
    spi_out: str

    @classmethod
    def of(cls, t: "TunnelStatus | None") -> "SaIds | None":
        if t is None or not t.up:
            return None
        d = t.detail
        return cls(str(d.get("ike_spi_local", "")), str(d.get("spi_in", "")), str(d.get("spi_out", "")))

    @property
    def child(self) -> str:
        return f"in {self.spi_in} out {self.spi_out}"


def lost_replies(ping_output: str) -> tuple[int, int]:
    """(replies, lost) of `ping -D` output: lost = sequence numbers missing between the first
    reply and the last (one sent while the loop was stopped is not counted)."""
    seqs = sorted({int(m.group(1)) for line in ping_output.splitlines() if " bytes from" in line
                   for m in [_SEQ.search(line)] if m})
    if not seqs:
        return 0, 0
    return len(seqs), (seqs[-1] - seqs[0] + 1) - len(seqs)


@dataclass
class RekeyReport:
    """One rekey made on purpose, measured. `summary` is the line the CLI prints and the TUI shows."""

    node: str
    conn: str
    peer: str
    kind: str  # "CHILD" or "IKE"
    ran: str
    old: SaIds
    new: SaIds | None  # None: no new SA within REKEY_WAIT_S
    seconds: float | None  # from the command to the first sample with the new SA
    gap: float | None  # the ping's largest silence from the rekey on; None: no reply after it
    replies: int
    lost: int
    ping_error: str = ""

    @property
    def rekeyed(self) -> bool:
        return self.new is not None

    @property
    def parts(self) -> list[str]:
        parts = [f"{self.node} {self.conn}: {self.ran}"]
        if self.new is None:
            parts.append(f"no new {self.kind} SA within {REKEY_WAIT_S:g} s (still {self._ids(self.old)})")
        else:
            parts.append(f"{self.kind} SA rekeyed in {fmt_gap(self.seconds)}: {self._ids(self.old)} -> {self._ids(self.new)}")
        if self.ping_error:
            parts.append(f"data plane: {self.ping_error}")
        elif self.gap is None:
            parts.append(f"data plane: no ping reply within {PING_SECONDS:g} s after the rekey")
        else:
            parts.append(f"data plane: largest gap between replies {fmt_gap(self.gap)}, {self.lost} lost of "
                         f"{self.replies + self.lost} (one ping every 10 ms, {self.node} -> {self.peer})")
        return parts

    def _ids(self, ids: SaIds) -> str:
        return f"IKE SPI {ids.ike}" if self.kind == "IKE" else f"ESP SPIs {ids.child}"

    @property
    def summary(self) -> str:
        return "; ".join(self.parts)


def _changed(old: SaIds, new: SaIds | None, ike: bool) -> bool:
    if new is None:
        return False
    if ike:  # the CHILD SAs move to the new IKE SA unchanged
        return new.ike != old.ike and new.spi_in == old.spi_in
    # under the same IKE SA: new SAs under a new IKE SA mean the tunnel was re-established, not rekeyed
    return new.ike == old.ike and new.spi_in != old.spi_in and new.spi_out != old.spi_out


def rekey_now(backend: "Backend", node: str, conn: str, *, ike: bool = False, wait_s: float = REKEY_WAIT_S,
              on_status: Callable[["LabStatus"], None] | None = None) -> RekeyReport:
    """Rekey `conn` on `node` (`swanctl --rekey --child|--ike CONN` through Backend.exec) while
    `node` pings its peer's cni0 every 10 ms through the tunnel; wait for the new SA; measure.
    An unknown node or connection is a UsageError; a tunnel that is not up, a LabError."""
    spec = backend.spec()
    spec.node(node)
    tunnel = spec.tunnel(node, conn)
    st = backend.status()
    cur = st.tunnel(node, conn)
    old = SaIds.of(cur)
    if old is None:
        state = f"{cur.ike_state}/{cur.child_state}" if cur is not None else "DOWN"
        raise LabError(f"{conn} on {node} is {state}: nothing to rekey (`ipsec-lab tunnel-up {node} {conn}` starts it)")
    argv = commands.swanctl_rekey(conn, ike=ike)
    ip = str(spec.node(tunnel.peer).cni0_ip)
    loop = probes.PingLoop(backend, node, ip, max_seconds=wait_s + 2 * PING_SECONDS + 5)
    ping_error = ""
    new: SaIds | None = None
    seconds: float | None = None
    first = None
    try:
        if loop.wait_reply_after(0, PING_SECONDS) is None:
            ping_error = f"no ping reply from {tunnel.peer} ({ip}) before the rekey: no gap measured"
        time.sleep(0.2)
        t0, mono0 = time.time(), time.monotonic()
        res = backend.exec(node, argv, timeout=15)
        if not res.ok:
            raise LabError(f"{commands.shown(argv)} failed on {node}: {(res.stderr or res.stdout).strip()[-200:]}")
        while time.monotonic() - mono0 < wait_s:
            st = backend.status()
            ids = SaIds.of(st.tunnel(node, conn))
            if _changed(old, ids, ike):
                new, seconds = ids, time.monotonic() - mono0
                if on_status:
                    on_status(st)
                break
            time.sleep(0.01)
        time.sleep(SETTLE_S)
        first = loop.wait_reply_after(time.time(), PING_SECONDS)
    finally:
        loop.stop()
    replies, lost = lost_replies(loop.text())
    gap = loop.gap(after=t0 - 0.001) if first is not None else None
    return RekeyReport(node, conn, tunnel.peer, "IKE" if ike else "CHILD", commands.shown(argv), old, new, seconds,
                       gap, replies, lost, ping_error)


@dataclass(frozen=True)
class SeenRekey:
    """A rekey seen between two status samples (on its own, `up --rekey-s`, or from a key)."""

    node: str
    conn: str
    peer: str
    kind: str  # CHILD (ESP SPIs changed, the IKE SA stayed) or IKE (the IKE SPI changed, the CHILD SA stayed)
    old: SaIds
    new: SaIds
    at: float

    def line(self, gap: str = "") -> str:
        ids = (f"IKE SPI {self.old.ike} -> {self.new.ike}" if self.kind == "IKE"
               else f"ESP SPIs {self.old.child} -> {self.new.child}")
        return f"{self.node} {self.conn} {self.kind} SA rekeyed: {ids}" + (f"; {gap}" if gap else "")


def rekeys_between(prev: "LabStatus | None", cur: "LabStatus", at: float | None = None) -> list[SeenRekey]:
    """The rekeys between two samples, one per node pair (the first end listed). A tunnel that went
    down and came back (new IKE and CHILD SAs at once) is no rekey: the fault watch reports it."""
    if prev is None:
        return []
    when = time.time() if at is None else at
    out: list[SeenRekey] = []
    seen: set[frozenset[str]] = set()
    for t in cur.tunnels:
        a, b = SaIds.of(prev.tunnel(t.node, t.name)), SaIds.of(t)
        if a is None or b is None or frozenset((t.node, t.peer)) in seen:
            continue
        if a.ike == b.ike and a.spi_in != b.spi_in and a.spi_out != b.spi_out:
            kind = "CHILD"
        elif a.ike != b.ike and a.spi_in == b.spi_in:
            kind = "IKE"
        else:
            continue
        seen.add(frozenset((t.node, t.peer)))
        out.append(SeenRekey(t.node, t.name, t.peer, kind, a, b, when))
    return out


class RekeyLog:
    """The rekeys a face has seen, newest last, with what the data plane did across each: the 10 ms
    ping's measurement when the rekey was made on purpose (rekey_now), else nothing yet (the face
    says what its slower probes saw). Thread-safe: status polls and action workers write."""

    def __init__(self, keep: int = 50) -> None:
        self._events: list[tuple[SeenRekey, str]] = []
        self._keep = keep
        self._lock = threading.Lock()
        self._prev: "LabStatus | None" = None
        self._prev_at = float("-inf")

    def observe(self, cur: "LabStatus", at: float) -> list[SeenRekey]:
        """Compare with the last status observed; one taken earlier than that (a poll that crossed
        a fault watch's samples) is skipped, or it would show the rekey backwards."""
        with self._lock:
            if at < self._prev_at:
                return []
            seen = rekeys_between(self._prev, cur, at)
            self._prev, self._prev_at = cur, at
            self._events.extend((r, "") for r in seen)
            del self._events[:-self._keep]
        return seen

    def measured(self, report: RekeyReport, at: float) -> None:
        """Attach a rekey_now measurement to the event status polling saw for it (the latest of the
        pair within 30 s), or add it when no poll saw it."""
        if report.new is None:
            return
        note = report.parts[-1].removeprefix("data plane: ")
        pair = frozenset((report.node, report.peer))
        with self._lock:
            for i in range(len(self._events) - 1, -1, -1):
                ev, _ = self._events[i]
                if frozenset((ev.node, ev.peer)) == pair and ev.kind == report.kind and abs(ev.at - at) < 30:
                    self._events[i] = (ev, note)
                    return
            self._events.append((SeenRekey(report.node, report.conn, report.peer, report.kind, report.old, report.new, at), note))
            del self._events[:-self._keep]

    def recent(self, n: int = 6) -> list[tuple[SeenRekey, str]]:
        with self._lock:
            return list(self._events[-n:])
