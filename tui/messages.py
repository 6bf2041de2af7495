"""Every message a worker thread posts to the app, in one place.

Each is a dataclass (Textual's Message initialises itself in __post_init__). Threads never set attributes the UI reads: they post one of these (App.post_message is
thread-safe) and the app's handler, on the UI thread, sets its reactives. Screens watch those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from .checks.base import CheckResult
    from .lab.status import LabStatus
    from .live.logs import Progress


@dataclass(eq=False)
class StatusUpdated(Message):
    """A fresh status from the poller or a fault watch, taken at `at` (the app's clock)."""

    status: "LabStatus"
    at: float


@dataclass(eq=False)
class LinksUpdated(Message):
    """Nodes' underlay links as the nodes report them: node -> the LINK column's text ("?": not asked)."""

    links: dict[str, str]


@dataclass(eq=False)
class StatusFailed(Message):
    """The status could not be read (the lab went away, a node is mid-reboot)."""

    error: str


@dataclass(eq=False)
class PhaseChanged(Message):
    """What the app is doing while it has no status yet (shown in the lab bar)."""

    text: str


@dataclass(eq=False)
class ProgressChanged(Message):
    """A bring-up step started or finished."""

    progress: "Progress"


@dataclass(eq=False)
class LabReady(Message):
    """The lab is up (`created`: this app brought it up) or attached."""

    created: bool


@dataclass(eq=False)
class ActionDone(Message):
    """An action worker finished: its one-line outcome, or the error."""

    title: str
    ok: bool
    message: str


@dataclass(eq=False)
class FaultChanged(Message):
    """A fault watch started (the "under way" line) or ended (its summary)."""

    text: str


@dataclass(eq=False)
class CheckDone(Message):
    """One check finished; `result` None: the whole run ended."""

    result: "CheckResult | None"


@dataclass(eq=False)
class TutorialChanged(Message):
    """The tutorial's step, output or check results changed; `busy` is what it is doing now ("" idle)."""

    busy: str


@dataclass(eq=False)
class CurlReplied(Message):
    """A curl from a node answered (code 0: no answer)."""

    node: str
    url: str
    code: int
    body: str


@dataclass(eq=False)
class CaptureInterfaces(Message):
    """A node's interfaces for the capture view (tui.live.capture.Interface), or why they are unknown."""

    node: str
    interfaces: list
    error: str = ""


@dataclass(eq=False)
class CaptureLines(Message):
    """The capture worker queued new decoded lines (the capture view drains its queue)."""


@dataclass(eq=False)
class CaptureVerdict(Message):
    """What the capture's pcap shows so far; `alarm`: pod traffic in clear on the underlay."""

    text: str
    alarm: bool
    good: bool


@dataclass(eq=False)
class CaptureEnded(Message):
    """The capture stopped (stop, count reached, the node or lab gone), or could not start (`error`)."""

    error: str = ""
