"""The real `ipsec-lab` command in tmux, as a person uses it: it brings a lab up, the user takes
mesh-left down on kube-node1 and reads the gap off the screen, then quits leaving the lab running."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from .conftest import ROOT, force_down, lab_namespaces, unique_lab

pytestmark = [pytest.mark.lab]
IPSEC_LAB = ROOT / ".venv" / "bin" / "ipsec-lab"


SOCKET = f"ilab-tui-test-{os.getpid()}"  # a tmux server of its own (per test run): nobody else's sessions are touched


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, timeout=10).stdout


def screen(session: str) -> str:
    return tmux("capture-pane", "-p", "-t", session)


def wait_screen(session: str, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = screen(session)
        if text in last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear within {timeout} s; the screen:\n{last}")


@pytest.mark.timeout(150)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_app_in_tmux_brings_a_lab_up_and_shows_a_tunnel_bounce(tmp_path):
    lab = unique_lab("tui")
    session = f"ilab-test-{lab}"
    done = tmp_path / "exit.txt"
    cmd = f"env -u COLUMNS -u LINES {IPSEC_LAB} --lab {lab}; echo \"exit=$?\" > {done}; sleep 60"
    try:
        tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "48", "sh", "-c", cmd)
        tmux("set-option", "-t", session, "window-size", "manual")
        tmux("resize-window", "-t", session, "-x", "150", "-y", "48")
        wait_screen(session, "6/6 ESTABLISHED", 60)  # brought up, first status shown
        assert f"lab {lab}" in screen(session)
        tmux("send-keys", "-t", session, "2")
        wait_screen(session, "from \\ to", 10)
        s = wait_screen(session, "swanctl --terminate --ike mesh-left", 10)
        assert "ipsec down mesh-left" in s
        tmux("send-keys", "-t", session, "d")
        wait_screen(session, "Take mesh-left down on kube-node1?", 10)
        tmux("send-keys", "-t", session, "y")
        s = wait_screen(session, "came back ESTABLISHED", 30)
        assert "left ESTABLISHED" in s
        assert "last gap" in s  # the timeline shows the measured gap
        for key, title in (("1", "UNDERLAY IP"), ("3", "not a kubelet"), ("4", "source"), ("5", "Checks")):
            tmux("send-keys", "-t", session, key)
            wait_screen(session, title, 10)
        tmux("send-keys", "-t", session, "q")
        wait_screen(session, "Quit, leave lab running", 10)
        tmux("send-keys", "-t", session, "l")
        s = wait_screen(session, "still running", 15)
        assert f"ipsec-lab --lab {lab} down" in s
        deadline = time.monotonic() + 10
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.read_text().strip() == "exit=0"
        assert lab_namespaces(lab), "quitting must leave the lab running"
    finally:
        tmux("kill-session", "-t", session)
        tmux("kill-server")  # only the server on our own socket
        force_down(lab)
        assert lab_namespaces(lab) == []
