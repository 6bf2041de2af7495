"""Rekeys (issue 11, item 3): `ipsec-lab rekey`, `up --rekey-s N`, the rekeys seen in status
polling, and the rekey-no-loss check failing for its own cause on a real lab.

The pure tests replay real recorded output (tests/fixtures/rekey/: `ipsec-lab status --json` of a
3-node netns lab, up with --rekey-s 30, before and after `ipsec-lab rekey kube-node1 mesh-left`, then `--ike`, then
`tunnel-down`; ping.txt is `ping -D -i 0.01 -c 20` across that lab's tunnel). The lab tests start
their own labs and tear them down."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tui.lab import render
from tui.lab.errors import UsageError
from tui.lab.model import LabSpec, pair_key
from tui.live.rekey import SaIds, lost_replies, rekeys_between

from .conftest import cli, started_lab, unique_lab
from .tui_fakes import status_from_json

FIX = Path(__file__).resolve().parent / "fixtures" / "rekey"


def status(name: str):
    return status_from_json(json.loads((FIX / f"{name}.json").read_text()))


# -- pure: recorded output -------------------------------------------------------------------------
def test_lost_replies_counts_missing_sequence_numbers_of_real_ping_output():
    text = (FIX / "ping.txt").read_text()
    assert lost_replies(text) == (20, 0)
    lines = text.splitlines()
    cut = [ln for ln in lines if not re.search(r"icmp_seq=(5|6|11)\s", ln)]
    assert lost_replies("\n".join(cut)) == (17, 3)
    # the last ones missing are not counted: the loop was stopped while they were on the way
    assert lost_replies("\n".join(ln for ln in lines if "icmp_seq=20 " not in ln)) == (19, 0)
    assert lost_replies("PING 10.128.2.1 (10.128.2.1) 56(84) bytes of data.\n") == (0, 0)


def test_a_child_rekey_is_seen_between_two_samples_once_per_pair():
    before, after = status("before"), status("after_child")
    seen = rekeys_between(before, after, at=100.0)
    assert [(r.node, r.conn, r.peer, r.kind) for r in seen] == [("kube-node1", "mesh-left", "kube-node2", "CHILD")]
    r = seen[0]
    assert (r.old, r.new) == (SaIds("97659409f60358d6", "037ff787", "ac5186b4"), SaIds("97659409f60358d6", "c95c1092", "5791ffc7"))
    assert r.line("largest gap 12 ms") == ("kube-node1 mesh-left CHILD SA rekeyed: ESP SPIs in 037ff787 out ac5186b4 -> "
                                           "in c95c1092 out 5791ffc7; largest gap 12 ms")
    assert rekeys_between(None, after) == [] and rekeys_between(after, after) == []


def test_an_ike_rekey_keeps_the_child_sa_and_a_tunnel_down_is_no_rekey():
    seen = rekeys_between(status("after_child"), status("after_ike"))
    # kube-node1 mesh-left from `rekey --ike`; the other two pairs' IKE SAs rekeyed by themselves
    # between those samples (the lab ran with --rekey-s 30: IKE every 120 s)
    assert [(r.node, r.conn, r.kind, r.old.ike, r.new.ike) for r in seen] == [
        ("kube-node1", "mesh-left", "IKE", "97659409f60358d6", "a2753b3dd2916601"),
        ("kube-node1", "mesh-right", "IKE", "41daff0cf5e27155", "66116d220618ede8"),
        ("kube-node2", "mesh-right", "IKE", "abafbf763815b82f", "0fe078dbb454730d")]
    assert all(r.old.child == r.new.child for r in seen)
    # terminated and re-established: new IKE and CHILD SAs at once; the fault watch reports that one
    assert rekeys_between(status("after_ike"), status("after_down")) == []


# -- pure: the spec and the templates ---------------------------------------------------------------
def _swanctl(spec: LabSpec, node: str) -> str:
    secrets = {pair_key(a.name, b.name): "ab" for a in spec.node_list() for b in spec.node_list() if a.index < b.index}
    return render.render_lab(spec, datapath="kernel-libipsec", secrets=secrets)[node]["swanctl.conf"].content


def test_rekey_s_renders_short_lifetimes_the_starting_end_first():
    spec = LabSpec.build("r", 3, rekey_s=30)
    node1, node2 = _swanctl(spec, "kube-node1"), _swanctl(spec, "kube-node2")
    # kube-node1 starts both its tunnels: CHILD every 30 s, IKE every 120 s
    assert re.findall(r"^ {16}rekey_time = (\S+)", node1, re.M) == ["30s", "30s"]
    assert re.findall(r"^ {8}rekey_time = (\S+)", node1, re.M) == ["120s", "120s"]
    # kube-node2 answers mesh-left (to kube-node1) and starts mesh-right: its answering timers are twice as long
    assert re.findall(r"^ {16}rekey_time = (\S+)", node2, re.M) == ["60s", "30s"]
    assert re.findall(r"^ {16}(rand_time|life_time) = (\S+)", node1, re.M) == [("rand_time", "3s"), ("life_time", "90s")] * 2
    default = _swanctl(LabSpec.build("r", 3), "kube-node1")
    assert "rekey_time" not in default and "life_time" not in default  # strongSwan's defaults, as before


def test_rekey_s_reaches_the_vms_swanctl_conf():
    """The VMs' swanctl.conf comes from the same template and spec (the spec file holds
    spec.to_dict(), round-tripped below), so `up --rekey-s` works there too."""
    from . import goldens

    spec = LabSpec.build("r", 3, rekey_s=30)
    conf = render.render_vm_node(spec, spec.node(1), secrets=goldens.psks(spec), kube=goldens.KUBE)["swanctl.conf"].content
    assert re.findall(r"^ {16}rekey_time = (\S+)", conf, re.M) == ["30s", "30s"]


def test_rekey_s_is_kept_in_the_spec_and_checked():
    spec = LabSpec.build("r", 3, rekey_s=30)
    assert LabSpec.from_dict(spec.to_dict()) == spec
    assert "rekey_s" not in LabSpec.build("r", 3).to_dict()  # a default lab's state is as before
    with pytest.raises(UsageError, match="--rekey-s must be between 10 and 86400 seconds, got 5"):
        LabSpec.build("r", 3, rekey_s=5)


# -- real labs -----------------------------------------------------------------------------------
@pytest.mark.lab
@pytest.mark.timeout(120)
def test_rekey_command_and_short_lifetimes_on_a_real_lab():
    lab = unique_lab("rk")
    try:
        up = cli("--lab", lab, "-q", "up", "--rekey-s", "10")
        assert up.returncode == 0, up.stderr
        assert cli("--lab", lab, "up", "--rekey-s", "5").returncode == 3
        # CHILD: old and new SPIs, the gap, no reply lost
        r = cli("--lab", lab, "rekey", "kube-node1", "mesh-left")
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == "kube-node1 mesh-left: swanctl --rekey --child mesh-left"
        assert re.fullmatch(r"CHILD SA rekeyed in \d+ ms: ESP SPIs in (\w{8}) out (\w{8}) -> ESP SPIs in (\w{8}) out (\w{8})",
                            lines[1]), lines[1]
        assert re.fullmatch(r"data plane: largest gap between replies \d+ ms, 0 lost of \d+ \(one ping every 10 ms, "
                            r"kube-node1 -> kube-node2\)", lines[2]), lines[2]
        r = cli("--lab", lab, "rekey", "kube-node2", "mesh-left", "--ike")
        assert r.returncode == 0 and re.search(r"IKE SA rekeyed in .*: IKE SPI \w{16} -> IKE SPI \w{16}", r.stdout), r.stdout
        # bad input: one line, exit 3
        for args, msg in ((("kube-node7", "mesh-left"), "ipsec-lab: unknown node 'kube-node7'; this lab has kube-node1, kube-node2, kube-node3"),
                          (("kube-node1", "mesh-up"), "ipsec-lab: unknown connection 'mesh-up' on kube-node1; it has mesh-left, mesh-right")):
            bad = cli("--lab", lab, "rekey", *args)
            assert (bad.returncode, bad.stderr.strip(), bad.stdout) == (3, msg, "")
        # --rekey-s 10: strongSwan rekeys by itself within rekey_time (10 s, less up to 1 s of rand_time)
        from tui.backends.netns import NetnsBackend

        backend = NetnsBackend(lab)
        assert backend.spec().rekey_s == 10
        prev, seen, deadline = backend.status(), [], time.monotonic() + 15
        while not seen and time.monotonic() < deadline:
            time.sleep(0.2)
            cur = backend.status()
            seen, prev = rekeys_between(prev, cur), cur
        assert seen and {s.kind for s in seen} == {"CHILD"}, "no CHILD SA rekeyed by itself within 15 s"
    finally:
        cli("--lab", lab, "down")


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_rekey_no_loss_fails_when_the_peer_drops_create_child_sa():
    from tui.checks import catalog
    from tui.checks.base import CheckContext, Outcome
    from tui.checks.runner import run_one
    from tui.lab.events import Reporter

    from . import record_observations as brk

    with started_lab("rk", replicas=0) as lab:
        brk.block_create_child_sa_from(lab, "kube-node2", "kube-node1")
        r = run_one(catalog.BY_NAME["rekey-no-loss"], CheckContext(lab, lab.spec(), Reporter()))
        assert r.outcome is Outcome.FAILED, r.detail
        assert re.fullmatch(r"no new CHILD SA within 10 s of `swanctl --rekey --child` on kube-node1 mesh-left "
                            r"\(still in \w{8} out \w{8}\): the peer did not answer CREATE_CHILD_SA \(is IKE filtered\?\)",
                            r.detail), r.detail


@pytest.mark.lab
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_tunnels_screen_lists_rekeys_and_k_rekeys_the_selected_tunnel():
    """A real lab with --rekey-s 10: `k` on the Tunnels screen rekeys kube-node1 mesh-left under the
    10 ms ping (the events show both SPIs and the measured gap), and the rekeys strongSwan makes by
    itself show up in the events too."""
    from tui.app import IpsecLabApp
    from tui.backends.netns import NetnsBackend
    from tui.widgets.matrix import TunnelMatrix

    from .test_tui_pilot import text_of, until

    name = unique_lab("rkt")
    backend = NetnsBackend(name)
    try:
        backend.up(LabSpec.build(name, 3, rekey_s=10))
        app = IpsecLabApp(NetnsBackend(name), poll_interval=0.3)
        async with app.run_test(size=(150, 48)) as pilot:
            await until(pilot, lambda: app.status is not None and app.status.all_tunnels_up, 15, "all tunnels up")
            await pilot.press("2")
            await until(pilot, lambda: app.current_mode == "tunnels", 5, "tunnels screen")
            matrix = app.screen.query_one(TunnelMatrix)
            await until(pilot, lambda: matrix.selected is not None, 5, "a selected tunnel")
            assert "swanctl --rekey --child mesh-left" in text_of(app, "#tunnel-detail")
            old = SaIds.of(app.status.tunnel("kube-node1", "mesh-left"))
            await pilot.press("k")
            await until(pilot, lambda: app.busy is None and "rekeyed in" in app.last_fault, 30, "the rekey")
            assert re.search(r"CHILD SA rekeyed in \d+ ms: ESP SPIs in \w{8} out \w{8} -> ESP SPIs in \w{8} out \w{8}; "
                             r"data plane: largest gap between replies \d+ ms, 0 lost of \d+", app.last_fault), app.last_fault
            events = text_of(app, "#tunnel-events")
            assert f"kube-node1 mesh-left CHILD SA rekeyed: ESP SPIs {old.child} -> " in events, events
            assert re.search(r"mesh-left CHILD SA rekeyed: .*; largest gap between replies \d+ ms, 0 lost", events), events
            # by itself: within rekey_time (10 s, less up to 1 s) another pair rekeys; the 1 s pings say what they saw
            await until(pilot, lambda: "kube-node2 mesh-right CHILD SA rekeyed" in text_of(app, "#tunnel-events")
                        and "1 s pings across the pair kept answering" in text_of(app, "#tunnel-events"), 20,
                        "a rekey strongSwan made by itself in the events")
    finally:
        backend.down()
