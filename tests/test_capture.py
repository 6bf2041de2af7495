"""`ipsec-lab capture` on a real netns lab: a pcap tcpdump and our reader open, ESP seen and no
cleartext pod address; streamed lines; bad input is one line and exit 3; Ctrl+C leaves no tcpdump."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import IPSEC_LAB, ROOT, cli, started_lab
from tui.lab import naming, pcap
from tui.live.capture import classify_links

@pytest.fixture(scope="module")
def lab():
    with started_lab("cap", replicas=6) as backend:
        yield backend


def tcpdumps(lab: str, nodes: int = 3) -> list[int]:
    """PIDs of tcpdump processes in the lab's node namespaces."""
    found = []
    for i in range(1, nodes + 1):
        ns = naming.node_namespace(lab, naming.node_name(i))
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "tcpdump":
                    found.append(int(pid))
            except OSError:
                pass
    return found


class PodTraffic:
    """A ping across the tunnel from a pod on kube-node2 to a pod on kube-node1, while it runs."""

    def __init__(self, backend, seconds: float = 6.0) -> None:
        pods = backend.status().pods
        src = next(p for p in pods if p.node == "kube-node2")
        dst = next(p for p in pods if p.node == "kube-node1")
        argv = ["ping", "-q", "-c", str(int(seconds * 10)), "-i", "0.1", "-w", str(int(seconds) + 1), dst.ip]
        # No reply is fine (a test may have broken the return path): the ping ends by its deadline.
        self.t = threading.Thread(target=backend.pod_exec, args=(src.name, argv), kwargs={"timeout": seconds + 10},
                                  daemon=True)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.t.join(timeout=30)


@pytest.mark.lab
def test_capture_writes_a_pcap_with_esp_and_no_cleartext(lab, tmp_path):
    out = tmp_path / "underlay.pcap"
    with PodTraffic(lab, 4):
        cp = cli("--lab", lab.lab, "capture", "kube-node1", "-w", str(out), "--duration", "3", timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "wrote" in cp.stderr and "ESP" in cp.stderr
    s = pcap.summarize(str(out), lab.spec().pod_supernet)
    assert s.esp > 10 and s.cleartext_pod == 0, s
    read = subprocess.run(["tcpdump", "-n", "-r", str(out)], capture_output=True, text=True)
    assert read.returncode == 0 and "ESP(spi=" in read.stdout, read.stderr
    assert tcpdumps(lab.lab) == []


@pytest.mark.lab
def test_capture_streams_tcpdump_lines(lab):
    with PodTraffic(lab, 4):
        cp = cli("--lab", lab.lab, "capture", "kube-node1", "--count", "5", "--filter", "esp or udp port 4500",
                 timeout=60)
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert len(lines) == 5, cp.stdout
    assert any("ESP(spi=" in line for line in lines), lines
    assert tcpdumps(lab.lab) == []


@pytest.mark.lab
def test_capture_on_cni0_sees_pod_addresses(lab):
    with PodTraffic(lab, 3):
        cp = cli("--lab", lab.lab, "capture", "kube-node1", "--iface", "cni0", "--count", "3", "--filter", "icmp",
                 timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "10.128." in cp.stdout and "ICMP echo" in cp.stdout, cp.stdout


@pytest.mark.parametrize("args, says", [
    (["kube-node1", "--iface", "eth9"], "kube-node1 has no interface 'eth9'; it has eth0 (underlay)"),
    (["kube-node9"], "unknown node 'kube-node9'"),
    (["kube-node1", "--filter", "esp andd"], "bad --filter 'esp andd': tcpdump: can't parse filter expression"),
    (["kube-node1", "--count", "0"], "--count and --duration must be positive"),
])
@pytest.mark.lab
def test_capture_refuses_bad_input_in_one_line(lab, args, says):
    cp = cli("--lab", lab.lab, "capture", *args, timeout=30)
    assert cp.returncode == 3
    assert cp.stderr.count("\n") == 1 and says in cp.stderr, cp.stderr


@pytest.mark.lab
def test_ctrl_c_stops_the_capture_and_keeps_the_pcap(lab, tmp_path):
    out = tmp_path / "stopped.pcap"
    p = subprocess.Popen([*IPSEC_LAB, "--lab", lab.lab, "capture", "kube-node1", "-w", str(out)], cwd=ROOT,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not tcpdumps(lab.lab) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tcpdumps(lab.lab), "tcpdump never started"
        with PodTraffic(lab, 1):
            pass
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert tcpdumps(lab.lab) == []
    assert pcap.summarize(str(out), lab.spec().pod_supernet).esp > 0


@pytest.mark.lab
def test_a_capture_ends_when_the_lab_goes_down():
    """The lab stops under a running `ipsec-lab capture`: the command ends and its tcpdump is gone."""
    with started_lab("capd", replicas=0) as backend:
        p = subprocess.Popen([*IPSEC_LAB, "--lab", backend.lab, "capture", "kube-node2"], cwd=ROOT,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not (pids := tcpdumps(backend.lab)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pids, "tcpdump never started"
            backend.down()
            p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


RECORDED_LINKS = """\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00
2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether ea:98:6c:3a:43:14
3: cni0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 5a:05:14:5b:86:ee
4: ipsec0: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1400 qdisc pfifo_fast state UNKNOWN mode DEFAULT group default qlen 500\\    link/none  promiscuity 0 \\    tun type tun pi off vnet_hdr off persist off
5: vetha8e3d318@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1400 qdisc noqueue master cni0 state UP mode DEFAULT group default \\    link/ether 96:6b:35:e7:25:5f
7: ipsec-n2@NONE: <NOARP,UP,LOWER_UP> mtu 1400 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/none  promiscuity 0 \\    xfrm if_id 0x2 addrgenmode eui64
"""
RECORDED_ADDRS = """\
2: eth0    inet 192.168.56.11/24 brd 192.168.56.255 scope global eth0\\       valid_lft forever preferred_lft forever
3: cni0    inet 10.128.1.1/24 brd 10.128.1.255 scope global cni0\\       valid_lft forever preferred_lft forever
"""


def test_interfaces_are_classified_underlay_first():
    """Recorded on this machine (`ip -o -d link show`, `ip -o -4 addr show` in a netns node), except the
    XFRM line: this kernel has no XFRM interfaces, so it is written from iproute2's `-d` format."""
    got = [(i.name, i.kind) for i in classify_links(RECORDED_LINKS, RECORDED_ADDRS, "192.168.56.11")]
    assert got == [("eth0", "underlay"), ("cni0", "pod bridge"), ("ipsec-n2", "XFRM interface"),
                   ("ipsec0", "libipsec TUN"), ("vetha8e3d318", "pod veth")]
