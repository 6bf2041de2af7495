"""Where a Deployment's pods go, as its controller would decide: shared by every backend whose
pods are not scheduled by a real Kubernetes (netns, and VMs in node mode none)."""

from __future__ import annotations

import secrets
from typing import Sequence

from ..lab import naming
from ..lab.model import Node, Pod

HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters Kubernetes uses in generated names


def rand(n: int) -> str:
    return "".join(secrets.choice(HASH_ALPHABET) for _ in range(n))


def pod_name(pod_hash: str, taken: set[str]) -> str:
    """kubernetes-bootcamp-<pod-template-hash>-<5 characters>, not one of `taken`."""
    while True:
        name = f"{naming.DEPLOYMENT_NAME}-{pod_hash}-{rand(5)}"
        if name not in taken:
            return name


def least_loaded(pods: Sequence[Pod], nodes: Sequence[Node]) -> str:
    """The node with the fewest of `pods` (the lowest index among equals)."""
    counts = {n.name: sum(p.node == n.name for p in pods) for n in nodes}
    return min(counts, key=lambda k: (counts[k], next(n.index for n in nodes if n.name == k)))


def scale(pods: Sequence[Pod], nodes: Sequence[Node], replicas: int, pod_hash: str) -> tuple[list[Pod], dict[str, list[str]]]:
    """(pods to delete, node -> names of new pods) that take `pods` to `replicas`.

    Scale down: newest pods first, from the fullest node. Scale up: round-robin over the nodes with
    the fewest pods (3 per node for 9 on 3)."""
    index = {n.name: n.index for n in nodes}
    doomed: list[Pod] = []
    while len(pods) - len(doomed) > replicas:
        left = [p for p in pods if p not in doomed]
        counts = {n.name: sum(p.node == n.name for p in left) for n in nodes}
        fullest = max(counts, key=lambda k: (counts[k], index[k]))
        doomed.append(max((p for p in left if p.node == fullest), key=lambda p: p.created))
    placement: dict[str, list[str]] = {}
    counts = {n.name: sum(p.node == n.name for p in pods if p not in doomed) for n in nodes}
    taken = {p.name for p in pods}
    for _ in range(replicas - (len(pods) - len(doomed))):
        target = min(counts, key=lambda k: (counts[k], index[k]))
        counts[target] += 1
        name = pod_name(pod_hash, taken)
        taken.add(name)
        placement.setdefault(target, []).append(name)
    return doomed, placement
