"""Parsers of what nodes print: `swanctl --list-sas --raw`, and kubectl's JSON (pods, service,
nodes). Pure functions, tested on recorded real output."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from .model import Pod, Service


def json_object(text: str) -> dict[str, Any]:
    """A JSON document that must be an object (kubectl -o json, a CNI result); ValueError if not."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    return doc

_RAW_TOKEN = re.compile(r"\{|\}|[^\s={}]+=\[[^\]]*\]|[^\s={}]+=[^\s{}]*|[^\s{}]+")


def _parse_raw_body(tokens: list[str], i: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while i < len(tokens):
        tok = tokens[i]
        if tok == "}":
            return out, i + 1
        if "=" in tok:
            key, value = tok.split("=", 1)
            out[key] = value[1:-1].split() if value.startswith("[") and value.endswith("]") else value
            i += 1
        elif i + 1 < len(tokens) and tokens[i + 1] == "{":
            out[tok], i = _parse_raw_body(tokens, i + 2)
        else:
            i += 1  # a bare word (e.g. the message type) carries nothing for us
    return out, i


def parse_swanctl_raw(text: str) -> list[tuple[str, dict[str, Any]]]:
    """`swanctl --list-sas --raw` -> [(IKE SA name, info)], the shape vici's list_sas gives."""
    sas: list[tuple[str, dict[str, Any]]] = []
    for line in text.splitlines():
        if not line.startswith("list-sa event"):
            continue
        body, _ = _parse_raw_body(_RAW_TOKEN.findall(line[len("list-sa event"):].strip()[1:]), 0)
        sas.extend(body.items())
    return sas


_CONN_AUTH = re.compile(r"^list-conn event \{(\S+) \{.*? remote-1 \{id=\S* class=(.+?) groups=")
_CERT = re.compile(r"^list-cert event \{type=(\S+) flag=(\S+) .*?data=0x([0-9a-fA-F]+)\}")


def parse_swanctl_auth(conns_raw: str, certs_raw: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`swanctl --list-conns --raw` and `swanctl --list-certs --raw --type x509` -> (conns, certs) in
    the shape vici's list_conns and list_certs give (only what vici_status.auth_details reads)."""
    conns = [{m[1]: {"remote-1": {"class": m[2]}}} for m in map(_CONN_AUTH.match, conns_raw.splitlines()) if m]
    certs = [{"type": m[1], "flag": m[2], "data": bytes.fromhex(m[3])}
             for m in map(_CERT.match, certs_raw.splitlines()) if m]
    return conns, certs


def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def pods_from_kubectl(doc: dict[str, Any]) -> list[Pod]:
    pods = []
    for item in doc.get("items", []):
        meta, spec, st = item.get("metadata", {}), item.get("spec", {}), item.get("status", {})
        statuses = st.get("containerStatuses") or []
        state = st.get("phase", "Unknown")
        if meta.get("deletionTimestamp"):
            state = "Terminating"
        else:
            for cs in statuses:
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting:
                    state = waiting.get("reason", state)
        pods.append(Pod(
            name=meta.get("name", "?"), node=spec.get("nodeName") or "", ip=st.get("podIP"), state=state,
            restarts=sum(int(cs.get("restartCount", 0)) for cs in statuses),
            created=_timestamp(meta.get("creationTimestamp")),
        ))
    return sorted(pods, key=lambda p: p.name)


def service_from_kubectl(doc: dict[str, Any]) -> Service:
    port = (doc.get("spec", {}).get("ports") or [{}])[0]
    return Service(name=doc.get("metadata", {}).get("name", "?"), type=doc.get("spec", {}).get("type", "?"),
                   port=int(port.get("port", 0)), node_port=int(port.get("nodePort", 0)))


def ready_nodes_from_kubectl(doc: dict[str, Any]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for item in doc.get("items", []):
        conds = item.get("status", {}).get("conditions", [])
        out[item.get("metadata", {}).get("name", "?")] = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    return out


def sections(text: str) -> dict[str, str]:
    """The "@@name" sections of commands.node_probe's output: name -> its text."""
    out: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("@@") and line.strip()[2:].isidentifier():
            name = line.strip()[2:]
            out[name] = ""
        elif name is not None:
            out[name] += line
    return out
