"""Vagrant's own output: `--machine-readable` lines parsed, and streamed into the Reporter line by
line (tagged with their machine) as vagrant writes them."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, Iterator, TextIO

from ..lab.events import Reporter

_PREFIX = re.compile(r"^(?:==> |    )?(?P<node>[A-Za-z0-9_.-]+): ?(?P<text>.*)$")


_HUMAN_PREFIX = re.compile(r"^(?:==> |    )(?P<node>[A-Za-z0-9_.-]+): (?P<text>.*)$")
# Vagrant's and vagrant-libvirt's progress updates (a box add, a volume upload): thousands of them,
# "\r"-separated; never shown (the step's own line says what is being done).
_PROGRESS = re.compile(r"^\s*(?:\[Progress\]|Progress:)\s*\d+%")


def unescape_machine(value: str) -> str:
    return value.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


@dataclass(frozen=True)
class MachineLine:
    timestamp: int
    target: str
    kind: str
    data: tuple[str, ...]


def parse_machine_line(line: str) -> MachineLine | None:
    """One line of `vagrant --machine-readable`: timestamp,target,type,data... (commas in data
    escaped as %!(VAGRANT_COMMA), newlines as \\n), or None for anything else."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return MachineLine(int(parts[0]), parts[1], parts[2], tuple(unescape_machine(p) for p in parts[3:]))


_BATCH_MARK = "Please handle this error then try again:"


def batch_cause(message: str) -> str:
    """The first machine's own error in a BatchMultiError ("An error occurred while executing
    multiple actions in parallel. ... Please handle this error then try again: <cause>"), where the
    whole message would say nothing; any other message as it is."""
    if _BATCH_MARK not in message:
        return message
    cause = message.split(_BATCH_MARK, 1)[1].strip().split("\n\n", 1)[0]
    return cause or message


class VagrantOutput:
    """Turns vagrant's output into Reporter lines: ui lines tagged with their machine, ui errors
    and error-exit on stderr, and whatever vagrant writes to its stderr on stderr."""

    HIDDEN = {"metadata", "action", "box-name", "box-version", "provider-name", "state",
              "state-human-short", "state-human-long", "ssh-config"}

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.errors: list[str] = []
        self._paragraph = False  # the last stderr line continues a paragraph (no blank line since)

    def feed(self, raw: str, stream: str) -> None:
        m = parse_machine_line(raw)
        if m is None:  # human output (e.g. on stderr): "==> node: text" or "    node: text"
            kept = [p for p in raw.rstrip("\r\n").split("\r") if not _PROGRESS.match(p.split(": ", 1)[-1])]
            if not kept:
                return
            text = kept[-1]
            if not text.strip():
                self._paragraph = False
                return
            hm = _HUMAN_PREFIX.match(text)
            node, text = (hm.group("node"), hm.group("text")) if hm else (None, text)
            self.reporter.line(text, node=node, stream=stream)
            if stream == "stderr":
                # Vagrant wraps one message over several lines: a paragraph is one error.
                if self._paragraph:
                    self.errors[-1] += " " + text.strip()
                else:
                    self.errors.append(text.strip())
                self._paragraph = True
            return
        if m.kind == "error-exit":
            message = m.data[1] if len(m.data) > 1 else ",".join(m.data)
            self.errors.append(" ".join(batch_cause(message).split()))
            self.reporter.line(message, node=m.target or None, stream="stderr")
            return
        if m.kind != "ui" or not m.data:
            return
        ui_type, message = m.data[0], ",".join(m.data[1:])
        out_stream = "stderr" if ui_type == "error" or stream == "stderr" else "stdout"
        for part in message.splitlines() or [""]:
            if _PROGRESS.match(part):
                continue
            node = m.target or None
            pm = _PREFIX.match(part)
            if pm and (node is None or pm.group("node") == node):
                node, part = pm.group("node"), pm.group("text")
            if part.strip() and not _PROGRESS.match(part):
                self.reporter.line(part, node=node, stream=out_stream)

    def last_error(self) -> str:
        """The last error, cut to its first sentence (Vagrant's messages run for lines)."""
        if not self.errors:
            return ""
        first = self.errors[-1].split(". ")[0].strip()
        return first if first.endswith((".", "!", ")")) else first + "."


@contextlib.contextmanager
def line_pipe(on_line: Callable[[str], None]) -> Iterator[TextIO]:
    """A file a subprocess can write to; each line it writes is passed to on_line as it comes."""
    rfd, wfd = os.pipe()
    reader = os.fdopen(rfd, "r", encoding="utf-8", errors="replace", newline="")

    def pump() -> None:
        with reader:
            for line in reader:
                on_line(line)

    t = threading.Thread(target=pump, name="vagrant-output", daemon=True)
    t.start()
    writer = os.fdopen(wfd, "w")
    try:
        yield writer
    finally:
        writer.close()
        t.join(timeout=30)
