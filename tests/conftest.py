"""Shared fixtures. Lab tests start real netns labs with their own names and always tear down."""

from __future__ import annotations

import contextlib
import os
import random
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IPSEC_LAB = [sys.executable, "-m", "tui"]


def unique_lab(prefix: str = "t") -> str:
    # SystemRandom: pytest-randomly reseeds `random` before every test, which would hand two tests
    # the same "unique" name.
    rng = random.SystemRandom()
    return prefix + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def can_run_labs() -> str | None:
    from tui.lab import preflight

    if os.geteuid() != 0:
        return "lab tests need root"
    gaps = preflight.missing([*preflight.check_programs(), *preflight.check_files()])
    if gaps:
        return gaps[0].line()
    return None


def pytest_collection_modifyitems(config, items):
    reason = can_run_labs()
    if reason and not os.environ.get("CI"):
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
    # In CI a missing prerequisite must fail loudly, never skip silently.


def cli(*args: str, timeout: float = 120, check: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    cp = subprocess.run([*IPSEC_LAB, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env=env, stdin=subprocess.DEVNULL)
    if check and cp.returncode != 0:
        raise AssertionError(f"ipsec-lab {' '.join(args)} exited {cp.returncode}: {cp.stderr.strip()}")
    return cp


def lab_namespaces(lab: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"ilab-{lab}-"))
    except FileNotFoundError:
        return []


def force_down(lab: str) -> None:
    cli("--lab", lab, "down", timeout=60)


@contextlib.contextmanager
def started_lab(prefix: str, nodes: int = 3, replicas: int = 9, node_port: int | None = None):
    """A real netns lab under a unique name, with the seed's workload; always torn down."""
    from tui.backends.netns import NetnsBackend
    from tui.lab.model import LabSpec

    name = unique_lab(prefix)
    backend = NetnsBackend(name)
    try:
        backend.up(LabSpec.build(name, nodes))
        if replicas:
            backend.deploy(replicas)
        if node_port:
            backend.expose(node_port)
        yield backend
    finally:
        backend.down()
        assert lab_namespaces(name) == []


@pytest.fixture(scope="module")
def running_lab():
    """A 3-node lab with 9 bootcamp pods, exposed on a NodePort, shared by a module's tests."""
    with started_lab("t", node_port=31990) as backend:
        yield backend


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} did not hold within {timeout} s (last: {last!r})")


@pytest.fixture
def utc():
    """TZ=UTC for a snapshot (times on screen read the same anywhere), restored after."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()
