"""The python-vagrant flow against tests/fixtures/vagrant/fake-vagrant, a stand-in `vagrant` that
REPLAYS recordings of Vagrant's machine-readable output (real ones from this machine's Vagrant
where no VM is needed; replay/README.md says which): the
commands python-vagrant issues, line-by-line streaming into the event stream with stdout and
stderr tagged per machine, failure and rollback, status parsing, and the lab's files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tui.lab import parsers
from tui.lab import pcap
from tui.backends import vagrant_files as vf
from tui.backends import vagrant_output as vo
from tui.backends import vagrant_preflight as vp
from tui.backends.vagrant import VagrantBackend
from tui.lab.errors import LabError, UsageError
from tui.lab.events import OutputLine, Reporter, StepFinished, StepStarted
from tui.lab.model import LabSpec
from tui.lab.vici_status import tunnel_statuses

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "vagrant"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """PATH with the stand-in vagrant first; recordings copied to a scratch folder."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "vagrant").symlink_to(FIXTURES / "fake-vagrant")
    replay = tmp_path / "replay"
    shutil.copytree(FIXTURES / "replay", replay)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VAGRANT_DIR", str(replay))
    monkeypatch.setenv("IPSEC_LAB_VAGRANT_DIR", str(tmp_path / "labs"))
    monkeypatch.setenv("IPSEC_LAB_STATE_ROOT", str(tmp_path / "run"))  # never the host's /run
    monkeypatch.delenv("FAKE_VAGRANT_FAIL", raising=False)
    monkeypatch.delenv("VAGRANT_DEFAULT_PROVIDER", raising=False)
    return replay


def calls(replay: Path) -> list[dict]:
    path = replay / "calls.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def host_facts(vagrant: str) -> vp.HostFacts:
    # The host's facts as preflight sees them on a machine with libvirt; here they are given.
    # The recordings are of the kubeadm node mode on the machine's own libvirtd (a laptop's).
    return vp.HostFacts(vagrant=vagrant, mem_available_mb=32000,
                        provider_problems={"virtualbox": "VirtualBox is not installed", "libvirt": None},
                        vbox_networks=[vp.VIRTUALBOX_HOSTONLY], system_libvirtd=True)


class Recorder:
    def __init__(self) -> None:
        self.events = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def lines(self, **match) -> list[OutputLine]:
        return [e for e in self.events if isinstance(e, OutputLine)
                and all(getattr(e, k) == v for k, v in match.items())]


def make_backend(lab: str, rec: Recorder) -> VagrantBackend:
    b = VagrantBackend(lab, Reporter(rec), host=host_facts(shutil.which("vagrant")), node_mode="kubeadm")
    # No SSH here: the mesh is reported up, as a node would report it (tested for real over SSH
    # in test_vagrant_ssh.py).
    b._sas = lambda node: parsers.parse_swanctl_raw(MESH_UP[node])  # type: ignore[method-assign]
    # No VM, so no SSH configuration to keep after up (tests/test_vagrant_lab.py boots real ones).
    b._keep_ssh_configs = lambda spec: None  # type: ignore[method-assign]
    return b


# Real `swanctl --list-sas --raw` from each node of a 3-node lab with its mesh up (the README
# beside them says how they were recorded).
MESH_UP = {f"kube-node{i}": (ROOT / "tests" / "fixtures" / "swanctl" / f"list-sas-raw-kube-node{i}.txt").read_text()
           for i in (1, 2, 3)}


@pytest.mark.timeout(30)
def test_swanctl_raw_parsing_of_a_real_mesh():
    spec = LabSpec.build("x", 3)
    for node, text in MESH_UP.items():
        sas = parsers.parse_swanctl_raw(text)
        assert sorted(name for name, _ in sas) == ["mesh-left", "mesh-right"]
        statuses = tunnel_statuses(spec.tunnels_of(node), sas)
        assert [(t.ike_state, t.child_state) for t in statuses] == [("ESTABLISHED", "INSTALLED")] * 2
        spi = dict(sas)["mesh-left"]["child-sas"]
        assert next(iter(spi.values()))["spi-in"] in text


