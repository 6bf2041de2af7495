"""`ipsec-lab link`: a node's underlay impaired with tc and iptables inside the node, on real labs;
the node commands and the parser without root; the recover-underlay-loss check on a real lab."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tui.backends.netns import NetnsBackend
from tui.checks import catalog, impairment
from tui.checks.base import CheckContext, Outcome
from tui.checks.runner import run_one
from tui.lab import linkshape, preflight
from tui.lab.errors import UsageError
from tui.lab.events import Reporter
from tui.lab.linkshape import Impairment, LinkState

from .conftest import cli, started_lab, wait_for

# What probe_argv printed on a real netns lab here (kernel 6.18, iproute2 6.1, iptables 1.8.9
# nf_tables) after `ipsec-lab link kube-node2 --loss 20 --rate 10`, then with the link cut.
RECORDED_PROBE = ("@@dev\neth0\n@@oper\nup\n@@tc\nqdisc tbf 1: root refcnt 3 rate 10Mbit burst 12500b lat 50ms \n@@drop\n"
                  "-A POSTROUTING -o eth0 -m statistic --mode random --probability 0.20000000019 -m comment "
                  "--comment ipsec-lab-impair -j DROP\n")
RECORDED_CUT = RECORDED_PROBE.replace("@@oper\nup", "@@oper\ndown")
RECORDED_CLEAN = "@@dev\neth0\n@@oper\nup\n@@tc\nqdisc noqueue 0: root refcnt 2 \n@@drop\n"


# -- without root -------------------------------------------------------------------------------
def test_parse_recorded_probes():
    s = linkshape.parse_probe(RECORDED_PROBE)
    assert s == LinkState(dev="eth0", loss_pct=20.0, loss_by="iptables", rate_mbit=10.0)
    assert s.describe() == "loss 20% (iptables), rate 10 Mbit/s"
    assert linkshape.parse_probe(RECORDED_CUT).describe() == "CUT, loss 20% (iptables), rate 10 Mbit/s"
    clean = linkshape.parse_probe(RECORDED_CLEAN)
    assert clean.clean and clean.describe() == ""


def test_parse_netem_lines():
    """netem cannot run on this kernel, so these lines are iproute2 6.1's format for netem (q_netem.c),
    not a recording: a netem root, and a netem under a tbf."""
    s = linkshape.parse_probe("@@dev\nenp0s8\n@@oper\nup\n@@tc\n"
                              "qdisc netem 8001: root refcnt 2 limit 1000 delay 100ms  10ms loss 20%\n@@drop\n")
    assert (s.delay_ms, s.jitter_ms, s.loss_pct, s.loss_by) == (100.0, 10.0, 20.0, "netem")
    assert s.describe() == "delay 100 ms ±10 ms, loss 20%"
    s = linkshape.parse_probe("@@dev\neth0\n@@oper\nup\n@@tc\nqdisc tbf 1: root refcnt 2 rate 500Kbit burst 3200b lat 50ms\n"
                              "qdisc netem 10: parent 1:1 limit 1000 delay 1.5s\n@@drop\n")
    assert (s.rate_mbit, s.delay_ms, s.jitter_ms, s.loss_pct) == (0.5, 1500.0, None, None)


def test_apply_script_picks_the_tools():
    # Loss alone: netem where the node's kernel has it, else the random-drop rule.
    loss = linkshape.apply_script(Impairment(loss_pct=20))
    assert "tc qdisc add dev lo root netem" in loss  # the kernel is asked first, on the node
    assert 'tc qdisc add dev "$dev" root netem loss 20%' in loss
    assert ('iptables -w -t mangle -A POSTROUTING -o "$dev" -m statistic --mode random --probability 0.2000 '
            "-m comment --comment ipsec-lab-impair -j DROP") in loss
    assert f"exit {linkshape.NO_NETEM_EXIT}" not in loss  # loss works without netem
    # Rate: tbf at the root; a delay goes under it, and needs netem (refused before any change).
    both = linkshape.apply_script(Impairment(delay_ms=50, jitter_ms=5, loss_pct=1, rate_mbit=10))
    assert 'tc qdisc add dev "$dev" root handle 1: tbf rate 10mbit burst 12500 latency 50ms' in both
    assert 'tc qdisc add dev "$dev" parent 1:1 handle 10: netem delay 50ms 5ms loss 1%' in both
    assert both.index(f"exit {linkshape.NO_NETEM_EXIT}") < both.index("tc qdisc del dev \"$dev\" root")
    assert "iptables -w -t mangle -A" not in both
    assert linkshape.tbf_args(1)[:3] == ["tbf", "rate", "1mbit"] and linkshape.tbf_args(1)[4] == "3200"
    # The interface is the node's own: the VM's recorded one, else the one holding its address.
    argv = linkshape.apply_argv(Impairment(rate_mbit=5), "192.168.56.12")
    assert argv[0:2] == ["sh", "-c"] and argv[3:] == ["link", "192.168.56.12"]
    assert linkshape.UNDERLAY_ENV in argv[2]


@pytest.mark.parametrize("kwargs, message", [
    ({"loss_pct": 0}, "--loss 0: a percentage above 0, at most 100"),
    ({"loss_pct": 101}, "--loss 101: a percentage above 0, at most 100"),
    ({"rate_mbit": 0}, "--rate 0: megabits per second, above 0"),
    ({"delay_ms": -1}, "--delay -1: give a number of 0 or more"),
    ({"jitter_ms": 5}, "--jitter varies a delay: give --delay too"),
])
def test_bad_values_are_one_line(kwargs, message):
    with pytest.raises(UsageError) as e:
        Impairment(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("args, message", [
    (["--cut", "--loss", "5"], "link: give --cut, --clear, or --delay/--jitter/--loss/--rate, one kind at a time"),
    (["--clear", "--rate", "5"], "link: give --cut, --clear, or --delay/--jitter/--loss/--rate, one kind at a time"),
    (["--for", "3"], "link: --for S goes with --cut"),
    (["--loss", "0"], "--loss 0: a percentage above 0, at most 100"),
])
def test_cli_usage_errors(args, message):
    cp = cli("--lab", "nolinklab", "link", "kube-node1", *args)
    assert cp.returncode == 3 and cp.stderr.strip() == f"ipsec-lab: {message}", cp.stderr


def test_doctor_reports_netem_and_never_blocks_on_it():
    f = preflight.check_netem()
    assert (f.kind, f.name, f.optional) == ("kernel", "netem qdisc", True)
    assert preflight.missing([f]) == []  # a lab runs without it
    if not f.ok:
        assert "Specified qdisc kind is unknown" in f.detail and "cannot --delay or --jitter here" in f.detail
    cp = cli("doctor", env={**os.environ, "COLUMNS": "400"})
    line = next(x for x in cp.stdout.splitlines() if "netem qdisc" in x)
    assert ("absent" in line) == (not f.ok) and "missing" not in line
    assert cp.returncode == (0 if not preflight.missing(NetnsBackend("doctorlk").doctor()) else 3)


def test_link_dialog_words_are_the_commands():
    from tui.screens.link import parse_link_request  # the TUI dialog's words (no Textual needed to parse)

    assert parse_link_request("loss 20 rate 10") == Impairment(loss_pct=20, rate_mbit=10)
    assert parse_link_request("--delay 50 --jitter=5") == Impairment(delay_ms=50, jitter_ms=5)
    assert parse_link_request("loss 5%") == Impairment(loss_pct=5)
    assert parse_link_request("") == "clear" and parse_link_request("clear") == "clear"
    assert parse_link_request(" cut ") == "cut"
    for bad, message in (("lose 20", "'lose': say delay MS, jitter MS, loss PCT, rate MBIT, cut or clear"),
                         ("loss", "loss needs a number"), ("loss 0", "--loss 0: a percentage above 0, at most 100")):
        with pytest.raises(UsageError) as e:
            parse_link_request(bad)
        assert str(e.value) == message


# -- on real labs -------------------------------------------------------------------------------
def _ping_answered(lab, node: str, ip: str, count: int = 300) -> float:
    res = lab.exec(node, ["ping", "-n", "-q", "-i", "0.01", "-c", str(count), "-W", "1", ip], timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", res.stdout)
    assert m, res.stdout + res.stderr
    return int(m.group(2)) / int(m.group(1))


def _host_mangle() -> str:
    return subprocess.run(["iptables", "-w", "-t", "mangle", "-S"], capture_output=True, text=True).stdout


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_link_loss_rate_delay_clear_on_a_real_lab():
    with started_lab("lk", replicas=3) as lab:
        target = str(lab.spec().node("kube-node2").cni0_ip)
        assert _ping_answered(lab, "kube-node1", target) == 1.0
        cp = cli("--lab", lab.lab, "link", "kube-node2", "--loss", "20", "--rate", "10")
        assert cp.returncode == 0, cp.stderr
        assert "kube-node2 eth0: loss 20%" in cp.stdout and "rate 10 Mbit/s" in cp.stdout
        # The loss is real, and on kube-node2's underlay only: its replies are lost, not node3's.
        answered = _ping_answered(lab, "kube-node1", target)
        assert 0.6 < answered < 0.95, answered
        assert _ping_answered(lab, "kube-node1", str(lab.spec().node("kube-node3").cni0_ip), 100) == 1.0
        assert "ipsec-lab-impair" not in _host_mangle()  # the node's namespace, never this machine's
        # status shows it, read back from the node (a new process: it survives app restarts).
        doc = json.loads(cli("--lab", lab.lab, "status", "--json", check=True).stdout)
        links = {n["name"]: n["link"] for n in doc["nodes"]}
        assert links["kube-node2"]["loss_pct"] == 20.0 and links["kube-node2"]["rate_mbit"] == 10.0
        assert links["kube-node1"]["summary"] == "" and links["kube-node3"]["summary"] == ""
        # A delay needs netem: where the kernel lacks it, one line, exit 3, and nothing changed.
        has_netem = lab.exec("kube-node2", linkshape.netem_probe_argv()).stdout.strip() == "yes"
        cp = cli("--lab", lab.lab, "link", "kube-node2", "--delay", "50")
        if has_netem:
            assert cp.returncode == 0 and "delay 50 ms" in cp.stdout
        else:
            assert cp.returncode == 3 and cp.stderr.count("\n") == 1
            assert "--delay needs the kernel's netem qdisc" in cp.stderr and "nothing was changed" in cp.stderr
            still = cli("--lab", lab.lab, "link", "kube-node2", check=True).stdout
            assert "loss 20% (iptables), rate 10 Mbit/s" in still
        cp = cli("--lab", lab.lab, "link", "kube-node2", "--clear", check=True)
        assert cp.stdout.strip() == "kube-node2 eth0: no impairment"
        assert _ping_answered(lab, "kube-node1", target) == 1.0
        assert "ipsec-lab-impair" not in lab.exec("kube-node2", ["iptables", "-w", "-t", "mangle", "-S"]).stdout


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_link_cut_for_and_cut_clear_on_a_real_lab():
    with started_lab("lc", replicas=0) as lab:
        cp = cli("--lab", lab.lab, "link", "kube-node2", "--cut", "--for", "2", timeout=90)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert "cut kube-node2's underlay for 2 s" in cp.stdout
        gap = re.search(r"largest gap between replies ([\d.]+) (m?s)", cp.stdout)
        assert gap, cp.stdout
        assert float(gap.group(1)) / (1000 if gap.group(2) == "ms" else 1) >= 1.9  # the cut was real
        assert "kube-node2 eth0: no impairment" in cli("--lab", lab.lab, "link", "kube-node2", check=True).stdout
        # A cut without --for stays until --clear; status shows it meanwhile.
        cli("--lab", lab.lab, "link", "kube-node2", "--cut", check=True)
        assert "kube-node2 eth0: CUT" in cli("--lab", lab.lab, "link", "kube-node2", check=True).stdout
        doc = json.loads(cli("--lab", lab.lab, "status", "--json", check=True).stdout)
        assert next(n for n in doc["nodes"] if n["name"] == "kube-node2")["link"]["cut"] is True
        cli("--lab", lab.lab, "link", "kube-node2", "--clear", check=True)
        target = str(lab.spec().node("kube-node2").cni0_ip)
        # Traffic comes back as after recover-underlay-outage's cut (within its bound), then stays.
        wait_for(lambda: lab.exec("kube-node1", ["ping", "-n", "-q", "-c", "1", "-W", "1", target]).ok,
                 timeout=catalog.bound("namespace", "outage-recovery"), what="a reply after --clear")
        assert _ping_answered(lab, "kube-node1", target, 50) == 1.0


@pytest.mark.lab
@pytest.mark.timeout(150)
def test_recover_underlay_loss_passes_and_fails_when_the_loss_does_not_take(monkeypatch):
    monkeypatch.setattr(impairment, "LOSS_S", 8.0)
    with started_lab("ll", replicas=3) as lab:
        ctx = CheckContext(lab, lab.spec(), Reporter())
        r = run_one(catalog.BY_NAME["recover-underlay-loss"], ctx)
        assert r.outcome is Outcome.PASSED, r.detail
        obs = r.observation
        assert obs["loss_by"] in ("netem", "iptables") and obs["requests"] and not obs["duplicates"]
        assert 0.6 < obs["pings_answered"] / obs["pings_sent"] < 0.95
        assert linkshape.parse_probe(lab.exec("kube-node2", linkshape.probe_argv("192.168.56.12")).stdout).clean
        if obs["loss_by"] == "netem":
            return  # the breakage below defeats the iptables drop only
        # kube-node2 accepts what it sends ahead of the drop rule: the check must not pass vacuously.
        lab.exec("kube-node2", ["iptables", "-w", "-t", "mangle", "-I", "POSTROUTING", "-o", "eth0", "-j", "ACCEPT"])
        r = run_one(catalog.BY_NAME["recover-underlay-loss"], ctx)
        assert r.outcome is Outcome.FAILED
        assert re.fullmatch(r"the ping loop kube-node1 -> kube-node2 saw 100\.0% answered during 20% loss \(iptables\) "
                            r"on kube-node2's underlay for \d+ s: the loss was not in effect, so this proves nothing",
                            r.detail), r.detail
