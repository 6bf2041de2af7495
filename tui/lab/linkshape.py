"""A node's underlay link impaired with the kernel's own tools, as node commands (data) and parsers.

`ipsec-lab link NODE ...`, the Nodes screen's dialog and the recover-underlay-loss check run these
through `Backend.exec` on the node, so they act inside the node (its namespace, or the VM) and
never on this machine's own interfaces. Nothing here runs anything.

- rate: `tbf` (root qdisc, handle 1:).
- delay, jitter: `netem` (under the tbf when both, else the root qdisc). Some kernels lack netem
  ("Specified qdisc kind is unknown"); the apply script asks the node's kernel first (a netem
  qdisc on its loopback, removed at once) and refuses before it changes anything.
- loss: netem's where the node's kernel has netem, else an iptables random-drop rule
  (`-m statistic --mode random --probability P`) on the packets leaving the underlay interface
  (mangle POSTROUTING, marked with a comment so that it is found and removed again).
- cut: the backend's set_underlay_link (what recover-underlay-outage does), seen from the node
  as the interface's operstate.

Every impairment acts on what leaves the node on its underlay (egress), as netem does.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import asdict, dataclass

from .commands import FIND_UNDERLAY_IF, UNDERLAY_ENV, Argv
from .parsers import sections
from .errors import UsageError

IMPAIR_COMMENT = "ipsec-lab-impair"  # marks the random-drop rule
NO_NETEM_EXIT = 42  # the apply script's exit code when it needs netem and the kernel has none
NETEM_MISSING = ("needs the kernel's netem qdisc, which this node's kernel lacks (\"Specified qdisc kind is unknown\"); "
                 "--loss (an iptables random drop here) and --rate (tbf) work without it")

# The node's underlay interface: the one provisioning recorded on a VM, else the one holding $1.
_RESOLVE_DEV = (f'dev=$(. {UNDERLAY_ENV} 2>/dev/null && echo "$UNDERLAY_IF"); [ -n "$dev" ] || dev=$({FIND_UNDERLAY_IF}); '
                '[ -n "$dev" ] || { echo "no interface holds $1" >&2; exit 1; }; ')
_DROP_RULES = f"iptables -w -t mangle -S POSTROUTING | grep -- '--comment {IMPAIR_COMMENT}'"
_CLEAR = ('tc qdisc del dev "$dev" root 2>/dev/null; '
          f"{_DROP_RULES} | sed 's/^-A /-D /' | while read -r r; do eval iptables -w -t mangle \"$r\"; done; ")
_NETEM_PROBE = "netem=no; tc qdisc add dev lo root netem 2>/dev/null && { tc qdisc del dev lo root; netem=yes; }; "


@dataclass(frozen=True)
class Impairment:
    """What to set on a link (None: not that). An empty one is no impairment."""

    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None
    rate_mbit: float | None = None

    def __post_init__(self) -> None:
        for name, v in (("--delay", self.delay_ms), ("--jitter", self.jitter_ms), ("--loss", self.loss_pct),
                        ("--rate", self.rate_mbit)):
            if v is not None and (not math.isfinite(v) or v < 0):
                raise UsageError(f"{name} {v:g}: give a number of 0 or more")
        if self.loss_pct is not None and not 0 < self.loss_pct <= 100:
            raise UsageError(f"--loss {self.loss_pct:g}: a percentage above 0, at most 100")
        if self.rate_mbit is not None and self.rate_mbit <= 0:
            raise UsageError(f"--rate {self.rate_mbit:g}: megabits per second, above 0")
        if self.jitter_ms is not None and not self.delay_ms:
            raise UsageError("--jitter varies a delay: give --delay too")

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.delay_ms, self.jitter_ms, self.loss_pct, self.rate_mbit))

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms) or bool(self.jitter_ms)


def _num(v: float) -> str:
    return f"{v:g}"


def tbf_args(rate_mbit: float) -> list[str]:
    """tbf at `rate_mbit`: a burst of 10 ms at that rate (at least two full frames), 50 ms of queue."""
    burst = max(3200, int(rate_mbit * 1e6 / 8 / 100))
    return ["tbf", "rate", f"{_num(rate_mbit)}mbit", "burst", str(burst), "latency", "50ms"]


def netem_args(imp: Impairment, *, loss: bool) -> list[str]:
    args = ["netem"]
    if imp.delay_ms:
        args += ["delay", f"{_num(imp.delay_ms)}ms"]
        if imp.jitter_ms:
            args += [f"{_num(imp.jitter_ms)}ms"]
    if loss and imp.loss_pct:
        args += ["loss", f"{_num(imp.loss_pct)}%"]
    return args


def drop_rule(loss_pct: float) -> list[str]:
    """The iptables random-drop rule (mangle POSTROUTING) for `loss_pct` on "$dev"."""
    return ["-o", "$dev", "-m", "statistic", "--mode", "random", "--probability", f"{loss_pct / 100:.4f}",
            "-m", "comment", "--comment", IMPAIR_COMMENT, "-j", "DROP"]


def _q(args: list[str]) -> str:
    """shlex.join, but "$dev" stays a shell variable."""
    return " ".join('"$dev"' if a == "$dev" else shlex.quote(a) for a in args)


def apply_script(imp: Impairment) -> str:
    """The shell script that replaces the link's impairment with `imp` ($1: the node's underlay
    address). It first asks the kernel for netem; without it, and with a delay asked for, it exits
    NO_NETEM_EXIT having changed nothing. It prints `netem yes|no`."""
    lines = [_RESOLVE_DEV, _NETEM_PROBE]
    if imp.needs_netem:
        lines.append(f'[ "$netem" = yes ] || {{ echo "netem no"; exit {NO_NETEM_EXIT}; }}; ')
    lines.append(_CLEAR)
    netem_root = ["tc", "qdisc", "add", "dev", "$dev", "root"]
    if imp.rate_mbit:
        lines.append(_q(["tc", "qdisc", "add", "dev", "$dev", "root", "handle", "1:", *tbf_args(imp.rate_mbit)]) + " || exit 1; ")
        netem_root = ["tc", "qdisc", "add", "dev", "$dev", "parent", "1:1", "handle", "10:"]
    if imp.needs_netem:
        lines.append(_q([*netem_root, *netem_args(imp, loss=True)]) + " || exit 1; ")
    elif imp.loss_pct:
        lines.append('if [ "$netem" = yes ]; then '
                     + _q([*netem_root, *netem_args(imp, loss=True)]) + " || exit 1; else "
                     + _q(["iptables", "-w", "-t", "mangle", "-A", "POSTROUTING", *drop_rule(imp.loss_pct)])
                     + " || exit 1; fi; ")
    lines.append('echo "netem $netem"')
    return "".join(lines)


def apply_argv(imp: Impairment, address: str) -> Argv:
    return ["sh", "-c", apply_script(imp), "link", address]


def clear_argv(address: str) -> Argv:
    """Remove every qdisc and drop rule the lab put on the node's underlay interface."""
    return ["sh", "-c", _RESOLVE_DEV + _CLEAR + "true", "link", address]