@pytest.mark.timeout(120)
def test_up_streams_vagrant_output_and_records_the_lab(fake, monkeypatch):
    rec = Recorder()
    b = make_backend("vgflow", rec)
    b.status = lambda: "status"  # type: ignore[method-assign]  # kubectl needs a cluster
    assert b.up(LabSpec.build("vgflow", 3)) == "status"
    # python-vagrant ran `vagrant up` with the provider preflight chose, machine-readable.
    up = [c for c in calls(fake) if c["argv"][0] == "up"]
    assert len(up) == 1
    assert up[0]["argv"] == ["up", "--provision", "--provider=libvirt", "--machine-readable"]
    files = vf.LabFiles.of("vgflow")
    assert up[0]["env"]["IPSEC_LAB_SPEC"] == str(files.spec_file) and up[0]["env"]["IPSEC_LAB"] == "vgflow"
    assert up[0]["env"]["VAGRANT_DOTFILE_PATH"] == str(files.dir / "vagrant")
    assert up[0]["env"]["VAGRANT_CWD"] == str(ROOT)
    # Every ui line arrives as its own event, tagged with its machine, prefixes stripped.
    n1 = [e.text for e in rec.lines(node="kube-node1")]
    assert "Running provisioner: kube-baseline (shell)..." in n1
    assert "kube-baseline: kube-node1, Kubernetes v1.34" in n1  # %!(VAGRANT_COMMA) unescaped
    assert "ipsec-n2         UNKNOWN        <NOARP,UP,LOWER_UP>" in n1  # \n split into lines
    assert "ipsec-n3         UNKNOWN        <NOARP,UP,LOWER_UP>" in n1
    assert any(e.text.startswith("This node has joined") for e in rec.lines(node="kube-node3"))
    assert rec.lines(text="Bringing machine 'kube-node1' up with 'libvirt' provider...", node=None)
    assert rec.lines(stream="stderr") == []
    # metadata/action lines are not shown to people.
    assert not [e for e in rec.events if isinstance(e, OutputLine) and e.text.startswith("1795")]
    steps = [e.step for e in rec.events if isinstance(e, StepStarted)]
    assert steps[:3] == ["render node configuration", "vagrant up (libvirt, 3 VMs, node mode kubeadm)",
                         "wait for the IPsec mesh"]
    assert all(e.ok for e in rec.events if isinstance(e, StepFinished))
    # The run state points the CLI at this backend; the spec is what the Vagrantfile reads.
    state = json.loads(b.paths.state_file.read_text())
    assert state["backend"] == "vagrant" and state["phase"] == "up" and state["provider"] == "libvirt"
    assert b.exists() and b.spec() == LabSpec.build("vgflow", 3)
    with pytest.raises(UsageError, match="already up"):
        b.up(LabSpec.build("vgflow", 3))

    # status: python-vagrant's machine-readable status parse
    assert b.machine_states() == {f"kube-node{i}": "running" for i in (1, 2, 3)}

    # reboot is a real VM reboot (`systemctl reboot` over SSH): tests/test_vagrant_lab.py.

    removed = b.down()
    assert calls(fake)[-1]["argv"] == ["destroy", "--force", "--machine-readable"]
    assert "Removing domain..." in [e.text for e in rec.lines(node="kube-node3")]
    assert any("VMs of lab vgflow" in r for r in removed)
    assert not files.dir.exists() and not b.paths.dir.exists() and not b.exists()


@pytest.mark.timeout(120)
def test_failed_up_reports_vagrants_error_in_one_line_and_rolls_back(fake, monkeypatch):
    monkeypatch.setenv("FAKE_VAGRANT_FAIL", "up")
    rec = Recorder()
    b = make_backend("vgfail", rec)
    with pytest.raises(LabError) as err:
        b.up(LabSpec.build("vgfail", 3))
    # Vagrant's BatchMultiError says only "An error occurred while executing multiple actions in
    # parallel"; the one line names the first machine's own error instead.
    assert str(err.value) == ("vagrant up failed: Error while connecting to Libvirt: Error making a connection to "
                              "libvirt URI qemu:///system: Call to virConnectOpen failed: Failed to connect socket to "
                              "'/var/run/libvirt/libvirt-sock': No such file or directory.")
    assert rec.lines(text="Bringing machine 'kube-node2' up with 'libvirt' provider...", node=None)
    errors = rec.lines(stream="stderr")
    assert sorted(e.node for e in errors[:3]) == ["kube-node1", "kube-node2", "kube-node3"]  # in parallel
    assert errors[0].text == "An error occurred. The error will be shown after all tasks complete."
    # rolled back: vagrant destroy ran, nothing of the lab is left
    assert [c["argv"][0] for c in calls(fake)][-1] == "destroy"
    assert not vf.LabFiles.of("vgfail").dir.exists() and not b.paths.dir.exists()


@pytest.mark.timeout(60)
def test_no_rollback_when_asked(fake, monkeypatch):
    monkeypatch.setenv("FAKE_VAGRANT_FAIL", "up")
    monkeypatch.setenv("IPSEC_LAB_NO_ROLLBACK", "1")
    b = make_backend("vgkeep", Recorder())
    try:
        with pytest.raises(LabError):
            b.up(LabSpec.build("vgkeep", 3))
        assert "destroy" not in [c["argv"][0] for c in calls(fake)]
        assert vf.LabFiles.of("vgkeep").spec_file.exists()
    finally:
        monkeypatch.delenv("FAKE_VAGRANT_FAIL")
        b.down()
    assert not b.exists()


