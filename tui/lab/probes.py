"""Traffic probes run on a node through the Backend: HTTP to many pods in one command, ping.

Used by the tests, the check suite and the TUI, on every backend (they only need `exec`).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..backends.base import Backend

_MARK = "~~ipsec-lab:%{http_code}~~"  # not starting with @: curl reads -w @file
_SPLIT = re.compile(r"~~ipsec-lab:(\d{3})~~\n?")


@dataclass(frozen=True)
class HttpReply:
    url: str
    code: int  # 0 when nothing answered
    body: str

    @property
    def ok(self) -> bool:
        return self.code == 200


def http_get_many(backend: "Backend", node: str, urls: Sequence[str], timeout: float = 2.0) -> list[HttpReply]:
    """GET each URL from `node` with one curl process; one reply per URL, in order."""
    if not urls:
        return []
    argv = ["curl", "-s", "-m", str(timeout), "-w", _MARK + "\\n"]
    for u in urls:
        argv += [u]
    res = backend.exec(node, argv, timeout=timeout * len(urls) + 10)
    parts = _SPLIT.split(res.stdout)
    # parts = [body0, code0, body1, code1, ..., tail]
    replies = []
    for i, url in enumerate(urls):
        if 2 * i + 1 < len(parts):
            replies.append(HttpReply(url, int(parts[2 * i + 1]), parts[2 * i].strip()))
        else:
            replies.append(HttpReply(url, 0, ""))
    return replies


def ping(backend: "Backend", node: str, ip: str, count: int = 1, wait: float = 1.0, size: int | None = None,
         dont_fragment: bool = False) -> bool:
    argv = ["ping", "-n", "-q", "-c", str(count), "-W", str(wait)]
    if count > 1:
        argv += ["-i", "0.05"]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    return backend.exec(node, argv + [ip], timeout=count * wait + 10).ok


def bootcamp_reply(pod_name: str) -> str:
    return f"Hello Kubernetes bootcamp! | Running on: {pod_name} | v=1"


# -- a fast ping loop, for measuring how long traffic stops during a fault ---------------------
PING_INTERVAL = 0.01
_TS = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")


class PingLoop:
    """`ping -D -i 0.01` from a node, running while a fault happens; gap() is the longest silence."""

    def __init__(self, backend: "Backend", node: str, ip: str, max_seconds: float) -> None:
        import subprocess

        argv = backend.node_argv(node, ["ping", "-n", "-D", "-i", str(PING_INTERVAL), "-W", "0.5",
                                        "-w", str(int(max_seconds) + 1), ip])
        self.started = time.time()
        self._p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._p.stdout is not None
        for line in self._p.stdout:
            self._lines.append(line)

    def replies(self) -> list[float]:
        return [float(m.group(1)) for m in map(_TS.match, list(self._lines)) if m]

    def last_reply(self) -> float | None:
        r = self.replies()
        return r[-1] if r else None

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
        if self._p.poll() is None:
            self._p.terminate()
        try:
            self._p.wait(timeout=5)
        except Exception:
            self._p.kill()
        self._reader.join(timeout=5)

    def gap(self, after: float | None = None) -> float:
        """Longest silence between replies (from `after` on), less the ping interval."""
        stamps = self.replies()
        if after is not None:
            before = [s for s in stamps if s <= after]
            stamps = before[-1:] + [s for s in stamps if s > after]
        if len(stamps) < 2:
            return float("inf")
        return max(0.0, max(b - a for a, b in zip(stamps, stamps[1:])) - PING_INTERVAL)
