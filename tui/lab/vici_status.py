"""Reads IKE and CHILD SAs from a charon over its vici socket (never guessed from processes)."""

from __future__ import annotations

import socket
from typing import Any

import vici

from .model import Tunnel
from .status import TunnelStatus


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _i(v: Any) -> int:
    try:
        return int(_s(v))
    except ValueError:
        return 0


def list_sas(socket_path: str, timeout: float = 2.0) -> list[tuple[str, dict[str, Any]]]:
    """[(ike name, ike info)] from one charon; raises OSError when it does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        session = vici.Session(sock)
        out: list[tuple[str, dict[str, Any]]] = []
        for entry in session.list_sas():
            for name, info in entry.items():
                out.append((_s(name), info))
        return out
    finally:
        sock.close()


def _rank(info: dict[str, Any]) -> tuple[int, int]:
    ike_up = _s(info.get("state", b"")) == "ESTABLISHED"
    child_up = any(_s(c.get("state", b"")) == "INSTALLED" for c in info.get("child-sas", {}).values())
    return (int(ike_up) + int(child_up), _i(info.get("established", 0)) * -1)


def tunnel_statuses(tunnels: list[Tunnel], sas: list[tuple[str, dict[str, Any]]] | None) -> list[TunnelStatus]:
    """Match SAs to this node's tunnels; a tunnel without an SA is DOWN."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, info in sas or []:
        by_name.setdefault(name, []).append(info)
    out = []
    for t in tunnels:
        infos = by_name.get(t.name, [])
        if not infos:
            out.append(TunnelStatus(t.node, t.name, t.peer, "DOWN", "DOWN"))
            continue
        best = max(infos, key=_rank)
        children = [c for c in best.get("child-sas", {}).values() if _s(c.get("name", b"")) == t.name]
        child = next((c for c in children if _s(c.get("state", b"")) == "INSTALLED"), children[0] if children else None)
        detail = {
            "ike_proposal": "/".join(
                _s(best[k]) for k in ("encr-alg", "encr-keysize", "prf-alg", "dh-group") if k in best
            ),
            "ike_spi_local": _s(best.get("initiator-spi" if _s(best.get("initiator", b"")) == "yes" else "responder-spi", b"")),
            "ike_established_s": _i(best.get("established", 0)),
            "ike_rekey_in_s": _i(best.get("rekey-time", 0)),
            "local_host": _s(best.get("local-host", b"")),
            "remote_host": _s(best.get("remote-host", b"")),
            "nat_encap": _s(best.get("nat-any", b"no")) == "yes" or _s(best.get("encap", b"no")) == "yes",
        }
        if child is not None:
            detail.update(
                {
                    "esp_proposal": "/".join(_s(child[k]) for k in ("encr-alg", "encr-keysize", "dh-group") if k in child),
                    "spi_in": _s(child.get("spi-in", b"")),
                    "spi_out": _s(child.get("spi-out", b"")),
                    "child_rekey_in_s": _i(child.get("rekey-time", 0)),
                    "child_expires_in_s": _i(child.get("life-time", 0)),
                    "child_installed_s": _i(child.get("install-time", 0)),
                    "local_ts": " ".join(_s(x) for x in child.get("local-ts", [])),
                    "remote_ts": " ".join(_s(x) for x in child.get("remote-ts", [])),
                }
            )
        out.append(
            TunnelStatus(
                node=t.node,
                name=t.name,
                peer=t.peer,
                ike_state=_s(best.get("state", b"UNKNOWN")),
                child_state=_s(child.get("state", b"DOWN")) if child is not None else "DOWN",
                bytes_in=_i(child.get("bytes-in", 0)) if child else 0,
                bytes_out=_i(child.get("bytes-out", 0)) if child else 0,
                packets_in=_i(child.get("packets-in", 0)) if child else 0,
                packets_out=_i(child.get("packets-out", 0)) if child else 0,
                ike_sas=len(infos),
                detail=detail,
            )
        )
    return out