@pytest.mark.timeout(60)
def test_ssh_config_of_a_machine_not_ready_is_one_line(fake):
    """The real `vagrant ssh-config` of a machine that is not running: exit 1, Vagrant's message on
    stderr; the backend says it in one line."""
    rec = Recorder()
    b = make_backend("vgsshc", rec)
    with pytest.raises(LabError, match="lab 'vgsshc' is not up"):
        b._ssh_config("kube-node1")  # no lab: Vagrant is not even asked (it would make the lab's folder)
    assert calls(fake) == [] and not b.files.dir.exists()
    vf.write_lab_files(LabSpec.build("vgsshc", 3), b.files, mode="kubeadm")
    with pytest.raises(LabError) as err:
        b._ssh_config("kube-node1")
    assert str(err.value) == ("vagrant ssh-config kube-node1 failed: The provider for this Vagrant-managed machine "
                              "is reporting that it is not yet ready for SSH.")
    assert rec.lines(stream="stderr") and all(e.stream == "stderr" for e in rec.lines())


@pytest.mark.timeout(60)
def test_a_failed_destroy_is_one_line(fake, monkeypatch):
    monkeypatch.setenv("FAKE_VAGRANT_FAIL", "destroy")
    b = make_backend("vgdestroy", Recorder())
    vf.write_lab_files(LabSpec.build("vgdestroy", 3), b.files)
    with pytest.raises(LabError) as err:
        b.down()
    assert str(err.value).startswith("vagrant destroy failed: Error while connecting to Libvirt: ")
    assert "\n" not in str(err.value)
    assert b.files.spec_file.exists()  # kept: the VMs may still be there, and `down` can be retried


@pytest.mark.timeout(60)
def test_preflight_failure_changes_nothing(fake, tmp_path):
    b = VagrantBackend("vgpre", Reporter(), host=vp.HostFacts(
        vagrant=shutil.which("vagrant"), mem_available_mb=2000,
        provider_problems={"virtualbox": None, "libvirt": None}, vbox_networks=[vp.VIRTUALBOX_HOSTONLY]))
    with pytest.raises(UsageError, match="not enough memory"):
        b.up(LabSpec.build("vgpre", 3))
    assert calls(fake) == [] and not (tmp_path / "labs").exists() and not b.paths.dir.exists()


@pytest.mark.timeout(60)
def test_node_argv_is_openssh_with_the_kept_ssh_config_in_the_labs_namespace(fake):
    b = make_backend("vgargv", Recorder())
    vf.write_lab_files(LabSpec.build("vgargv", 3), b.files, mode="none",
                       libvirt={"netns": "ilab-vgargv-hv", "own": True, "uri": "qemu:///system?socket=/x"})
    cfg = b.files.ssh_config_file("kube-node2")
    cfg.parent.mkdir(parents=True)
    cfg.write_text("Host kube-node2\n  HostName 192.168.121.12\n  User vagrant\n  Port 22\n")
    argv = b.node_argv("kube-node2", ["swanctl", "--list-sas"])
    # The VMs' networks live in the lab's namespace: ssh starts there, with `vagrant ssh-config`'s text.
    assert argv[:4] == ["ip", "netns", "exec", "ilab-vgargv-hv"]
    assert argv[4:] == ["ssh", "-F", str(cfg), "-q", "-T", "kube-node2", "sudo -n -- swanctl --list-sas"]
    assert calls(fake) == []  # kept after up: no Vagrant start per command
    with pytest.raises(UsageError):
        b.node_argv("kube-node9", ["true"])


@pytest.mark.timeout(30)
def test_machine_readable_parsing():
    m = vo.parse_machine_line("1795800000,kube-node1,ui,detail,    kube-node1: a%!(VAGRANT_COMMA) b\\nc\n")
    assert m == vo.MachineLine(1795800000, "kube-node1", "ui", ("detail", "    kube-node1: a, b\nc"))
    assert vo.parse_machine_line("==> kube-node1: plain human output") is None
    rec = Recorder()
    out = vo.VagrantOutput(Reporter(rec))
    out.feed("==> kube-node1: not machine-readable\n", "stdout")
    assert (rec.events[-1].text, rec.events[-1].node, rec.events[-1].stream) == (
        "not machine-readable", "kube-node1", "stdout")
    out.feed("1,,error-exit,Vagrant::Errors::NoEnvironmentError,A Vagrant environment is required.\\nRun init.\n",
             "stdout")
    assert rec.events[-2].stream == "stderr" and out.last_error() == "A Vagrant environment is required."


