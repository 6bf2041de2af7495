"""`down` leaves nothing behind, even after a crash; bad input changes nothing; labs coexist."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from tui.lab.proc import ProcRef, alive, mounts_under
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


def charons_in_state(lab: str) -> list[ProcRef]:
    """The charon processes the lab's state.json records, alive right now."""
    try:
        nodes = json.loads(LabPaths.of(lab).state_file.read_text()).get("nodes", {})
    except (OSError, ValueError):  # not written yet, or being replaced
        return []
    refs = [ProcRef.from_list(info.get("charon")) for info in nodes.values()]
    return [r for r in refs if r is not None and alive(r)]


def test_down_after_kill_9_in_the_middle_of_up():
    lab = unique_lab("k")
    with contextlib.ExitStack() as stack:
        stack.callback(cli, "--lab", lab, "down")  # even if an assert below fails
        p = subprocess.Popen([*IPSEC_LAB, "--lab", lab, "up", "--nodes", "4"], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        stack.callback(lambda: p.poll() is None and os.killpg(p.pid, signal.SIGKILL))
        # Kill once a charon runs: then there is a daemon to leak, outside up's process group.
        deadline = time.monotonic() + 30
        while not (charons := charons_in_state(lab)) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert p.poll() is None, f"up ended (exit {p.returncode}) before a charon was seen in its state"
        assert charons, "no charon appeared in the lab's state within 30 s"
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        assert all(alive(r) for r in charons), "the charons died with up: nothing was left to leak"
        assert lab_namespaces(lab)
        cp = cli("--lab", lab, "down")
        assert cp.returncode == 0, cp.stderr
        assert_nothing_left(lab, [r.pid for r in charons])
        assert not any(alive(r) for r in charons)


def test_down_twice_and_down_of_an_unknown_lab_succeed():
    lab = unique_lab("d")
    for _ in range(2):
        cp = cli("--lab", lab, "down")
        assert cp.returncode == 0 and "nothing to remove" in cp.stdout
    assert_nothing_left(lab)


def test_a_failed_bring_up_is_rolled_back():
    """A node's boot script fails half-way through `up` (after the underlay, the namespaces and
    other nodes' charons exist): everything is removed, on any kernel. The failure is real: the
    boot script cannot write its stamp, /run/ipsec-lab-boot.done, because a directory holds that
    name in kube-node2's /run."""
    lab = unique_lab("f")
    paths = LabPaths.of(lab)
    with contextlib.ExitStack() as stack:
        stack.callback(cli, "--lab", lab, "down")
        stack.callback(shutil.rmtree, paths.dir, True)
        (paths.node_run("kube-node2") / "ipsec-lab-boot.done").mkdir(parents=True)
        cp = cli("--lab", lab, "up", "--nodes", "3")
        assert cp.returncode == 2, cp.stdout + cp.stderr
        assert re.fullmatch(f"ipsec-lab: lab '{lab}' could not be brought up: boot script failed on kube-node2: "
                            r"sh: \d+: cannot create /run/ipsec-lab-boot.done: Is a directory\n", cp.stderr), cp.stderr
        # It failed half-way: the underlay and nodes existed, and charons ran.
        assert f"in namespace ilab-{lab}-underlay" in cp.stdout
        charons = [int(m) for m in re.findall(r"charon started \(pid (\d+)\)", cp.stdout)]
        assert charons, cp.stdout
        assert "rolling back" in cp.stdout + cp.stderr or not paths.dir.exists()
        assert_nothing_left(lab, charons)


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
    lab = full[1]
    # Only this lab's namespaces: other labs on this shared machine come and go meanwhile.
    before = lab_namespaces(lab)
    cp = cli(*full)
    assert cp.returncode == 3, cp
    assert needle in cp.stderr, cp.stderr
    assert len(cp.stderr.strip().splitlines()) == 1, cp.stderr
    assert before == lab_namespaces(lab) == []
    assert not LabPaths.of(lab).dir.exists()


def test_missing_tools_are_named():
    lab = unique_lab("m")
    env = dict(os.environ, PATH="/nonexistent")
    cp = cli("--lab", lab, "up", env=env)
    assert cp.returncode == 3 and "is missing (not on PATH): install the Debian package" in cp.stderr
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
