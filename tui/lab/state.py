"""A lab's state on disk, so that later commands (status, exec, down) find the lab.

Layout under the state root (default /run/ipsec-lab, on tmpfs like the namespaces it describes):

    <root>/<lab>.lock                   flock held by commands that change the lab
    <root>/<lab>/state.json             spec, data path, secrets, PIDs, pods, service (0600)
    <root>/<lab>/nodes/<node>/etc/      rendered config (bound over /etc/... inside the node)
    <root>/<lab>/nodes/<node>/run/      the node's private /run (wiped on reboot)
    <root>/<lab>/nodes/<node>/log/      the node's /var/log (kept across reboots)

state.json is written before the first namespace is created, so `down` can always clean up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import LabError, NotFoundError

DEFAULT_STATE_ROOT = Path("/run/ipsec-lab")


def state_root() -> Path:
    return Path(os.environ.get("IPSEC_LAB_STATE_ROOT", str(DEFAULT_STATE_ROOT)))


@dataclass(frozen=True)
class LabPaths:
    lab: str
    root: Path

    @classmethod
    def of(cls, lab: str) -> "LabPaths":
        return cls(lab, state_root())

    @property
    def dir(self) -> Path:
        return self.root / self.lab

    @property
    def lock(self) -> Path:
        return self.root / f"{self.lab}.lock"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def node_etc(self, node: str) -> Path:
        return self.node_dir(node) / "etc"

    def node_run(self, node: str) -> Path:
        return self.node_dir(node) / "run"

    def node_log(self, node: str) -> Path:
        return self.node_dir(node) / "log"

    def charon_log(self, node: str) -> Path:
        return self.node_log(node) / "charon.log"

    def vici_socket(self, node: str) -> Path:
        return self.node_run(node) / "charon.vici"


def write_file(path: Path, content: str | bytes, mode: int) -> None:
    """Write atomically with the given mode (secrets never exist with a wider mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, content.encode() if isinstance(content, str) else content)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_state(paths: LabPaths) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(paths.state_file.read_text())
        return state
    except FileNotFoundError:
        raise NotFoundError(f"no lab named {paths.lab!r} is up (start one with `ipsec-lab --lab {paths.lab} up`)") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"state of lab {paths.lab!r} is unreadable ({exc}); `ipsec-lab --lab {paths.lab} down` cleans it up") from None


def save_state(paths: LabPaths, state: dict[str, Any]) -> None:
    paths.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(paths.state_file, json.dumps(state, indent=1, sort_keys=True), 0o600)


def list_labs(root: Path | None = None) -> list[str]:
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.parent.name for p in base.glob("*/state.json"))


@contextlib.contextmanager
def lab_lock(paths: LabPaths) -> Iterator[None]:
    """Serialise commands that change one lab (the TUI and the CLI may run at once)."""
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_lab_files(paths: LabPaths) -> None:
    shutil.rmtree(paths.dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        paths.lock.unlink()
    with contextlib.suppress(OSError):
        paths.root.rmdir()  # only when no other lab is left
