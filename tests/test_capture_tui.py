"""The capture view (mode 6): Pilot on real netns labs, and its underlay verdict on recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui.app import IpsecLabApp
from tui.backends.netns import NetnsBackend
from tui.lab import pcap
from tui.screens.capture import CaptureScreen, underlay_verdict

from .conftest import started_lab
from .test_capture import PodTraffic, tcpdumps
from .test_tui_pilot import until

SIZE = (150, 48)
RECORDINGS = Path(__file__).resolve().parent / "recordings" / "underlay-encrypted"


def recorded(name: str) -> pcap.WireSummary:
    obs = json.loads((RECORDINGS / f"{name}.json").read_text())["observation"]
    return pcap.WireSummary(**obs["summary"])


def test_the_view_judges_as_underlay_encrypted_does():
    text, alarm, good = underlay_verdict(recorded("healthy"))
    assert good and not alarm and "encrypted:" in text
    text, alarm, good = underlay_verdict(recorded("cleartext"))
    assert alarm and not good and "ALARM: pod traffic in clear on the underlay: 9 packets with pod addresses" in text
    text, alarm, good = underlay_verdict(pcap.WireSummary(packets=4, ike=4, udp4500=4))
    assert not alarm and not good and "no ESP or pod address seen yet" in text


async def open_capture(pilot, app: IpsecLabApp, node: str) -> CaptureScreen:
    await until(pilot, lambda: app.status is not None, 15, "the first status")
    await pilot.press("6")
    await until(pilot, lambda: isinstance(app.screen, CaptureScreen), 5, "the capture view")
    screen = app.screen
    assert isinstance(screen, CaptureScreen)
    screen.select(node)
    await until(pilot, lambda: node in screen._ifaces, 10, f"{node}'s interfaces")
    return screen


@pytest.mark.lab
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_capture_view_start_lines_verdict_save_stop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with started_lab("capv", replicas=6) as backend:
        app = IpsecLabApp(NetnsBackend(backend.lab), poll_interval=0.3, bring_up=False, live_probes=False)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_capture(pilot, app, "kube-node1")
            kinds = {i.kind for i in screen._ifaces["kube-node1"]}
            assert {"underlay", "pod bridge", "pod veth"} <= kinds and kinds & {"libipsec TUN", "XFRM interface"}
            assert str(screen.query_one("#capture-iface").value) == "eth0"
            await pilot.press("c")
            await until(pilot, lambda: tcpdumps(backend.lab), 10, "tcpdump started")
            with PodTraffic(backend, 3):
                await until(pilot, lambda: screen.lines_seen >= 10, 15, "lines in the view")
                await until(pilot, lambda: "encrypted:" in screen.verdict, 10, "the underlay verdict")
            assert "ESP(spi=" in "\n".join(str(line.text) for line in screen.query_one("#capture-log").lines)
            await pilot.press("ctrl+s")
            saved = await until(pilot, lambda: list(tmp_path.glob("ipsec-lab-*-kube-node1-eth0-*.pcap")), 5, "a pcap")
            assert pcap.summarize(str(saved[0]), backend.spec().pod_supernet).esp > 0
            await pilot.press("c")
            await until(pilot, lambda: not screen.capturing, 10, "the capture stopped")
            assert tcpdumps(backend.lab) == []
            assert "stopped on kube-node1 eth0 (underlay)" in str(screen.query_one("#capture-state").render())
            # A capture running when the app exits stops with it.
            await pilot.press("c")
            await until(pilot, lambda: tcpdumps(backend.lab), 10, "tcpdump started again")
        assert tcpdumps(backend.lab) == []
        assert not list(backend.paths.node_run("kube-node1").glob("ipsec-lab-capture-*.pcap"))


@pytest.mark.lab
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_capture_view_alarms_on_pod_traffic_in_clear():
    with started_lab("capa", replicas=6) as backend:
        # As test_checks does: node1's pod traffic leaves table 220 (the IPsec routes), unguarded.
        res = backend.exec("kube-node1", ["sh", "-c", "ip rule del pref 220 && ip route del unreachable 10.128.0.0/16"])
        assert res.ok, res.stderr
        app = IpsecLabApp(NetnsBackend(backend.lab), poll_interval=0.3, bring_up=False, live_probes=False)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_capture(pilot, app, "kube-node1")
            await pilot.press("c")
            await until(pilot, lambda: tcpdumps(backend.lab), 10, "tcpdump started")
            with PodTraffic(backend, 3):
                await until(pilot, lambda: "ALARM" in screen.verdict, 15, "the cleartext alarm")
            assert "ALARM: pod traffic in clear on the underlay" in screen.verdict
            await pilot.press("c")
            await until(pilot, lambda: not screen.capturing, 10, "the capture stopped")
        assert tcpdumps(backend.lab) == []
