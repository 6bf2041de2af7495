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
from tui.lab.proc import Result
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
    return vp.HostFacts(vagrant=vagrant, mem_available_mb=32000,
                        provider_problems={"virtualbox": "VirtualBox is not installed", "libvirt": None},
                        vbox_networks=[vp.VIRTUALBOX_HOSTONLY])


class Recorder:
    def __init__(self) -> None:
        self.events = []

    def __call__(self, event) -> None:
        self.events.append(event)

    def lines(self, **match) -> list[OutputLine]:
        return [e for e in self.events if isinstance(e, OutputLine)
                and all(getattr(e, k) == v for k, v in match.items())]


def make_backend(lab: str, rec: Recorder) -> VagrantBackend:
    b = VagrantBackend(lab, Reporter(rec), host=host_facts(shutil.which("vagrant")))
    # No SSH here: the mesh is reported up, as a node would report it (tested for real over SSH
    # in test_vagrant_ssh.py).
    b._sas = lambda node: parsers.parse_swanctl_raw(MESH_UP[node])  # type: ignore[method-assign]
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
    assert steps[:3] == ["render node configuration", "vagrant up (libvirt, 3 VMs)", "wait for the IPsec mesh"]
    assert all(e.ok for e in rec.events if isinstance(e, StepFinished))
    # The run state points the CLI at this backend; the spec is what the Vagrantfile reads.
    state = json.loads(b.paths.state_file.read_text())
    assert state["backend"] == "vagrant" and state["phase"] == "up" and state["provider"] == "libvirt"
    assert b.exists() and b.spec() == LabSpec.build("vgflow", 3)
    with pytest.raises(UsageError, match="already up"):
        b.up(LabSpec.build("vgflow", 3))

    # status: python-vagrant's machine-readable status parse
    assert b.machine_states() == {f"kube-node{i}": "running" for i in (1, 2, 3)}

    # reboot: `vagrant reload NODE`, streamed; then the node must answer again
    # While it boots, SSH first cannot connect at all, then sshd answers before the vagrant user
    # may log in (exit 255, as ssh reports it); the third try gets through.
    ran: list[tuple[str, list[str]]] = []
    answers = iter([LabError("cannot reach kube-node2 over SSH: NoValidConnectionsError: [Errno None] "
                             "Unable to connect to port 22 on 192.168.121.57"),
                    Result(("true",), 255, "", "Connection closed by remote host")])

    def fake_exec(node, argv, **kw):
        ran.append((node, list(argv)))
        if list(argv) == ["true"]:
            got = next(answers, None)
            if isinstance(got, Exception):
                raise got
            if got is not None:
                return got
        return Result(tuple(argv), 0, "", "")

    b.exec = fake_exec  # type: ignore[method-assign]
    b.reboot_poll_s = 0.01
    b.reboot("kube-node2")
    assert calls(fake)[-1]["argv"] == ["reload", "kube-node2", "--machine-readable"]
    assert [argv for _node, argv in ran].count(["true"]) == 3  # the wait loop ran until SSH answered
    # Back up, kube-node2 starts the connection it only answers (to kube-node1): INITIAL_CONTACT.
    assert ran[-1][0] == "kube-node2" and "swanctl --initiate --child mesh-left" in ran[-1][1][-1]
    # Streamed and tagged as it came (the real reload of a machine this host cannot create).
    assert "Domain is not created. Please run `vagrant up` first." in [e.text for e in rec.lines(node="kube-node2")]

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
def test_node_argv_is_vagrant_ssh_with_the_labs_environment(fake):
    b = make_backend("vgargv", Recorder())
    vf.write_lab_files(LabSpec.build("vgargv", 3), b.files)
    argv = b.node_argv("kube-node2", ["swanctl", "--list-sas"])
    assert argv[0] == "env" and f"IPSEC_LAB_SPEC={b.files.spec_file}" in argv
    i = argv.index("ssh")
    assert argv[i - 1].endswith("vagrant")
    assert argv[i + 1:] == ["kube-node2", "--no-tty", "-c", "sudo -n -- swanctl --list-sas"]
    assert "--no-tty" not in b.node_argv("kube-node1", ["bash", "-i"], interactive=True)
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
