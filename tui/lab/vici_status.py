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


# -- authentication: how each tunnel's peer proved who it is ----------------------------------
AUTH_CLASSES = {"public key": "pubkey", "pre-shared key": "psk"}


def cert_subject(der: bytes) -> tuple[str, list[str]]:
    """An X.509 certificate's subject, written as strongSwan writes it ("O=..., CN=..."), and its
    subjectAltName DNS names."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    subject = ", ".join(attr.rfc4514_string() for attr in cert.subject)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    return subject, list(sans)


def auth_details(conns: list[dict[str, Any]], certs: list[dict[str, Any]],
                 sas: list[tuple[str, dict[str, Any]]] | None) -> dict[str, dict[str, str]]:
    """conn name -> {"auth": "pubkey"|"psk", "peer_cert": subject}, from vici's list-conns (the
    remote's auth class), list-certs (end-entity certificates charon holds: its own and those its
    peers sent) and list-sas (the identity each peer authenticated as: its certificate names it)."""
    remote_id: dict[str, str] = {}
    for name, info in sas or []:
        if _s(info.get("state", b"")) == "ESTABLISHED":
            remote_id[name] = _s(info.get("remote-id", b""))
    by_name: dict[str, str] = {}
    for c in certs:
        if _s(c.get("type", b"")) != "X509" or _s(c.get("flag", b"")) != "NONE" or "data" not in c:
            continue
        try:
            subject, sans = cert_subject(c["data"])
        except ValueError:
            continue
        for n in sans:
            by_name[n] = subject
    out: dict[str, dict[str, str]] = {}
    for entry in conns:
        for name, conn in entry.items():
            cls = _s(conn.get("remote-1", {}).get("class", b""))
            d = {"auth": AUTH_CLASSES.get(cls, cls)}
            peer = remote_id.get(_s(name))
            if d["auth"] == "pubkey" and peer and peer in by_name:
                d["peer_cert"] = by_name[peer]
            out[_s(name)] = d
    return out


def list_auth(socket_path: str, sas: list[tuple[str, dict[str, Any]]] | None,
              timeout: float = 2.0) -> dict[str, dict[str, str]]:
    """auth_details() of one charon, over its vici socket; raises OSError when it does not answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        session = vici.Session(sock)
        conns = [dict(c) for c in session.list_conns()]
        certs = [dict(c) for c in session.list_certs({"type": "X509"})]
    finally:
        sock.close()
    return auth_details(conns, certs, sas)
