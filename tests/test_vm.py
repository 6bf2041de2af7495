"""The Vagrant backend's machinery on this host: the offline box recipe and the lab's own libvirtd.

The libvirtd tests start the real daemons (libvirt-daemon, from scripts/setup.sh --vm) in a
namespace of the test's own and prove that stopping leaves nothing: no process, no namespace,
no state, also when the process that started them was killed with -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tui.vm import box, hypervisor

from .conftest import ROOT, unique_lab


# ------------------------------------------------------------------------------------ no root
def test_the_recipe_digest_follows_every_ingredient():
    base = box.Recipe(sources="Types: deb\nURIs: http://deb.debian.org/debian\n")
    assert base.digest() == box.Recipe(sources=base.sources).digest()
    assert base.digest() != box.Recipe(sources=base.sources, packages=(*box.PACKAGES, "vim")).digest()
    assert base.digest() != box.Recipe(sources=base.sources, hooks=box.HOOKS[:-1]).digest()
    assert base.digest() != box.Recipe(sources=base.sources + "\n# another mirror\n").digest()
    assert box.box_file(base).name == f"ipsec-lab-debian12-{base.digest()}.box"


def test_the_box_holds_what_a_node_runs_offline():
    must = {"linux-image-cloud-amd64", "openssh-server", "sudo", "strongswan-charon", "strongswan-swanctl",
            "strongswan-starter", "libstrongswan-standard-plugins", "containernetworking-plugins", "iptables",
            "tcpdump", "curl", "python3", "iperf3"}
    assert must <= set(box.PACKAGES)


def test_only_the_hosts_enabled_debian_mirrors_are_used(tmp_path):
    src = tmp_path / "debian.sources"
    src.write_text(textwrap.dedent("""\
        Types: deb
        URIs: http://deb.debian.org/debian
        Suites: bookworm
        Components: main

        Types: deb
        URIs: https://example.org/other
        Suites: nodistro

        Types: deb
        URIs: http://deb.debian.org/debian-security
        Suites: bookworm-security
        Enabled: no
        """))
    assert box.debian_sources(src) == "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n"


def test_grub_boots_the_kernel_by_label_on_the_serial_console():
    cfg = box.grub_cfg("6.1.0-99-cloud-amd64")
    assert "linux /boot/vmlinuz-6.1.0-99-cloud-amd64 root=LABEL=vmroot" in cfg
    assert "initrd /boot/initrd.img-6.1.0-99-cloud-amd64" in cfg and "console=ttyS0" in cfg


# ------------------------------------------------------------------------------------ the lab's libvirtd
def leftovers(lab: str, state: Path) -> list[str]:
    ns = hypervisor.namespace(lab)
    left = []
    if os.path.exists(f"/run/netns/{ns}"):
        left.append(f"namespace {ns}")
    if state.exists():
        left.append(f"state {state}")
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(state).encode() in cmd:
                left.append(f"process {pid}: {cmd[:80]!r}")
    return left


@pytest.fixture
def lab_state(tmp_path):
    lab = unique_lab("hv")
    state = tmp_path / "hv"
    yield lab, state
    hypervisor.PrivateLibvirt(lab, state).stop(lambda _: None)


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_the_labs_libvirtd_runs_in_its_namespace_and_stops_without_a_trace(lab_state):
    lab, state = lab_state
    hv = hypervisor.PrivateLibvirt(lab, state)
    lines: list[str] = []
    hv.start(lines.append)
    assert hv.running()
    assert any("runs in namespace" in line for line in lines)
    # Its pool is the lab's directory; its networks would live in the lab's namespace, not the host's.
    pools = hv.virsh("pool-list", "--name").stdout.split()
    assert pools == [hypervisor.POOL]
    assert hv.virsh("pool-dumpxml", hypervisor.POOL).stdout.count(str(state / "pool")) == 1
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    hv.virsh("net-define", str(_net_xml(state, lab)))
    hv.virsh("net-start", f"{lab}-net")
    ns_links = subprocess.run(["ip", "-n", hv.ns, "-o", "link"], capture_output=True, text=True).stdout
    assert f"{lab}br" in ns_links and f"{lab}br" not in host_links
    assert f"{lab}br" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    # The host's /run gets nothing: the daemons' files are under the lab's state.
    assert not Path("/run/libvirt/libvirt-sock").exists() or hypervisor.system_libvirtd()
    assert (state / "run" / "libvirt-sock").exists()

    removed = hv.stop(lambda _: None)
    assert any(r.startswith("libvirtd (pid") for r in removed) and any(r.startswith("namespace") for r in removed)
    assert leftovers(lab, state) == []
    assert hv.stop(lambda _: None) == []  # twice is fine


def _net_xml(state: Path, lab: str) -> Path:
    xml = state / "net.xml"
    xml.write_text(f"<network><name>{lab}-net</name><bridge name='{lab}br'/>"
                   "<ip address='192.168.200.1' netmask='255.255.255.0'/></network>")
    return xml


@pytest.mark.lab
@pytest.mark.timeout(120)
def test_stop_works_after_the_starter_was_killed_with_minus_9(lab_state):
    lab, state = lab_state
    code = ("import sys, time; from pathlib import Path; from tui.vm.hypervisor import PrivateLibvirt; "
            "PrivateLibvirt(sys.argv[1], Path(sys.argv[2])).start(print); print('started', flush=True); time.sleep(600)")
    p = subprocess.Popen([sys.executable, "-c", code, lab, str(state)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "started" not in (p.stdout.readline() if p.stdout else "") and time.monotonic() < deadline:
            pass
        assert hypervisor.PrivateLibvirt(lab, state).running()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    hypervisor.PrivateLibvirt(lab, state).stop(lambda _: None)
    assert leftovers(lab, state) == []


@pytest.mark.lab
def test_acceleration_is_probed_and_explained(tmp_path):
    kernel = box.cached() and box.kernel_file(box.Recipe())
    accel, why = hypervisor.probe_accel(kernel or None, cache=tmp_path / "accel.json")
    assert accel in ("kvm", "tcg") and why
    if Path("/sys/module/kvm_pvm").exists() and kernel:
        assert accel == "tcg" and "KVM-PVM" in why  # this project's CI machines
    if kernel:
        assert hypervisor.probe_accel(kernel, cache=tmp_path / "accel.json") == (accel, why)  # cached


@pytest.mark.lab
@pytest.mark.timeout(60)
def test_a_thread_reaches_into_the_labs_namespace_and_the_process_stays_out(request):
    from tui.vm import netns

    ns = f"ilab-{unique_lab('ns')}-hv"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    request.addfinalizer(lambda: subprocess.run(["ip", "netns", "del", ns]))
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                               "import socket; s = socket.create_server(('127.0.0.1', 2299)); print('up', flush=True); "
                               "c, _ = s.accept(); c.sendall(b'SSH-2.0-lab'); c.close()"],
                              stdout=subprocess.PIPE, text=True)
    request.addfinalizer(server.kill)
    assert server.stdout is not None and server.stdout.readline().strip() == "up"
    # A process started from the thread lives in the namespace: it sees only its loopback.
    links = netns.in_netns(ns, lambda: subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout)
    assert [line.split(": ")[1] for line in links.splitlines()] == ["lo"]
    # A socket connected there keeps working here; this thread never moved.
    here = os.readlink("/proc/thread-self/ns/net")
    sock = netns.connect(ns, "127.0.0.1", 2299)
    assert sock.recv(64) == b"SSH-2.0-lab"
    sock.close()
    assert os.readlink("/proc/thread-self/ns/net") == here
    with pytest.raises(ConnectionRefusedError):
        netns.connect(None, "127.0.0.1", 2299, timeout=2)  # not there on the host's side
