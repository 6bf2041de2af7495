"""The Vagrant backend's Fabric layer against REAL OpenSSH servers running inside a netns lab.

What is real here: a 3-node netns lab (charon per node, IPsec mesh, CNI pods), one `sshd` per
node listening on the node's underlay address, Fabric/paramiko connections built from
`vagrant ssh-config` text, and every command (swanctl, ping, curl, tcpdump, cat) run over SSH.
What is replayed: the `vagrant` executable itself (tests/fixtures/vagrant/fake-vagrant replays
recorded machine-readable output, and prints the ssh-config this test writes).

Reaching the nodes: the host's root namespace has no route to the lab's underlay, so the
ssh-config carries a ProxyCommand that relays the SSH stream from inside the lab's underlay
namespace (`ip netns exec <underlay ns> python netns_relay.py %h %p`), as Vagrant's own
ssh-config does with config.ssh.proxy_command. The production code path is unchanged: ssh-config
text in, Fabric connection out. The SSH user is root (a netns node has no sudo); on a VM it is
`vagrant` and commands are prefixed with `sudo -n --`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import lab_namespaces, unique_lab, wait_for
from tui.backends import ssh
from tui.backends import vagrant_files as vf
from tui.backends import vagrant_preflight as vp
from tui.lab import commands, naming, probes, render
from tui.lab.errors import LabError
from tui.lab.events import Reporter
from tui.lab.model import LabSpec

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "vagrant"
SSHD = "/usr/sbin/sshd"

pytestmark = [pytest.mark.lab]

SSHD_CONFIG = """\
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
Subsystem sftp internal-sftp
LogLevel INFO
"""

SSH_CONFIG = """\
Host {node}
  HostName {ip}
  User root
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "{identity}"
  IdentitiesOnly yes
  LogLevel FATAL
  ProxyCommand ip netns exec {underlay_ns} {python} {relay} %h %p
"""


class Sshd:
    """One sshd in a netns node, started by us and stopped by its PID."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            if "Server listening on" in line:
                self.listening.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture(scope="module")
def ssh_lab(tmp_path_factory):
    """Every step registers its undo on an ExitStack as soon as it exists, so a failing step (or a
    failing undo: ExitStack runs the others and re-raises) leaves no sshd, lab or PATH patch."""
    if shutil.which("ssh-keygen") is None or not os.path.exists(SSHD):
        pytest.fail("openssh-server is not installed (run `scripts/setup.sh --test`)")
    from tui.backends.netns import NetnsBackend
    from tui.backends.vagrant import VagrantBackend

    tmp = tmp_path_factory.mktemp("vgssh")
    netns_lab, vlab = unique_lab("vn"), unique_lab("vv")
    sshds: list[Sshd] = []
    with contextlib.ExitStack() as stack:
        netns = NetnsBackend(netns_lab)
        spec = LabSpec.build(netns_lab, 3)
        stack.callback(lambda: netns.exists() and netns.down())
        netns.up(spec)
        netns.deploy(3)  # one bootcamp pod per node, for curl over SSH
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
        shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
        cfg = tmp / "sshd_config"
        cfg.write_text(SSHD_CONFIG.format(host_key=tmp / "host_key", authorized_keys=tmp / "authorized_keys"))
        replay = tmp / "replay"
        shutil.copytree(FIXTURES / "replay", replay)
        for n in spec.node_list():
            # sshd's privilege-separation directory, in the node's own /run
            (netns.paths.node_run(n.name) / "sshd").mkdir(mode=0o755, exist_ok=True)
            d = Sshd(netns.node_argv(n.name, [SSHD, "-D", "-e", "-f", str(cfg), "-o", f"ListenAddress={n.underlay_ip}:22"]))
            sshds.append(d)
            stack.callback(d.stop)  # runs after vb.down() (registered later), before netns.down()
            assert d.listening.wait(10), f"sshd on {n.name} did not start: {d.log}"
            (replay / f"ssh-config-{n.name}.txt").write_text(SSH_CONFIG.format(
                node=n.name, ip=n.underlay_ip, identity=tmp / "client_key", python=sys.executable,
                relay=FIXTURES / "netns_relay.py", underlay_ns=naming.underlay_namespace(netns_lab)))
        bindir = tmp / "bin"
        bindir.mkdir()
        (bindir / "vagrant").symlink_to(FIXTURES / "fake-vagrant")
        mp = pytest.MonkeyPatch()
        stack.callback(mp.undo)
        mp.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        mp.setenv("FAKE_VAGRANT_DIR", str(replay))
        mp.setenv("IPSEC_LAB_VAGRANT_DIR", str(tmp / "labs"))
        mp.setenv("IPSEC_LAB_STATE_ROOT", str(tmp / "run"))
        mp.delenv("VAGRANT_DEFAULT_PROVIDER", raising=False)
        vb = VagrantBackend(vlab, Reporter(), host=vp.HostFacts(
            vagrant=str(bindir / "vagrant"), mem_available_mb=32000,
            provider_problems={"virtualbox": None, "libvirt": None}, vbox_networks=[vp.VIRTUALBOX_HOSTONLY],
            system_libvirtd=True), node_mode="kubeadm")  # the replayed recordings: kubeadm on a laptop's libvirtd
        # replayed `vagrant destroy`, closes the SSH connections, removes the lab's files
        stack.callback(lambda: vb.exists() and vb.down())
        # Replayed `vagrant up`; then the backend waits for the mesh over SSH: the real one.
        vb.up(LabSpec.build(vlab, 3))
        yield netns, vb, sshds, tmp
    assert all(d.proc.poll() is not None for d in sshds)
    assert not netns.exists() and lab_namespaces(netns_lab) == []


