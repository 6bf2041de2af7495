"""The README's first command on a fresh machine: a minimal Debian 12 root with nothing of the project.

A Debian package the dev machines had from a hand install once went missing from scripts/setup.sh
and CI, on a dev machine, could not see it. This test runs `scripts/lab --lab <name> up --deploy 3`
in a fresh minbase root (git, python3, ca-certificates and nothing else) built from the host's Debian
sources, so setup.sh must install everything the lab needs. Then status, a curl across nodes, down,
and `doctor --install` putting back a removed package; the root is removed and nothing is left on
the host. See tests/fresh_root.py for how.

By hand: scripts/fresh-root (the same flow) or scripts/fresh-root --shell.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time

import pytest

from . import fresh_root

pytestmark = pytest.mark.timeout(900)


def emit(request, line: str) -> None:
    """Write ``line`` to the real stderr even under pytest's fd-level capture, so CI logs show it."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        sys.__stderr__.write("\n" + line + "\n")
        sys.__stderr__.flush()


def test_readme_first_command_works_on_a_fresh_machine(request, record_property):
    if os.geteuid() != 0:
        pytest.skip("the fresh-machine test needs root (mmdebstrap, mount namespaces, chroot)")
    # Never a skip: scripts/setup.sh --test installs mmdebstrap, so its absence is a setup bug.
    assert shutil.which("mmdebstrap"), "mmdebstrap is not installed: `scripts/setup.sh --test` installs it (TEST_PACKAGES)"
    assert shutil.which("unshare") and shutil.which("nsenter"), "unshare/nsenter (util-linux) are missing"

    start = time.monotonic()
    lab = fresh_root.unique_lab()
    machine = fresh_root.FreshMachine(fresh_root.REPO, log=print)
    try:
        with machine:
            print(f"fresh machine: {machine.root}, HEAD {machine.head}, lab {lab}")
            fresh_root.lab_flow(machine, lab)
    finally:
        timings = machine.timings
        timings["total_s"] = time.monotonic() - start
        for key, value in timings.items():
            record_property(f"fresh_{key}", value)
        emit(request, fresh_root.timings_line(timings))

    # Nothing left behind on the host.
    root = machine.root
    assert root.startswith("/var/tmp/ipsec-lab-fresh-")
    assert not os.path.exists(root), f"{root} was not removed"
    assert fresh_root.processes_rooted_in(root) == [], "processes still rooted in the fresh root"
    assert fresh_root.mounts_under(root) == [], "mounts left under the fresh root"
