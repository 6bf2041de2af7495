"""The command palette's entries, as data: every action of the app with the node, tunnel or pod it
acts on. The app turns each entry into a call of its `action_<name>(*args)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

from .text import bring_up_command, seed_command, take_down_command

if TYPE_CHECKING:
    from ..lab.status import LabStatus

MODES = (("nodes", "Nodes"), ("tunnels", "Tunnels"), ("pods", "Pods"), ("logs", "Logs"), ("checks", "Checks"),
         ("capture", "Capture"))
LOG_SOURCES = ("provisioning", "charon", "actions", "checks", "app")


class CheckLike(Protocol):
    name: str
    purpose: str


@dataclass(frozen=True)
class PaletteEntry:
    title: str
    help: str
    action: str  # the app's action_<action>
    args: tuple[object, ...] = ()


def palette_entries(lab: str, status: "LabStatus | None", catalog: Iterable[CheckLike]) -> list[PaletteEntry]:
    out: list[PaletteEntry] = []

    def add(title: str, help_text: str, action: str, *args: object) -> None:
        out.append(PaletteEntry(title, help_text, action, args))

    for key, name in MODES:
        add(f"Show {name}", f"switch to the {name} screen", "switch_mode", key)
    if status is not None:
        for n in status.nodes:
            add(f"Reboot {n.name}", "power off, wipe namespace, /run and pods, boot again (asks first)",
                "reboot_node", n.name)
            add(f"Restart IPsec on {n.name}", "restart charon (asks first)", "restart_ipsec", n.name)
            add(f"Open a shell on {n.name}", "the app suspends; exit the shell to return", "shell", n.name)
            add(f"Show charon log of {n.name}", "Logs filtered to this node's charon", "log_filter", "charon", n.name)
        for t in status.tunnels:
            add(f"Take down {t.name} on {t.node}",
                f"{take_down_command(t.name)} (the seed's `{seed_command(t.name)}`), asks first",
                "tunnel_down", t.node, t.name)
            add(f"Bring up {t.name} on {t.node}", bring_up_command(t.name), "tunnel_up", t.node, t.name)
        for p in status.pods:
            add(f"Delete pod {p.name}", f"on {p.node} ({p.ip}); the deployment replaces it (asks first)",
                "delete_pod", p.name)
            for n in status.nodes:
                add(f"Curl pod {p.name} from {n.name}", f"curl http://{p.ip}:8080 on {n.name}", "curl_pod", p.name, n.name)
    add("Deploy / scale kubernetes-bootcamp…", "choose the replica count", "scale")
    add("Expose kubernetes-bootcamp on a NodePort…", "kubectl expose --type=NodePort", "expose")
    add("Run all checks", "the whole check suite", "run_checks")
    for c in catalog:
        add(f"Run check {c.name}", c.purpose, "run_checks", c.name)
    for source in LOG_SOURCES:
        add(f"Show {source} logs", f"Logs filtered to {source}", "log_filter", source, None)
    add("Bring the lab up", f"create lab {lab} if it is not running", "bring_up")
    add("Help", "what this screen shows and its keys", "help")
    add("Quit, leave the lab running", f"lab {lab} keeps running", "quit")
    add("Stop the lab and quit", "remove every namespace, process and file of the lab (asks first)", "stop_lab")
    return out
