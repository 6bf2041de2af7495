"""Traffic probes run on a node through the Backend: HTTP to many pods in one command, ping.

Used by the tests, the check suite and the TUI, on every backend (they only need `exec`).
"""

from __future__ import annotations

import re
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
