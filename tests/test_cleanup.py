"""`down` leaves nothing behind, even after a crash; bad input changes nothing; labs coexist."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tui.backends.netns import NetnsBackend
from tui.lab.model import LabSpec
from tui.lab.proc import mounts_under
from tui.lab.state import LabPaths

from .conftest import IPSEC_LAB, ROOT, cli, lab_namespaces, unique_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]


def processes_in(namespaces: list[str]) -> list[str]:
    pids = []
    for ns in namespaces:
        pids += subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    return pids


def assert_nothing_left(lab: str, charon_pids: list[int] = ()) -> None:
    paths = LabPaths.of(lab)
    assert lab_namespaces(lab) == []
    assert not paths.dir.exists() and not paths.lock.exists()
    assert mounts_under(str(paths.dir)) == []
    for pid in charon_pids:
        assert not os.path.exists(f"/proc/{pid}") or "charon" not in open(f"/proc/{pid}/cmdline").read()


def test_down_after_kill_9_in_the_middle_of_up():
    lab = unique_lab("k")
    try:
        p = subprocess.Popen([*IPSEC_LAB, "--lab", lab, "up", "--nodes", "4"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        # Kill as soon as the first node namespace exists: charons may be starting.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("kube-node" in n for n in lab_namespaces(lab)):
            time.sleep(0.002)
        time.sleep(0.05)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert lab_namespaces(lab), "the crash happened before anything was created"
        charons = [int(x) for x in processes_in(lab_namespaces(lab))]
    finally:
        cp = cli("--lab", lab, "down")
    assert cp.returncode == 0, cp.stderr
    assert_nothing_left(lab, charons)


def test_down_twice_and_down_of_an_unknown_lab_succeed():
    lab = unique_lab("d")
    for _ in range(2):
        cp = cli("--lab", lab, "down")
        assert cp.returncode == 0 and "nothing to remove" in cp.stdout
    assert_nothing_left(lab)


def test_a_failed_bring_up_is_rolled_back():
    """A lab that fails half-way, after every node booted and its charon ran, is rolled back whole.

    The failure is real and happens on every kernel: an IKE proposal that strongSwan refuses makes
    `swanctl --load-all` fail on the first node that loads its connections, after all boots."""
    from tui.lab.errors import LabError
    from tui.lab.events import Reporter, StepFinished

    lab = unique_lab("f")
    finished: list[str] = []
    charons: list[int] = []
    backend = NetnsBackend(lab, Reporter(lambda e: finished.append(e.step) if isinstance(e, StepFinished) and e.ok else None))
    real_load = backend._load_conns

    def load_conns(node: str, announce: bool = False) -> None:
        charons.extend(n["charon"][0] for n in backend._state["nodes"].values() if n.get("charon"))
        real_load(node, announce)

    backend._load_conns = load_conns  # observes only: records the charons that ran before the failure
    try:
        with pytest.raises(LabError, match=r"swanctl --load-all failed on kube-node3"):
            backend.up(LabSpec.build(lab, 3, ike_proposal="aes128-bogus-x25519"))
        assert {"boot kube-node1", "boot kube-node2", "boot kube-node3"} <= set(finished), finished
        assert len(charons) == 3, "every node's charon ran before the failure"
        assert_nothing_left(lab, charons)
    finally:
        cli("--lab", lab, "down")


@pytest.mark.parametrize(
    "args, needle",
    [
        (("up", "--nodes", "1"), "between 2 and 32"),
        (("up", "--nodes", "33"), "between 2 and 32"),
        (("up", "--underlay", "192.168.56.0/40"), "malformed underlay"),
        (("up", "--underlay", "10.128.5.0/24"), "overlaps the pod supernet"),
        (("up", "--pod-supernet", "banana"), "malformed pod supernet"),
        (("--lab", "Bad-Name", "up"), "invalid lab name"),
        (("up", "--nodes", "three"), "invalid int value"),
        (("frobnicate",), "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(args, needle):
    lab = unique_lab("b")
    full = args if args[0] == "--lab" else ("--lab", lab, *args)
    before = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    cp = cli(*full)
    assert cp.returncode == 3, cp
    assert needle in cp.stderr, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    after = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    assert before == after
    assert not LabPaths.of(lab).dir.exists()


def test_missing_tools_are_named():
    lab = unique_lab("m")
    env = dict(os.environ, PATH="/nonexistent")
    cp = cli("--lab", lab, "up", env=env)
    assert cp.returncode == 3, cp.stderr
    assert cp.stderr.startswith("ipsec-lab: program ip is missing (not on PATH): install the Debian package iproute2")
    assert lab_namespaces(lab) == []


def test_not_root_is_refused():
    lab = unique_lab("r")
    cp = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *IPSEC_LAB, "--lab", lab, "up"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert cp.returncode == 3, cp
    assert "needs root" in cp.stderr and len(cp.stderr.strip().splitlines()) == 1
    assert lab_namespaces(lab) == []


def test_two_labs_run_at_once_and_down_one_leaves_the_other():
    a, b = unique_lab("a"), unique_lab("b")
    try:
        cli("--lab", a, "up", "--nodes", "2", "--deploy", "2", check=True)
        cli("--lab", b, "up", "--nodes", "2", "--deploy", "2", check=True)
        cli("--lab", a, "down", check=True)
        assert_nothing_left(a)
        assert len(lab_namespaces(b)) == 3
        from tui.backends.netns import NetnsBackend
        from tui.lab import probes

        lab_b = NetnsBackend(b)
        pods = lab_b.status().pods
        replies = probes.http_get_many(lab_b, "kube-node1", [f"http://{p.ip}:8080" for p in pods])
        assert [r.body for r in replies] == [probes.bootcamp_reply(p.name) for p in pods]
    finally:
        cli("--lab", a, "down")
        cli("--lab", b, "down")
    assert_nothing_left(b)
