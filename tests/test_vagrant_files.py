"""The Vagrant backend's files, checked where no VM can run: rendered node files against goldens,
shellcheck of the provisioning scripts, `vagrant validate` for both providers, the cluster CA,
and preflight (one clear line, nothing changed)."""

from __future__ import annotations

import json
import os
import re
import tomllib
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tui.backends import vagrant_files as vf
from tui.backends import vagrant_preflight as vp
from tui.lab import render
from tui.lab.errors import UsageError
from tui.lab.model import LabSpec

from . import goldens

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "vagrant"
# Fixed inputs so that rendering is deterministic (real labs get random ones): tests/goldens.py.
PSK, KUBE, psks = goldens.PSK, goldens.KUBE, goldens.psks


@pytest.mark.timeout(30)
@pytest.mark.parametrize("node", ["kube-node1", "kube-node2", "kube-node3"])
def test_vm_node_files_match_goldens(node):
    spec = LabSpec.build("lab", 3)
    files = render.render_vm_node(spec, spec.node(node), secrets=psks(spec), kube=KUBE)
    assert set(files) == set(render.VM_FILES) - set(render.NONE_ONLY_FILES)
    goldens.check(goldens.vm_node(node))
    assert files["swanctl.conf"].mode == 0o600 and files["kubeadm.yaml"].mode == 0o600


