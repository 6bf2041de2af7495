"""Traffic probes run on a node through the Backend: HTTP to many pods in one command, ping.

Used by the tests, the check suite and the TUI, on every backend (they only need `exec`).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from . import commands

if TYPE_CHECKING:
    from ..backends.base import Backend

_MARK = "~~ipsec-lab:%{http_code}:%{url_effective}~~"  # not starting with @: curl reads -w @file
_SPLIT = re.compile(r"~~ipsec-lab:(\d{3}):(\S*?)~~\n?")


@dataclass(frozen=True)
class HttpReply:
    url: str
    code: int  # 0 when nothing answered
    body: str

    @property
    def ok(self) -> bool:
        return self.code == 200


def curl_argv(urls: Sequence[str], timeout: float = 2.0) -> list[str]:
    """One curl for many URLs, one after the other; each reply is followed by a marker naming its
    code and URL. (curl's --parallel would interleave the bodies, so it is not used.)"""
    return ["curl", "-s", "--connect-timeout", str(min(1.0, timeout)), "-m", str(timeout),
            "-w", _MARK + "\\n", *urls]


def parse_curl(urls: Sequence[str], stdout: str) -> list[HttpReply]:
    parts = _SPLIT.split(stdout)
    # parts = [body0, code0, url0, body1, code1, url1, ..., tail]
    got = [HttpReply(parts[i + 2], int(parts[i + 1]), parts[i].strip()) for i in range(0, len(parts) - 2, 3)]
    return [got[i] if i < len(got) else HttpReply(u, 0, "") for i, u in enumerate(urls)]


def http_get_many(backend: "Backend", node: str, urls: Sequence[str], timeout: float = 2.0) -> list[HttpReply]:
    """GET each URL from `node` with one curl process; one reply per URL, in the order given."""
    if not urls:
        return []
    res = backend.exec(node, curl_argv(urls, timeout), timeout=timeout * len(urls) + 10)
    return parse_curl(urls, res.stdout)


def ping(backend: "Backend", node: str, ip: str, count: int = 1, wait: float = 1.0, size: int | None = None,
         dont_fragment: bool = False) -> bool:
    argv = commands.ping(ip, count=count, wait=wait, interval=0.05 if count > 1 else None, size=size,
                         dont_fragment=dont_fragment)
    return backend.exec(node, argv, timeout=count * wait + 10).ok


def parse_fan_out(stdout: str) -> dict[str, bool]:
    """What commands.ping_fan_out printed: label -> answered."""
    out: dict[str, bool] = {}
    for line in stdout.splitlines():
        bits = line.split()
        if len(bits) == 2 and bits[1] in ("up", "down"):
            out[bits[0]] = bits[1] == "up"
    return out


def ping_many(backend: "Backend", node: str, targets: Sequence[tuple[str, str]], wait: float = 1.0) -> dict[str, bool]:
    """One ping from `node` to each (label, ip) at once, in one command; label -> answered (a
    target the command never reported on counts as not answered)."""
    if not targets:
        return {}
    res = backend.exec(node, commands.ping_fan_out(targets, wait), timeout=wait + 10)
    got = parse_fan_out(res.stdout)
    return {label: got.get(label, False) for label, _ in targets}


def bootcamp_reply(pod_name: str) -> str:
    return f"Hello Kubernetes bootcamp! | Running on: {pod_name} | v=1"


# -- a fast ping loop, for measuring how long traffic stops during a fault ---------------------
PING_INTERVAL = 0.01
_TS = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")


def reply_times(ping_output: str) -> list[float]:
    """The time of each reply in `ping -D` output (seconds since the epoch), in order."""
    return [float(m.group(1)) for m in map(_TS.match, ping_output.splitlines()) if m]


def longest_gap(stamps: Sequence[float], interval: float = PING_INTERVAL) -> float:
    """The longest silence between two replies, less the ping interval (the one ping-gap rule:
    a ping every `interval` that never missed has a gap of 0). inf with fewer than two replies."""
    if len(stamps) < 2:
        return float("inf")
    return max(0.0, max(b - a for a, b in zip(stamps, stamps[1:])) - interval)


def _loop_count(seconds: float, interval: float) -> int:
    """A ping loop is bounded by a count (-c), not by -w: with -w, iputils ping exits at the first ICMP
    error, and on kernel-xfrm an XFRM interface answers a packet it has no SA for yet (a tunnel being
    re-established) with "Destination Host Unreachable"; with -c errors only count."""
    return max(1, round(seconds / interval))


def ping_gap(backend: "Backend", node: str, ip: str, seconds: float = 3, interval: float = PING_INTERVAL) -> tuple[float, int]:
    """Ping `ip` from `node` every `interval` for `seconds`: (longest_gap of the replies, replies)."""
    argv = commands.ping(ip, count=_loop_count(max(1, round(seconds)), interval), wait=0.5, interval=interval,
                         timestamps=True, quiet=False)
    res = backend.exec(node, argv, timeout=seconds + 10)
    stamps = reply_times(res.stdout)
    return longest_gap(stamps, interval), len(stamps)


class PingLoop:
    """`ping -D -i 0.01` from a node, running while a fault happens; gap() is the longest silence."""

    def __init__(self, backend: "Backend", node: str, ip: str, max_seconds: float) -> None:
        argv = commands.ping(ip, count=_loop_count(int(max_seconds) + 1, PING_INTERVAL), wait=0.5,
                             interval=PING_INTERVAL, timestamps=True, quiet=False)
        # Reply times come from the node's clock (ping -D); faults are timed by ours.
        self.offset = backend.clock_offset(node)
        self.started = time.time()
        self._p = backend.stream(node, argv)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._p.lines():
            self._lines.append(line)

    def text(self) -> str:
        """What ping printed so far (tui.live.rekey counts lost replies from its icmp_seq)."""
        return "".join(list(self._lines))

    def replies(self) -> list[float]:
        """Reply times on this machine's clock."""
        return [t - self.offset for t in reply_times("".join(list(self._lines)))]

    def wait_reply_after(self, t: float, timeout: float) -> float | None:
        """The first reply later than wall-clock time t, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [s for s in self.replies() if s > t]
            if later:
                return later[0]
            if self._p.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        return None

    def stop(self) -> None:
        self._p.stop()
        self._reader.join(timeout=5)

    def gap(self, after: float | None = None) -> float:
        """Longest silence between replies (from `after` on), less the ping interval."""
        stamps = self.replies()
        if after is not None:
            before = [s for s in stamps if s <= after]
            stamps = before[-1:] + [s for s in stamps if s > after]
        return longest_gap(stamps)