def probe_argv(address: str) -> Argv:
    """The link as the node sees it, in "@@name" sections: dev, operstate, tc's qdiscs, drop rules."""
    return ["sh", "-c", _RESOLVE_DEV + 'echo @@dev; echo "$dev"; echo @@oper; cat /sys/class/net/"$dev"/operstate; '
            'echo @@tc; tc qdisc show dev "$dev"; echo @@drop; ' + _DROP_RULES + "; true", "link", address]


def netem_probe_argv() -> Argv:
    """Prints `yes` where the kernel has netem (a netem qdisc on lo, removed at once), else `no`."""
    return ["sh", "-c", _NETEM_PROBE + 'echo "$netem"']


# -- what a node reports ----------------------------------------------------------------------
@dataclass(frozen=True)
class LinkState:
    """A node's underlay link now: which impairments are on it (None: none of that kind)."""

    dev: str
    cut: bool = False
    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None
    loss_by: str | None = None  # "netem" or "iptables"
    rate_mbit: float | None = None

    @property
    def clean(self) -> bool:
        return not self.cut and all(v is None for v in (self.delay_ms, self.jitter_ms, self.loss_pct, self.rate_mbit))

    def describe(self) -> str:
        """One short line ("" when the link is clean), as the status table and Nodes screen show it."""
        parts = []
        if self.cut:
            parts.append("CUT")
        if self.delay_ms is not None:
            parts.append(f"delay {_num(self.delay_ms)} ms" + (f" ±{_num(self.jitter_ms)} ms" if self.jitter_ms else ""))
        if self.loss_pct is not None:
            parts.append(f"loss {_num(self.loss_pct)}%" + (" (iptables)" if self.loss_by == "iptables" else ""))
        if self.rate_mbit is not None:
            parts.append(f"rate {_num(self.rate_mbit)} Mbit/s")
        return ", ".join(parts)

    def to_json(self) -> dict[str, object]:
        return asdict(self) | {"summary": self.describe()}


_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE = {"bit": 1e-6, "kbit": 1e-3, "mbit": 1.0, "gbit": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"not a time: {text!r}")
    return round(float(m.group(1)) * _UNITS_S[m.group(2)] * 1000, 3)


def parse_probe(text: str) -> LinkState:
    """probe_argv's output as a LinkState (tc's text form, as iproute2 prints it)."""
    s = sections(text)
    dev = s.get("dev", "").strip()
    oper = s.get("oper", "").strip()
    delay = jitter = loss = rate = None
    loss_by = None
    for line in s.get("tc", "").splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "qdisc":
            continue
        if words[1] == "tbf" and "rate" in words:
            m = re.fullmatch(r"([\d.]+)([KMG]?bit)", words[words.index("rate") + 1], re.I)
            if m:
                rate = round(float(m.group(1)) * _RATE[m.group(2).lower()], 3)
        elif words[1] == "netem":
            if "delay" in words:
                i = words.index("delay")
                delay = _ms(words[i + 1])
                if i + 2 < len(words) and re.fullmatch(r"[\d.]+(us|ms|s)", words[i + 2]):
                    jitter = _ms(words[i + 2])
                if delay == 0 and not jitter:
                    delay = None
            if "loss" in words:
                value = words[words.index("loss") + 1]
                if value == "random":  # older iproute2: "loss random 20%"
                    value = words[words.index("loss") + 2]
                loss, loss_by = float(value.rstrip("%")), "netem"
    for line in s.get("drop", "").splitlines():
        words = line.split()
        if "--probability" in words:
            loss = round(float(words[words.index("--probability") + 1]) * 100, 2)
            loss_by = "iptables"
    return LinkState(dev=dev, cut=oper in ("down", "lowerlayerdown"), delay_ms=delay, jitter_ms=jitter,
                     loss_pct=loss, loss_by=loss_by, rate_mbit=rate)
