"""Commands sent to nodes (tui/lab/commands.py) and the probes' parsers, without a lab: the shell
ones run here, on this machine's sh, as they run on a node."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from tui.lab import commands, probes
from tui.lab.model import LabSpec


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


def test_swanctl_commands_as_the_seed_knows_them():
    assert commands.shown(commands.swanctl_terminate_ike("mesh-left")) == "swanctl --terminate --ike mesh-left"
    assert commands.swanctl_initiate_child("mesh-right") == ["swanctl", "--initiate", "--child", "mesh-right",
                                                             "--timeout", "10"]
    assert commands.swanctl_list_sas(raw=True) == ["swanctl", "--list-sas", "--raw"]
    assert commands.ipsec_down("mesh-left") == ["ipsec", "down", "mesh-left"]


def test_announce_script_starts_only_the_answering_ends():
    spec = LabSpec.build("lab", 3)
    assert commands.announce_script(spec, "kube-node1", "/x") is None  # it initiates all of its own
    script = commands.announce_script(spec, "kube-node3", "/x")
    assert re.findall(r"swanctl --initiate --child (\S+) --timeout 5", script) == ["mesh-left", "mesh-right"]
    # A VM's strongswan.conf carries it as one value: its parser ends a value at } # " or a newline,
    # and the start-script wraps it in single quotes.
    assert not set(script) & set("}#\"'\n")


ANNOUNCE_CASES = [  # (seconds since charon stopped, the peers already re-initiating) -> conns started
    (1, set(), ["mesh-left", "mesh-right"]),           # a restart: at once, for INITIAL_CONTACT
    (1, {"192.168.56.11"}, ["mesh-left", "mesh-right"]),
    (60, set(), ["mesh-left", "mesh-right"]),          # a reboot, nobody retrying: after listening
    (60, {"192.168.56.11"}, ["mesh-right"]),           # kube-node1 is retrying: mesh-left is left to it
    (None, {"192.168.56.12"}, ["mesh-left"]),          # no stamp: the careful path
]


@pytest.mark.parametrize("away,retrying,started", ANNOUNCE_CASES)
def test_announce_listens_for_retrying_peers_after_a_long_absence(tmp_path, away, retrying, started):
    """The script's decisions, run by sh. swanctl here is a recorder in PATH that lists an IKE SA
    for each retrying peer: the behaviour against real daemons is tests/test_lab_netns.py's
    race test (and the 3-VM test's reboot)."""
    stamp, calls = tmp_path / "stopped", tmp_path / "calls"
    if away is not None:
        stamp.write_text(f"{int(time.time()) - away}\n")
    sas = " ".join(f"list-sa event {{(unnamed) {{remote-host={ip} remote-port=500}}}}" for ip in sorted(retrying))
    shim = tmp_path / "swanctl"
    # Each listing takes 0.4 s, as under emulation: the listen is bounded by the clock, not by tries.
    shim.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n[ \"$1\" = --list-sas ] && sleep 0.4 && echo '{sas}'\nexit 0\n")
    shim.chmod(0o755)
    script = commands.announce_script(LabSpec.build("lab", 3), "kube-node3", str(stamp))
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", script], env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, check=True, timeout=30)
    took = time.monotonic() - t0
    lines = calls.read_text().splitlines()
    assert sorted(re.findall(r"--initiate --child (\S+)", " ".join(lines))) == started
    listened = any(line.startswith("--list-sas") for line in lines)
    assert listened == (away is None or away >= commands.ANNOUNCE_AT_ONCE_S)
    if listened and len(started) == 2:
        assert took >= commands.ANNOUNCE_LISTEN_S - 0.5  # it listened the whole time before starting
    assert took <= commands.ANNOUNCE_LISTEN_S + 2.5


def test_read_file_from_an_offset_and_after_the_file_was_started_anew(tmp_path):
    log = tmp_path / "charon.log"
    log.write_text("one\ntwo\nthr")
    out = run(commands.read_file_from(str(log), 4)).stdout
    assert out == "11\ntwo\nthr"  # size, then the bytes from offset 4
    out = run(commands.read_file_from(str(log), 400)).stdout
    assert out == "11\none\ntwo\nthr"  # shorter than the offset: from the start
    assert run(commands.read_file_from(str(tmp_path / "none"), 0)).stdout == "0\n"


def test_iptables_ensure_is_check_then_append():
    argv = commands.iptables_ensure("FORWARD", commands.KUBE_FORWARD_RULE)
    assert argv[:2] == ["sh", "-c"] and argv[2] == (
        "iptables -w -C FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT 2>/dev/null || "
        "iptables -w -A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT")


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")
def test_fan_out_prints_one_line_per_target_and_parses():
    # In a network namespace of its own: lo answers, 192.0.2.1 (TEST-NET-1) has no route.
    argv = commands.ping_fan_out([("self", "127.0.0.1"), ("nobody", "192.0.2.1")], wait=0.2)
    out = run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]).stdout
    assert probes.parse_fan_out(out) == {"self": True, "nobody": False}
    assert probes.parse_fan_out("a up\nb down\nnoise\n") == {"a": True, "b": False}


@pytest.mark.parametrize("stamps, gap", [
    ([1.00, 1.01, 1.02, 1.03], 0.0),  # a reply every interval: no gap
    ([1.00, 1.01, 1.51, 1.52], 0.49),  # half a second of silence, less the interval
    ([1.00], float("inf")),  # fewer than two replies: no measure
])
def test_longest_gap_is_the_one_ping_gap_rule(stamps, gap):
    assert probes.longest_gap(stamps) == pytest.approx(gap)


def test_reply_times_read_ping_dash_D_output():
    out = ("PING 10.128.2.1 (10.128.2.1) 56(84) bytes of data.\n"
           "[1795861601.123456] 64 bytes from 10.128.2.1: icmp_seq=1 ttl=64 time=0.321 ms\n"
           "[1795861601.133456] 64 bytes from 10.128.2.1: icmp_seq=2 ttl=64 time=0.300 ms\n"
           "--- 10.128.2.1 ping statistics ---\n")
    assert probes.reply_times(out) == [1795861601.123456, 1795861601.133456]