@pytest.mark.timeout(30)
def test_vm_node_files_of_the_offline_mode_match_goldens():
    """Node mode "none" (offline, no Kubernetes): no kubeadm or containerd config, Debian's CNI dir."""
    spec = LabSpec.build("lab", 3)
    files = render.render_vm_node(spec, spec.node(1), secrets=psks(spec), kube=replace(KUBE, mode="none"))
    assert set(files) == set(render.VM_FILES) - set(render.KUBEADM_ONLY_FILES)
    goldens.check(goldens.vm_node("kube-node1", "none"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("datapath", render.DATAPATHS)
def test_netns_node_files_match_goldens(datapath):
    """The netns lab's files are unchanged by the Vagrant backend's additions."""
    spec = LabSpec.build("lab", 3)
    files = render.render_node(spec, spec.node(1), datapath=datapath, secrets=psks(spec))
    assert set(files) == set(render.NODE_FILES)
    goldens.check(goldens.netns_node(datapath))


@pytest.mark.timeout(30)
def test_kube_proxy_rules_match_goldens():
    """kube-proxy's nat table for a NodePort service, rendered from kube-proxy-rules.j2."""
    goldens.check(goldens.kube_proxy())


def test_golden_check_fails_on_a_changed_or_missing_file():
    """The comparison can fail, and nothing in the suite turns it into a write."""
    real = goldens.GOLDEN / "netns" / "kube-proxy" / "kube-node1-no-endpoints.rules"
    before = real.read_text()
    with pytest.raises(AssertionError, match="differs"):
        goldens.check({real: before + "-A FORWARD -j ACCEPT\n"})
    with pytest.raises(AssertionError, match="is missing"):
        goldens.check({goldens.GOLDEN / "no-such-golden": "x"})
    assert real.read_text() == before


@pytest.mark.timeout(30)
def test_vm_files_share_the_netns_templates():
    """Same swanctl.conf, CNI config and boot script as a netns node on the kernel-xfrm path,
    except the private interface, which a VM names at boot."""
    spec = LabSpec.build("lab", 3)
    vm = render.render_vm_node(spec, spec.node(2), secrets=psks(spec), kube=KUBE)
    ns = render.render_node(spec, spec.node(2), datapath="kernel-xfrm", secrets=psks(spec))
    # The same connections, but MOBIKE off: a VM's management NIC must never carry the tunnels.
    vm_swanctl = vm["swanctl.conf"].content
    assert vm_swanctl.count("        mobike = no\n") == 2 and "mobike" not in ns["swanctl.conf"].content
    assert re.sub(r"^\s*#.*\n|^\s*mobike = no\n", "", vm_swanctl, flags=re.M) == \
        re.sub(r"^\s*#.*\n", "", ns["swanctl.conf"].content, flags=re.M)
    assert vm["10-ipsec-lab.conflist"].content == ns["10-ipsec-lab.conflist"].content
    # The boot script: the netns one, plus cni0's address on each XFRM interface (for kube-proxy's
    # MASQUERADE; netns nodes SNAT to cni0 in their own NodePort rules).
    vm_boot = vm["node-boot.sh"].content
    assert re.findall(r"^ip addr replace 10\.128\.2\.1/32 dev (ipsec-n\d)$", vm_boot, re.M) == ["ipsec-n1", "ipsec-n3"]
    assert re.sub(r"^ip addr replace .*/32 dev ipsec-n\d\n", "", vm_boot, flags=re.M) == \
        ns["node-boot.sh"].content.replace("dev eth0", 'dev "$UNDERLAY_IF"')
    # The netns file plus, in the charon section, the start scripts: load swanctl.conf, then start
    # the connections this node only answers (kube-node2 answers kube-node1: mesh-left).
    vm_conf, ns_conf = vm["strongswan.conf"].content, ns["strongswan.conf"].content
    assert "start-scripts {\n        swanctl = /usr/sbin/swanctl --load-all --noprompt\n" in vm_conf
    assert re.findall(r"swanctl --initiate --child (\S+)", vm_conf) == ["mesh-left"]
    assert vm_conf.replace(vm_conf[vm_conf.index("    # On a VM"):vm_conf.index("    }\n}\n") + 6], "") == ns_conf
    first = render.render_vm_node(spec, spec.node(1), secrets=psks(spec), kube=KUBE)["strongswan.conf"].content
    assert "announce" not in first  # kube-node1 starts all of its connections itself
    assert "charon-systemd" not in vm_conf
    kubeadm = vm["kubeadm.yaml"].content
    assert "kind: JoinConfiguration" in kubeadm and 'apiServerEndpoint: "10.128.1.1:6443"' in kubeadm
    assert 'value: "192.168.56.12"' in kubeadm  # kubelet node IP = the private address
    first = render.render_vm_node(spec, spec.node(1), secrets=psks(spec), kube=KUBE)["kubeadm.yaml"].content
    assert "kind: InitConfiguration" in first and "taints: []" in first and 'advertiseAddress: "10.128.1.1"' in first
    unit = vm["ipsec-lab-boot.service"].content
    assert "Before=strongswan.service kubelet.service" in unit
    assert "ExecStart=/usr/local/sbin/ipsec-lab-node-boot" in unit
    strongswan = vm["strongswan.service"].content
    assert "ExecStart=/usr/sbin/ipsec start --nofork" in strongswan
    assert "After=network-online.target ipsec-lab-boot.service" in strongswan and "Before=kubelet.service" in strongswan


def vm_files(mode: str, node: int = 1) -> dict[str, render.RenderedFile]:
    spec = LabSpec.build("lab", 3)
    return render.render_vm_node(spec, spec.node(node), secrets=psks(spec), kube=replace(KUBE, mode=mode))


def env_of(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode,cni_dir", [("kubeadm", "/opt/cni/bin"), ("none", "/usr/lib/cni")])
def test_node_mode_sets_the_cni_bin_dir(mode, cni_dir):
    """kubernetes-cni installs the plugins in /opt/cni/bin, Debian's containernetworking-plugins
    (the offline box) in /usr/lib/cni: node.env, containerd's config and the backend agree."""
    files = vm_files(mode)
    env = env_of(files["node.env"].content)
    assert env["NODE_MODE"] == mode and env["CNI_BIN_DIR"] == cni_dir == render.cni_bin_dir(mode)
    if mode == "kubeadm":
        cri = tomllib.loads(files["containerd.toml"].content)["plugins"]["io.containerd.cri.v1.runtime"]
        assert cri["cni"]["bin_dirs"] == [cni_dir] and cri["cni"]["conf_dir"] == "/etc/cni/net.d"
        assert env["KUBE_MINOR"] == KUBE.minor and "BOOTCAMP_IMAGES" in env
    else:
        assert "KUBE_MINOR" not in env and "kubelet" not in files["ipsec-lab-boot.service"].content
        assert "kubelet" not in files["strongswan.service"].content
        # The plugins the conflist names are the ones Debian's package holds (installed here too).
        plugins = [p["type"] for p in json.loads(files["10-ipsec-lab.conflist"].content)["plugins"]]
        assert all(os.access(Path(cni_dir) / p, os.X_OK) for p in [*plugins, "host-local"]), plugins
    from tui.backends.vagrant import VagrantBackend
    assert VagrantBackend.cni_bin_dir == render.cni_bin_dir(vf.DEFAULT_NODE_MODE)


def test_unknown_node_mode_is_refused():
    with pytest.raises(Exception, match="unknown node mode 'k3s'"):
        vm_files("k3s")


@pytest.mark.timeout(30)
def test_kubernetes_minor_and_containerd_are_supported_ones():
    """Kubernetes 1.36 (supported until 2027-06-28) on containerd 2.3 (LTS, the 2.x line 1.36
    is tested with; Debian 12's containerd 1.6 is not used), cri-tools and tcpdump installed."""
    assert vf.KUBE_MINOR == "v1.36" and render.CONTAINERD_VERSION.startswith("2.3.")
    conf = tomllib.loads(vm_files("kubeadm")["containerd.toml"].content)
    assert conf["version"] == 3
    assert conf["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]["options"] == \
        {"SystemdCgroup": True}
    baseline = (ROOT / "provisioning" / "kube-baseline.sh").read_text()
    assert "k8s_packages=(kubelet kubeadm kubectl kubernetes-cni cri-tools)" in baseline
    assert re.search(r"^apt_install .* tcpdump$", baseline, re.M)
    assert not re.search(r"^apt_install .*\bcontainerd\b", baseline, re.M)
    cni = (ROOT / "provisioning" / "cni-provision.sh").read_text()
    assert "tcpdump" in cni and "charon-systemd" not in cni.split("set -euo pipefail")[1]


@pytest.mark.timeout(60)
def test_kubeadm_config_is_yaml_with_the_kinds_kubeadm_reads(tmp_path):
    """kubeadm itself is not installed here (no Kubernetes packages are reachable): the rendered
    kubeadm.yaml goes through a real YAML parser (Ruby's Psych, which Vagrant runs on)."""
    assert shutil.which("ruby"), "ruby is not installed (vagrant brings it)"
    script = 'require "yaml"; require "json"; puts JSON.generate(YAML.load_stream(File.read(ARGV[0])))'
    for node, kinds in ((1, ["InitConfiguration", "ClusterConfiguration", "KubeletConfiguration",
                             "KubeProxyConfiguration"]), (2, ["JoinConfiguration"])):
        (tmp_path / "kubeadm.yaml").write_text(vm_files("kubeadm", node)["kubeadm.yaml"].content)
        cp = subprocess.run(["ruby", "-e", script, str(tmp_path / "kubeadm.yaml")], capture_output=True, text=True)
        assert cp.returncode == 0, cp.stderr
        docs = json.loads(cp.stdout)
        assert [d["kind"] for d in docs] == kinds
        if node == 1:
            assert docs[1]["kubernetesVersion"] == "stable-1.36" and docs[2]["cgroupDriver"] == "systemd"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", render.NODE_MODES)
def test_rendered_units_pass_systemd_analyze_verify(tmp_path, mode):
    """systemd's own checker on the rendered units. The boot script's path is not installed on
    this machine, so its unit runs /bin/true here; every other command is checked as written."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    files = vm_files(mode, 2)
    units = ["strongswan.service", "ipsec-lab-boot.service", "ipsec-lab-guard.service"]
    for unit in units:
        (tmp_path / unit).write_text(files[unit].content.replace(
            "ExecStart=/usr/local/sbin/ipsec-lab-node-boot", "ExecStart=/bin/true"))
    cp = subprocess.run(["systemd-analyze", "verify", "--man=no", *[f"./{u}" for u in units]],
                        cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0 and cp.stdout + cp.stderr == "", cp.stdout + cp.stderr


# The VM's strongSwan as its strongswan.service runs it (`ipsec start --nofork`), with the rendered
# strongswan.conf and swanctl.conf, in a mount and network namespace of its own (a tmpfs on /run
# and /var/log, the two files bind-mounted over /etc): nothing of the host's changes.
STARTER_SCRIPT = r"""
set -eu
T=$1
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /var/log
mount --bind "$T/strongswan.conf" /etc/strongswan.conf
mount --bind "$T/swanctl.conf" /etc/swanctl/swanctl.conf
ip link set lo up
start() {
    /usr/sbin/ipsec start --nofork >>"$T/starter.out" 2>&1 &
    starter=$!
    for _ in $(seq 1 100); do
        [ -s /run/charon.pid ] && [ "$(grep -c "swanctl: loaded connection 'mesh-left'" /var/log/charon.log)" -ge "$1" ] && break
        sleep 0.1
    done
    echo "pid $(cat /run/charon.pid) $(cat /proc/"$(cat /run/charon.pid)"/comm)"
}
start 1
swanctl --list-conns | grep -E '^[a-z]'
set +e
/usr/sbin/ipsec down mesh-left; echo "down rc=$?"
# restart-ipsec on a VM: everything in the unit killed as by a crash, then started again.
old=$(cat /run/charon.pid)
kill -9 "$starter" "$old"; wait "$starter" 2>/dev/null
# systemd starts the unit again once its processes are gone; the pid file stays behind, stale.
while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
[ -s /run/charon.pid ] && echo "stale pid file"
start 2
[ "$(cat /run/charon.pid)" != "$old" ] && echo "new pid"
kill "$starter"; wait "$starter"; echo "stopped rc=$?"
[ -e /run/charon.pid ] || echo "pid file removed"
cp /var/log/charon.log "$T/charon.log"
"""


@pytest.mark.timeout(60)
def test_vm_strongswan_under_the_starter_writes_the_pid_file_and_loads_swanctl(tmp_path):
    """Both node modes run charon under the starter (Debian 12's strongswan-starter and
    strongswan-charon, installed here too): charon writes /run/charon.pid (charon-systemd writes
    none), which the seed's `ipsec down mesh-left` (stroke) and the boot-order check need; the start
    script in strongswan.conf loads swanctl.conf, again after a kill -9 and restart."""
    for tool in ("unshare", "/usr/sbin/ipsec", "/usr/lib/ipsec/charon", "swanctl"):
        assert shutil.which(tool), f"{tool} is not installed (run `scripts/setup.sh --test`)"
    files = vm_files("kubeadm")
    (tmp_path / "strongswan.conf").write_text(files["strongswan.conf"].content)
    (tmp_path / "swanctl.conf").write_text(files["swanctl.conf"].content)
    cp = subprocess.run(["unshare", "--mount", "--net", "sh", "-c", STARTER_SCRIPT, "sh", str(tmp_path)],
                        capture_output=True, text=True, timeout=45)
    out = cp.stdout
    assert cp.returncode == 0, out + cp.stderr
    assert re.search(r"^pid \d+ charon$", out, re.M), out
    assert "mesh-left: IKEv2" in out and "mesh-right: IKEv2" in out
    assert "down rc=0" in out and "closed successfully" in out  # stroke found charon by its pid file
    assert "stale pid file" in out and "new pid" in out and "stopped rc=0" in out and "pid file removed" in out
    log = (tmp_path / "charon.log").read_text()
    assert "executing start script 'swanctl' (/usr/sbin/swanctl --load-all --noprompt)" in log
    assert log.count("swanctl: successfully loaded 2 connections") == 2, log


# What kube-proxy's MASQUERADE does to NodePort traffic leaving through an XFRM interface, with and
# without the address the boot script gives it, on this machine's real netfilter. This kernel has no
# XFRM interfaces: a veth without ARP named as the boot script names it stands in; MASQUERADE picks
# the outgoing interface's address the same way for any device.
MASQUERADE_SCRIPT = r"""
set -eu
ip link set lo up
ip link add eth1 type veth peer name eth1p; ip addr add 192.168.56.11/24 dev eth1; ip link set eth1 up
ip link add cni0 type bridge; ip addr add 10.128.1.1/24 dev cni0; ip link set cni0 up
ip link add ipsec-n2 type veth peer name ipsec-n2p; ip link set ipsec-n2p up; ip link set ipsec-n2 arp off up
ip route replace 10.128.2.0/24 dev ipsec-n2 src 10.128.1.1
iptables -w -t nat -A POSTROUTING -o ipsec-n2 -j MASQUERADE
source_of() {
    timeout 5 tcpdump -ni ipsec-n2 -c1 -l udp port 9 2>/dev/null >"$1" &
    t=$!; sleep 0.5
    python3 -c "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('192.168.56.11', 0)); s.sendto(b'x', ('10.128.2.2', 9))"
    wait $t
    echo "$2 $(awk '{print $3}' "$1")"
}
source_of "$T/a" without
eval "$ADDR_LINE"
source_of "$T/b" with
"""


@pytest.mark.timeout(60)
def test_xfrm_interface_address_makes_masquerade_pick_a_pod_source(tmp_path):
    """kube-proxy (kubeadm mode) masquerades NodePort traffic that it sends to another node's pod.
    Without an address on the XFRM interface the source becomes the underlay address, which no
    IPsec policy carries; with the boot script's `ip addr replace <cni0>/32` it is cni0's address."""
    for tool in ("unshare", "iptables", "tcpdump"):
        assert shutil.which(tool), f"{tool} is not installed (run `scripts/setup.sh --test`)"
    boot = vm_files("kubeadm", 1)["node-boot.sh"].content
    line = re.search(r"^ip addr replace 10\.128\.1\.1/32 dev ipsec-n2$", boot, re.M)
    assert line, boot
    env = dict(os.environ, T=str(tmp_path), ADDR_LINE=line.group(0))
    cp = subprocess.run(["unshare", "--net", "sh", "-c", MASQUERADE_SCRIPT], capture_output=True, text=True,
                        timeout=45, env=env)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    sources = dict(line.split() for line in cp.stdout.splitlines())
    assert sources["without"].startswith("192.168.56.11."), cp.stdout  # no IPsec policy matches this
    assert sources["with"].startswith("10.128.1.1."), cp.stdout  # inside local_ts 10.128.1.0/24


@pytest.mark.timeout(60)
def test_provisioning_scripts_pass_shellcheck(tmp_path):
    assert shutil.which("shellcheck"), "shellcheck is not installed (run `scripts/setup.sh --test`)"
    scripts = sorted(str(p) for p in (ROOT / "provisioning").glob("*.sh"))
    assert len(scripts) == 4
    cp = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # The rendered boot script is POSIX sh, run by systemd on every boot.
    spec = LabSpec.build("lab", 3)
    boot = tmp_path / "node-boot.sh"
    boot.write_text(render.render_vm_node(spec, spec.node(1), secrets=psks(spec), kube=KUBE)["node-boot.sh"].content)
    cp = subprocess.run(["shellcheck", "-s", "sh", str(boot)], capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def validate(workdir: Path, spec_file: Path, provider: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, VAGRANT_HOME=str(workdir / "vagrant-home"), VAGRANT_DOTFILE_PATH=str(workdir / "dot"),
               VAGRANT_CWD=str(cwd), IPSEC_LAB_SPEC=str(spec_file), VAGRANT_DEFAULT_PROVIDER=provider,
               VAGRANT_CHECKPOINT_DISABLE="1", PATH=f"{FIXTURES / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(["vagrant", "validate"], capture_output=True, text=True, env=env, timeout=120, cwd=cwd)


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.setenv("IPSEC_LAB_VAGRANT_DIR", str(tmp_path / "labs"))
    spec = LabSpec.build("vgval", 3)
    files = vf.LabFiles.of("vgval")
    vspec = vf.write_lab_files(spec, files, mode="kubeadm")
    return tmp_path, files, vspec


@pytest.mark.timeout(300)
@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrant_validate(prepared, provider):
    """Vagrant's own validator on the real Vagrantfile and a spec written by the Python side.
    virtualbox: VirtualBox cannot be installed here; a stand-in VBoxManage (fixtures/vagrant/bin)
    only reports a version so that Vagrant's virtualbox provider agrees to validate."""
    assert shutil.which("vagrant"), "vagrant is not installed (run `scripts/setup.sh --test`)"
    tmp, files, vspec = prepared
    cp = validate(tmp, files.spec_file, provider)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "validated successfully" in cp.stdout
    assert not (ROOT / ".vagrant").exists() or (ROOT / ".vagrant").is_dir()


@pytest.mark.timeout(300)
def test_vagrant_validate_catches_mistakes(prepared):
    tmp, files, vspec = prepared
    broken = dict(vspec, nodes=[dict(n, files=str(tmp / "missing")) for n in vspec["nodes"]])
    bad = tmp / "bad.json"
    bad.write_text(json.dumps(broken))
    cp = validate(tmp, bad, "libvirt")
    assert cp.returncode != 0 and "must exist" in cp.stdout + cp.stderr
    # A Vagrantfile without the provisioning scripts beside it: every step is reported.
    copy = tmp / "copy"
    copy.mkdir()
    shutil.copy(ROOT / "Vagrantfile", copy / "Vagrantfile")
    cp = validate(tmp, files.spec_file, "libvirt", cwd=copy)
    assert cp.returncode != 0
    for step in ("kube-baseline", "cni-provision", "master-provision", "node-provision"):
        assert f"provisioning/{step}.sh" in cp.stdout + cp.stderr


@pytest.mark.timeout(120)
def test_vagrantfile_without_a_spec_says_what_to_do(tmp_path):
    cp = validate(tmp_path, tmp_path / "none.json", "libvirt")
    assert cp.returncode != 0
    assert "no spec at" in cp.stderr and "`vagrant up` (or `ipsec-lab --backend vagrant" in cp.stderr


@pytest.mark.timeout(60)
def test_lab_files_on_disk(prepared):
    tmp, files, vspec = prepared
    assert [n["name"] for n in vspec["nodes"]] == ["kube-node1", "kube-node2", "kube-node3"]
    assert [n["ip"] for n in vspec["nodes"]] == ["192.168.56.11", "192.168.56.12", "192.168.56.13"]
    assert vspec["nodes"][0]["role"] == "control-plane" and vspec["box"] == vf.DEFAULT_BOX
    assert (files.secrets_file.stat().st_mode & 0o777) == 0o600
    n1 = files.node_dir("kube-node1")
    assert (n1 / "ca.key").stat().st_mode & 0o777 == 0o600 and not (files.node_dir("kube-node2") / "ca.key").exists()
    rows = [line.split("\t") for line in (n1 / "manifest.tsv").read_text().splitlines()]
    assert {r[0] for r in rows} == set(render.VM_FILES) - set(render.NONE_ONLY_FILES)
    assert ["swanctl.conf", "0600", "/etc/swanctl/swanctl.conf"] in rows
    for role, mode, _dest in rows:
        assert (n1 / role).stat().st_mode & 0o777 == int(mode, 8)
    # Preparing again keeps the secrets: the VMs and the files never disagree.
    before = files.secrets_file.read_text()
    vf.write_lab_files(LabSpec.build("vgval", 3), files, mode="kubeadm")
    assert files.secrets_file.read_text() == before
    secrets = json.loads(before)
    kubeadm = (files.node_dir("kube-node3") / "kubeadm.yaml").read_text()
    assert secrets["token"] in kubeadm and vf.ca_cert_hash(secrets["ca_crt"]) in kubeadm


@pytest.mark.timeout(60)
def test_ca_hash_is_kubeadms(tmp_path):
    """The pinned hash is what kubeadm's documentation computes with openssl."""
    cert, key = vf.make_cluster_ca()
    (tmp_path / "ca.crt").write_text(cert)
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cp = subprocess.run(
        "openssl x509 -pubkey -in ca.crt | openssl rsa -pubin -outform der 2>/dev/null | sha256sum",
        shell=True, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert vf.ca_cert_hash(cert) == "sha256:" + cp.stdout.split()[0]
    assert "BEGIN RSA PRIVATE KEY" in key
    token = vf.make_token()
    assert len(token) == 23 and token[6] == "." and token.replace(".", "").isalnum()


# ------------------------------------------------------------------------------------ preflight
def facts(**kw) -> vp.HostFacts:
    base = dict(vagrant="/usr/bin/vagrant", mem_available_mb=32000,
                provider_problems={"virtualbox": None, "libvirt": None},
                vbox_networks=[vp.VIRTUALBOX_HOSTONLY])
    base.update(kw)
    return vp.HostFacts(**base)


@pytest.mark.timeout(30)
def test_preflight_picks_a_usable_provider(monkeypatch):
    monkeypatch.delenv("VAGRANT_DEFAULT_PROVIDER", raising=False)
    spec = LabSpec.build("vgpre", 3)
    assert vp.preflight(spec, facts(), {}, "kubeadm") == "virtualbox"
    assert vp.preflight(spec, facts(provider_problems={"virtualbox": "no", "libvirt": None}), {}, "kubeadm") == "libvirt"
    # Node mode none boots the offline box, which is libvirt's: libvirt first, and nothing else will do.
    assert vp.preflight(spec, facts(), {}, "none") == "libvirt"
    with pytest.raises(UsageError, match="built for libvirt, not virtualbox"):
        vp.preflight(spec, facts(provider_problems={"virtualbox": None, "libvirt": "no"}), {}, "none")
    monkeypatch.setenv("VAGRANT_DEFAULT_PROVIDER", "libvirt")
    assert vp.preflight(spec, facts(), {}, "kubeadm") == "libvirt"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kw,env,spec_kw,message", [
    (dict(vagrant=None), None, {}, "vagrant is not installed"),
    (dict(provider_problems={"virtualbox": "VirtualBox is not installed (no VBoxManage)",
                             "libvirt": "libvirtd is not running"}), None, {}, "no Vagrant provider can run VMs here"),
    (dict(provider_problems={"virtualbox": None, "libvirt": "libvirtd is not running"}), "libvirt", {},
     "provider libvirt cannot run VMs here: libvirtd is not running"),
    ({}, "docker", {}, "provider 'docker' (VAGRANT_DEFAULT_PROVIDER) is not supported"),
    ({}, None, dict(underlay="192.168.64.0/24"), "outside VirtualBox's host-only ranges"),
    ({}, "libvirt", dict(underlay="192.168.121.0/24"), "overlaps libvirt's own network"),
    (dict(mem_available_mb=4000), None, {}, "not enough memory for 3 VMs"),
])
def test_preflight_failures_are_one_line(monkeypatch, kw, env, spec_kw, message):
    if env:
        monkeypatch.setenv("VAGRANT_DEFAULT_PROVIDER", env)
    else:
        monkeypatch.delenv("VAGRANT_DEFAULT_PROVIDER", raising=False)
    spec = LabSpec.build("vgpre", 3, **spec_kw)
    with pytest.raises(UsageError) as err:
        vp.preflight(spec, facts(**kw), {}, "kubeadm")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.timeout(30)
def test_preflight_refuses_an_underlay_another_lab_uses(monkeypatch):
    monkeypatch.delenv("VAGRANT_DEFAULT_PROVIDER", raising=False)
    import ipaddress
    with pytest.raises(UsageError, match="overlaps Vagrant lab 'other'"):
        vp.preflight(LabSpec.build("vgpre", 3), facts(), {"other": ipaddress.IPv4Network("192.168.56.0/24")})


def snapshot(paths):
    return {p: sorted(os.listdir(p)) if os.path.isdir(p) else None for p in paths}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("without_vagrant", [False, True])
def test_cli_up_without_a_provider_fails_in_one_line_and_changes_nothing(tmp_path, without_vagrant):
    """`ipsec-lab --backend vagrant up` on this machine: no provider can run VMs here."""
    lab = "vgcli" + ("n" if without_vagrant else "p")
    env = dict(os.environ, IPSEC_LAB_VAGRANT_DIR=str(tmp_path / "labs"))
    env.pop("VAGRANT_DEFAULT_PROVIDER", None)
    if without_vagrant:
        env["PATH"] = str(Path(sys.executable).parent) + ":/usr/sbin:/sbin"  # /usr/bin holds vagrant
    watched = [str(tmp_path), str(ROOT)]  # and this lab's run state, checked below
    before = snapshot(watched)
    if not without_vagrant and (vp.provider_problem("virtualbox") is None or vp.provider_problem("libvirt") is None):
        pytest.skip("a Vagrant provider is usable on this machine")
    cp = subprocess.run([sys.executable, "-m", "tui", "--backend", "vagrant", "--lab", lab, "up"], cwd=ROOT,
                        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert cp.returncode == 3, cp.stdout + cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    expected = "vagrant is not installed" if without_vagrant else "no Vagrant provider can run VMs here"
    assert expected in lines[0]
    assert cp.stdout.strip() == ""
    assert snapshot(watched) == before
    assert not os.path.exists(f"/run/ipsec-lab/{lab}") and not os.path.exists(f"/run/ipsec-lab/{lab}.lock")