@pytest.mark.timeout(120)
def test_status_reads_the_real_mesh_over_ssh(ssh_lab):
    netns, vb, _sshds, _tmp = ssh_lab
    st = vb.status()
    assert st.backend == "vagrant" and st.datapath == "kernel-xfrm"
    assert len(st.tunnels) == 6 and st.all_tunnels_up, [(t.node, t.name, t.ike_state, t.child_state) for t in st.tunnels]
    real = netns.status()
    for t in st.tunnels:
        r = real.tunnel(t.node, t.name)
        assert r is not None and t.peer == r.peer and t.detail["spi_in"] == r.detail["spi_in"]
        assert t.detail["esp_proposal"] == r.detail["esp_proposal"] == "AES_GCM_16/128"
    assert [n.state for n in st.nodes] == ["ready"] * 3 and all(n.ipsec_state == "running" for n in st.nodes)
    assert [n.ipam_used for n in st.nodes] == [1, 1, 1]  # one pod's address on each node
    assert st.pods == [] and st.services == []  # no kubectl on a netns node


@pytest.mark.timeout(120)
def test_ping_curl_and_stdin_over_ssh(ssh_lab):
    netns, vb, _sshds, _tmp = ssh_lab
    assert probes.ping(vb, "kube-node1", "10.128.3.1")  # node3's cni0, through the tunnel
    res = vb.exec("kube-node2", ["cat"], input="through ssh\n")
    assert res.ok and res.stdout == "through ssh\n"
    pods = netns.status().pods
    replies = probes.http_get_many(vb, "kube-node1", [f"http://{p.ip}:8080" for p in pods])
    assert [r.body for r in replies] == [probes.bootcamp_reply(p.name) for p in pods]
    res = vb.exec("kube-node3", ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    with pytest.raises(LabError, match="did not finish within 1 s"):
        vb.exec("kube-node1", ["sleep", "5"], timeout=1)


@pytest.mark.timeout(120)
def test_tunnel_down_over_ssh_heals(ssh_lab):
    _netns, vb, _sshds, _tmp = ssh_lab
    before = vb.status().tunnel("kube-node1", "mesh-left")
    assert vb.tunnel_down("kube-node1", "mesh-left") == "swanctl --terminate --ike mesh-left"

    def replaced():
        t = vb.status().tunnel("kube-node1", "mesh-left")
        return t.up and t.detail.get("spi_in") != before.detail["spi_in"]

    wait_for(replaced, 30, 0.2, "mesh-left replaced")


@pytest.mark.timeout(120)
def test_capture_over_ssh_sees_only_esp(ssh_lab):
    _netns, vb, _sshds, _tmp = ssh_lab
    handle = vb.start_capture("vgtest")
    assert probes.ping(vb, "kube-node1", "10.128.2.1", count=5)
    path = vb.stop_capture(handle)
    assert os.path.exists(path)

    def count(flt: str) -> int:
        cp = subprocess.run(["tcpdump", "-nr", path, flt], capture_output=True, text=True)
        return len(cp.stdout.splitlines())

    assert count("udp port 4500") >= 10  # five pings there and back, ESP in UDP
    assert count("net 10.128.0.0/16") == 0  # no cleartext pod traffic on the wire


@pytest.mark.timeout(60)
def test_kubectl_steps_fail_in_one_clear_line_without_a_cluster(ssh_lab):
    _netns, vb, _sshds, _tmp = ssh_lab
    with pytest.raises(LabError) as err:
        vb.deploy(3)
    assert str(err.value).startswith("kubectl get deployment kubernetes-bootcamp -o name") or \
        "kubectl" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.timeout(60)
def test_unreachable_node_is_one_clear_line(ssh_lab, tmp_path):
    netns, _vb, _sshds, tmp = ssh_lab
    text = SSH_CONFIG.format(node="kube-node1", ip="192.168.56.11", identity=tmp / "client_key",
                             python=sys.executable, relay=FIXTURES / "netns_relay.py",
                             underlay_ns=naming.underlay_namespace(netns.lab)).replace("Port 22", "Port 2222")
    shells = ssh.NodeShells(lambda node: text, connect_timeout=5)
    try:
        with pytest.raises(LabError, match="cannot reach kube-node1 over SSH"):
            shells.run("kube-node1", ["true"])
    finally:
        shells.close()


@pytest.mark.timeout(60)
def test_rendered_vm_config_loads_into_a_real_charon(ssh_lab):
    """The VM's swanctl.conf (kernel-xfrm: if_id, no UDP encapsulation) and strongswan.conf
    (charon-systemd section) parse and load in strongSwan 5.9.8, the version the Debian box runs.
    SAs cannot be installed with it here: this kernel has no XFRM interfaces and no ESP.
    It replaces kube-node1's connections, and puts the lab's own back before it ends (so the
    other tests hold in any order)."""
    netns, vb, _sshds, _tmp = ssh_lab
    spec = vb.spec()
    secrets = {k: "cd" * 32 for k in ("kube-node1|kube-node2", "kube-node1|kube-node3", "kube-node2|kube-node3")}
    kube = render.KubeParams(minor="v1.34", token="abcdef.0123456789abcdef", ca_cert_hash="sha256:" + "0" * 64,
                             bootcamp_images=vf.BOOTCAMP_IMAGES)
    files = render.render_vm_node(spec, spec.node(1), secrets=secrets, kube=kube)
    run = netns.paths.node_run("kube-node1")
    (run / "vm-swanctl.conf").write_text(files["swanctl.conf"].content)
    (run / "vm-strongswan.conf").write_text(files["strongswan.conf"].content)
    with contextlib.ExitStack() as restore:
        restore.callback(restore_mesh, vb)
        check_vm_config_loads(vb)


def restore_mesh(vb) -> None:
    """kube-node1's own connections back (start_action=start initiates them), and the mesh up."""
    res = vb.exec("kube-node1", commands.swanctl_load_all())
    assert res.ok, res.stdout + res.stderr
    vb.wait_for_mesh(vb.spec(), timeout=30)


def check_vm_config_loads(vb) -> None:
    res = vb.exec("kube-node1", ["swanctl", "--load-all", "--noprompt", "--file", "/run/vm-swanctl.conf"])
    assert res.ok, res.stdout + res.stderr
    assert "loaded connection 'mesh-left'" in res.stdout and "loaded connection 'mesh-right'" in res.stdout
    assert "successfully loaded 2 connections, 0 unloaded" in res.stdout
    conns = vb.exec("kube-node1", ["swanctl", "--list-conns"]).stdout
    assert "mesh-left: IKEv2" in conns and "remote: 10.128.2.0/24" in conns
    # strongswan.conf with the charon-systemd reference parses (swanctl reads its own section).
    res = vb.exec("kube-node1", ["env", "STRONGSWAN_CONF=/run/vm-strongswan.conf", "swanctl", "--list-conns"])
    assert res.ok and "mesh-left" in res.stdout, res.stderr


@pytest.mark.timeout(60)
def test_vm_boot_script_runs_in_a_netns_node_up_to_the_xfrm_interfaces(ssh_lab):
    """The VM's boot script (what ipsec-lab-boot.service runs) over SSH in a real node: cni0, the
    cleartext guard and forwarding run for real; the first XFRM interface is where this kernel
    stops it (no XFRM interfaces here; the Debian box's kernel has them)."""
    _netns, vb, _sshds, _tmp = ssh_lab
    spec = vb.spec()
    secrets = {k: "cd" * 32 for k in ("kube-node1|kube-node2", "kube-node1|kube-node3", "kube-node2|kube-node3")}
    kube = render.KubeParams(minor="v1.34", token="abcdef.0123456789abcdef", ca_cert_hash="sha256:" + "0" * 64,
                             bootcamp_images=vf.BOOTCAMP_IMAGES)
    script = render.render_vm_node(spec, spec.node(2), secrets=secrets, kube=kube)["node-boot.sh"].content
    res = vb.exec("kube-node2", ["env", "UNDERLAY_IF=eth0", "sh", "-x", "-s"], input=script, timeout=20)
    ran = [line[2:] for line in res.stderr.splitlines() if line.startswith("+ ")]
    assert "ip addr replace 10.128.2.1/24 dev cni0" in ran
    assert "ip route replace unreachable 10.128.0.0/16" in ran
    assert ran[-1] == "ip link add ipsec-n1 type xfrm dev eth0 if_id 1" and res.returncode != 0
    routes = vb.exec("kube-node2", ["ip", "route", "show", "10.128.0.0/16"]).stdout
    assert "unreachable 10.128.0.0/16" in routes


@pytest.mark.timeout(60)
def test_charon_log_is_read_from_the_node_over_ssh(ssh_lab):
    """The Logs screen's source on Vagrant: the node's /var/log/charon.log, fetched over SSH by
    offset; the same lines the node wrote, each once, and none again from the offset returned."""
    netns, vb, _sshds, _tmp = ssh_lab
    assert vb.charon_log("kube-node2") is None  # not a file on this machine
    local, _ = netns.read_charon_log("kube-node2", 0)
    lines, offset = vb.read_charon_log("kube-node2", 0)
    assert len(lines) >= 10 and lines[:len(local)] == local[:len(lines)]
    assert any("IKE_SA mesh-left" in line and "established" in line for line in lines)
    again, offset2 = vb.read_charon_log("kube-node2", offset)
    whole, _ = netns.read_charon_log("kube-node2", 0)
    assert offset2 >= offset and lines + again == whole[:len(lines) + len(again)]
    # A log shorter than the offset was started anew (a reboot): read from its start.
    fresh, _ = vb.read_charon_log("kube-node2", offset2 + 10**9)
    assert fresh[:3] == lines[:3]