@pytest.mark.timeout(30)
def test_kubectl_json_parsing():
    # Real recordings from other clusters (each file's _provenance says where from).
    doc = json.loads((FIXTURES / "kubectl-pods.json").read_text())
    pods = parsers.pods_from_kubectl(doc)
    assert [(p.name, p.node, p.ip, p.state, p.restarts) for p in pods] == [
        ("queue-l4dv8", "minikube", "172.17.0.6", "Running", 0)]
    assert pods[0].created == 1671788205.0  # 2022-12-23T09:36:45Z
    waiting = json.loads((FIXTURES / "kubectl-pod-waiting.json").read_text())
    pods = parsers.pods_from_kubectl({"items": [waiting]})
    # A container waiting names the pod's state, as kubectl's STATUS column does.
    assert [(p.name, p.node, p.ip, p.state) for p in pods] == [
        ("haa-ledss-iopkc", "172.20.1.28", "172.16.77.12", "ImagePullBackOff")]
    svc = parsers.service_from_kubectl({"metadata": {"name": "kubernetes-bootcamp"},
                                   "spec": {"type": "NodePort", "ports": [{"port": 8080, "nodePort": 31990}]}})
    assert (svc.type, svc.port, svc.node_port) == ("NodePort", 8080, 31990)
    nodes = {"items": [{"metadata": {"name": "kube-node1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                       {"metadata": {"name": "kube-node2"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]}
    assert parsers.ready_nodes_from_kubectl(nodes) == {"kube-node1": True, "kube-node2": False}


@pytest.mark.timeout(30)
def test_pcap_merge(tmp_path):
    import struct

    def write_pcap(path, stamps):
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
            for sec, usec, payload in stamps:
                f.write(struct.pack("<IIII", sec, usec, len(payload), len(payload)) + payload)

    write_pcap(tmp_path / "a.pcap", [(10, 5, b"a1"), (12, 0, b"a2")])
    write_pcap(tmp_path / "b.pcap", [(11, 0, b"b1"), (10, 1, b"b0")])
    out = tmp_path / "m.pcap"
    assert pcap.merge([str(tmp_path / "a.pcap"), str(tmp_path / "b.pcap")], str(out)) == 4
    data = out.read_bytes()
    assert data[:24] == (tmp_path / "a.pcap").read_bytes()[:24]
    payloads = []
    off = 24
    while off < len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        payloads.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    assert payloads == [b"b0", b"a1", b"b1", b"a2"]


def test_failed_ssh_handshake_is_one_line_and_nothing_on_stderr():
    """paramiko logs a failed handshake with a traceback from its transport thread; outside pytest's
    log capture that lands on stderr, over the TUI. Run where nothing captures logging."""
    import subprocess
    import sys

    script = (
        "from tui.backends import ssh\n"
        "from tui.lab.errors import LabError\n"
        "text = 'Host kube-node1\\n  HostName 192.0.2.1\\n  User root\\n  ProxyCommand true\\n'\n"
        "shells = ssh.NodeShells(lambda node: text, connect_timeout=3)\n"
        "try:\n"
        "    shells.run('kube-node1', ['true'])\n"
        "except LabError as e:\n"
        "    print(e)\n"
        "shells.close()\n"
        "import time; time.sleep(0.5)\n"
    )
    cp = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=ROOT)
    # Which paramiko error wins the race (ProxyCommandFailure, "No existing session") varies.
    assert cp.stdout.startswith("cannot reach kube-node1 over SSH: ") and cp.stdout.count("\n") == 1
    assert cp.stderr == ""


@pytest.mark.timeout(30)
def test_progress_updates_never_reach_the_stream():
    """`vagrant box add` and vagrant-libvirt's volume upload write thousands of "\\r"-separated
    progress updates (machine-readable: escaped in one ui line; human: on stderr)."""
    rec = Recorder()
    out = vo.VagrantOutput(Reporter(rec))
    updates = "\\r".join(f"Progress: {i}% (Rate: 1/s%!(VAGRANT_COMMA) Estimated time remaining: --:--:--)" for i in range(100))
    out.feed(f"1795800000,kube-node1,ui,info,{updates}\\nImage upload done\n", "stdout")
    out.feed("\r".join(f"    kube-node2: [Progress] {i}% (Rate: 0/s)" for i in range(50)) + "\n", "stdout")
    out.feed("1795800000,,ui,detail,Progress: 100%\n", "stdout")
    texts = [e.text for e in rec.events if isinstance(e, OutputLine)]
    assert texts == ["Image upload done"]
