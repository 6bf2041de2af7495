"""The pods of an offline VM node (node mode "none"), with no VM: nodepods.py and podserver.py, as
rendered for a VM, run by the machine's /usr/bin/python3 (the box's, Debian 12's 3.11: standard
library only) inside a "node" network namespace of the test's own, with the real CNI plugins
(bridge + host-local from the rendered conflist), real namespaces and curl.

The node's programs run under `nsenter --net` (a network namespace only), not `ip netns exec`: the
latter gives each command a private mount namespace, so a pod's namespace file, bind-mounted by one
call, would vanish with it, and podserver.py would never see it. On a VM every call shares the
VM's one mount namespace, as here. The conflist's host-local dataDir (/run/cni/networks on a VM)
is moved into the test's run directory, the one change to the rendered files: the host's /run is
not the node's.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tui.backends import vagrant_files as vf
from tui.lab import render, resources
from tui.lab.model import LabSpec

from . import goldens
from .conftest import unique_lab, wait_for

PYTHON = "/usr/bin/python3"  # the VM's interpreter, never the venv's
CMD_TIMEOUT = 30


@dataclass
class NodeUnderTest:
    ns: str  # the node's network namespace (ip netns)
    root: Path  # the test's temp dir: programs, conflist, state and run dirs
    pod_cidr: ipaddress.IPv4Network
    podserver: subprocess.Popen | None = None

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def ipam_dir(self) -> Path:
        return self.run_dir / "cni" / "networks" / "ipsec-lab"  # host-local: <dataDir>/<network name>

    def in_node(self, *argv: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", "--", *argv], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def argv(self, *args: str, conflist: Path | None = None) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}", "--", PYTHON, str(self.root / "nodepods.py"),
                "--conflist", str(conflist or self.root / "conflist"), "--cni-bin", render.cni_bin_dir("none"),
                "--state", str(self.root / "state"), "--run", str(self.run_dir), *args]

    def nodepods(self, *args: str, conflist: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, conflist=conflist), capture_output=True, text=True,
                              timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> list[dict]:
        cp = self.nodepods(*args)
        assert cp.returncode == 0, f"nodepods {' '.join(args)} exited {cp.returncode}: {cp.stderr.strip()}"
        return json.loads(cp.stdout)

    def curl(self, ip: str) -> str:
        cp = self.in_node("curl", "-sS", "-m", "2", f"http://{ip}:8080/", timeout=10)
        return cp.stdout if cp.returncode == 0 else f"curl exit {cp.returncode}: {cp.stderr.strip()}"

    def start_podserver(self) -> None:
        self.podserver = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", "--", PYTHON, str(self.root / "podserver.py"),
             "--run", str(self.run_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (self.run_dir / "ipsec-lab-pods.sock").exists() or self.podserver.poll() is not None,
                 10, what="podserver's control socket")
        assert self.podserver.poll() is None, "podserver.py exited at start"

    def stop_podserver(self) -> None:
        if self.podserver is None:
            return
        if self.podserver.poll() is None:
            self.podserver.send_signal(signal.SIGKILL)  # by PID: the one this test started
        self.podserver.wait(timeout=10)


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p.startswith(f"{path}/")), reverse=True)


def bootcamp(pod: str) -> str:
    return f"Hello Kubernetes bootcamp! | Running on: {pod} | v=1\n"


def rendered_none(node_index: int = 1) -> tuple[LabSpec, dict[str, render.RenderedFile]]:
    spec = LabSpec.build(unique_lab("np"), 3)
    files = render.render_vm_node(spec, spec.node(node_index), secrets=goldens.psks(spec),
                                  kube=replace(goldens.KUBE, mode="none"))
    return spec, files


@pytest.fixture
def node():
    """A node namespace with podserver.py running; always gone after, even when the test fails."""
    spec, files = rendered_none()
    ns = f"{spec.name}-node"
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix=f"{spec.name}-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        for role in ("podserver.py", "nodepods.py"):
            (root / role).write_text(files[role].content)
        conflist = json.loads(files["10-ipsec-lab.conflist"].content)
        conflist["plugins"][0]["ipam"]["dataDir"] = str(root / "run" / "cni" / "networks")
        (root / "conflist").write_text(json.dumps(conflist))
        (root / "run").mkdir()
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=CMD_TIMEOUT)
        stack.callback(subprocess.run, ["ip", "netns", "del", ns], timeout=CMD_TIMEOUT)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=CMD_TIMEOUT)
        n = NodeUnderTest(ns, root, spec.node(1).pod_cidr)

        def unmount_pods() -> None:  # before rmtree (LIFO); the pods' namespace files are mounts
            for mp in mounts_under(root):
                subprocess.run(["umount", "-l", mp], timeout=CMD_TIMEOUT)

        stack.callback(unmount_pods)
        n.start_podserver()
        stack.callback(n.stop_podserver)
        yield n
    assert not os.path.exists(f"/run/netns/{ns}") and not root.exists()


def assert_one_line_error(cp: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert cp.returncode == code, (cp.returncode, cp.stdout, cp.stderr)
    assert cp.stdout == "" and cp.stderr.count("\n") == 1 and cp.stderr.startswith("nodepods: "), cp.stderr
    for w in words:
        assert w in cp.stderr, cp.stderr


@pytest.mark.lab
@pytest.mark.timeout(90)
def test_pods_answer_and_del_releases_the_address(node):
    pods = node.ok("add", "pod-a", "pod-b", "pod-c")
    assert [p["name"] for p in pods] == ["pod-a", "pod-b", "pod-c"]
    ips = [p["ip"] for p in pods]
    assert len(set(ips)) == 3 and all(ipaddress.ip_address(ip) in node.pod_cidr for ip in ips), ips
    assert all(p["restarts"] == 0 and p["netns"].startswith(f"{node.run_dir}/ipsec-lab/netns/cni-") for p in pods)
    assert node.ok("list") == pods
    for p in pods:
        assert node.curl(p["ip"]) == bootcamp(p["name"])
        assert (node.ipam_dir / p["ip"]).exists()  # host-local holds the address
        cp = node.nodepods("exec", p["name"], "--", "ip", "-4", "-o", "addr", "show", "eth0")
        assert cp.returncode == 0 and f"inet {p['ip']}/{node.pod_cidr.prefixlen}" in cp.stdout, cp
    # exec passes the command's own exit code and output through
    cp = node.nodepods("exec", "pod-a", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (cp.returncode, cp.stdout, cp.stderr) == (7, "out\n", "err\n")

    left = node.ok("del", "pod-b")
    assert left == [pods[0], pods[2]] and node.ok("list") == left
    assert node.curl(ips[1]).startswith("curl exit")
    assert not (node.ipam_dir / ips[1]).exists(), "host-local still holds the deleted pod's address"
    assert len(mounts_under(node.run_dir)) == 2
    assert [node.curl(p["ip"]) for p in left] == [bootcamp("pod-a"), bootcamp("pod-c")]
    assert_one_line_error(node.nodepods("exec", "pod-b", "--", "true"), 2, "no pod pod-b")


@pytest.mark.lab
@pytest.mark.timeout(90)
def test_restore_after_a_reboot_brings_every_pod_back(node):
    before = node.ok("add", "pod-a", "pod-b", "pod-c")
    # A reboot, as the node sees it: every process gone, /run (a tmpfs) empty, the state on disk kept.
    node.stop_podserver()
    for mp in mounts_under(node.run_dir):
        subprocess.run(["umount", "-l", mp], check=True, timeout=CMD_TIMEOUT)
    shutil.rmtree(node.run_dir)
    node.run_dir.mkdir()
    listed = node.ok("list")
    assert [(p["name"], p["ip"]) for p in listed] == [("pod-a", ""), ("pod-b", ""), ("pod-c", "")]
    cp = node.nodepods("exec", "pod-a", "--", "true")
    assert_one_line_error(cp, 1, "pod-a", "restore")

    node.start_podserver()  # ipsec-lab-pods.service at boot: podserver.py, then restore
    after = node.ok("restore")
    assert [p["name"] for p in after] == ["pod-a", "pod-b", "pod-c"]
    assert all(p["restarts"] == 1 and p["ip"] and p["created"] > q["created"] for p, q in zip(after, before))
    assert len({p["ip"] for p in after}) == 3
    assert {p["netns"] for p in after}.isdisjoint({p["netns"] for p in before})
    assert [node.curl(p["ip"]) for p in after] == [bootcamp(p["name"]) for p in after]
    # podserver.py restarted alone (Restart=on-failure): its restore keeps the live pods as they are.
    node.stop_podserver()
    node.start_podserver()
    assert node.ok("restore") == after
    assert [node.curl(p["ip"]) for p in after] == [bootcamp(p["name"]) for p in after]


@pytest.mark.lab
@pytest.mark.timeout(90)
def test_bad_input_says_one_line_and_changes_nothing(node):
    pods = node.ok("add", "pod-a")

    def unchanged() -> None:
        assert node.ok("list") == pods
        assert len(mounts_under(node.run_dir)) == 1
        assert sorted(p.name for p in node.ipam_dir.iterdir() if p.name[0].isdigit()) == [pods[0]["ip"]]
        assert node.curl(pods[0]["ip"]) == bootcamp("pod-a")

    assert_one_line_error(node.nodepods("del", "pod-a", "nope"), 2, "no pod nope")
    assert_one_line_error(node.nodepods("exec", "nope", "--", "true"), 2, "no pod nope")
    assert_one_line_error(node.nodepods("add", "pod-b", conflist=node.root / "missing.conflist"), 1,
                          "missing.conflist")
    assert_one_line_error(node.nodepods("add", "pod-a"), 1, "pod-a exists")
    assert_one_line_error(node.nodepods("add", "Not_A_Name"), 1, "not a pod name")
    assert_one_line_error(node.nodepods("frobnicate"), 1, "unknown command")
    unchanged()
    # A real CNI ADD failure half way: a range with room for two more pods. All or nothing: the two
    # pods created first are deleted again, their addresses released.
    conf = json.loads((node.root / "conflist").read_text())
    ipam = conf["plugins"][0]["ipam"]
    ip = ipaddress.ip_address(pods[0]["ip"])
    ipam["ranges"] = [[dict(ipam["ranges"][0][0], rangeStart=str(ip + 1), rangeEnd=str(ip + 2))]]
    (node.root / "tiny.conflist").write_text(json.dumps(conf))
    cp = node.nodepods("add", "pod-b", "pod-c", "pod-d", conflist=node.root / "tiny.conflist")
    assert_one_line_error(cp, 1, "CNI ADD failed for pod-d")
    unchanged()


@pytest.mark.lab
@pytest.mark.timeout(90)
def test_concurrent_calls_are_serialised(node):
    """Three adds at once (the host deploys over parallel SSH sessions): the lock keeps every record."""
    procs = [subprocess.Popen(node.argv("add", name), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("pod-a", "pod-b", "pod-c")]
    for p in procs:
        _out, err = p.communicate(timeout=CMD_TIMEOUT)
        assert p.returncode == 0, err
    pods = node.ok("list")
    assert sorted(p["name"] for p in pods) == ["pod-a", "pod-b", "pod-c"] and len({p["ip"] for p in pods}) == 3
    assert [node.curl(p["ip"]) for p in pods] == [bootcamp(p["name"]) for p in pods]


@pytest.mark.timeout(30)
def test_mode_none_renders_the_unit_and_both_programs():
    _spec, files = rendered_none(2)
    for role in render.NODE_PROGRAMS:
        f = files[role]
        assert f.content == (resources.package_dir() / "backends" / role).read_text() and f.mode == 0o644
        assert render.VM_FILES[role][2] == f"/usr/local/lib/ipsec-lab/{role}"
        # copied into a VM and run by its python3: nothing but the standard library
        imported = {(a.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                    for node in ast.walk(ast.parse(f.content)) if isinstance(node, ast.Import | ast.ImportFrom)
                    for a in (node.names if isinstance(node, ast.Import) else [node])}
        assert imported - {"__future__"} <= sys.stdlib_module_names, (role, imported - sys.stdlib_module_names)
    unit = files["ipsec-lab-pods.service"].content
    assert "Requires=ipsec-lab-boot.service" in unit and "After=ipsec-lab-boot.service" in unit
    assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
    assert "ExecStart=/usr/bin/python3 /usr/local/lib/ipsec-lab/podserver.py\n" in unit
    assert ("ExecStartPost=/usr/bin/python3 /usr/local/lib/ipsec-lab/nodepods.py --conflist "
            "/etc/cni/net.d/10-ipsec-lab.conflist --cni-bin /usr/lib/cni restore\n") in unit
    rows = [line.split("\t") for line in vf.manifest(files).splitlines()]
    assert ["nodepods.py", "0644", "/usr/local/lib/ipsec-lab/nodepods.py"] in rows
    assert ["ipsec-lab-pods.service", "0644", "/etc/systemd/system/ipsec-lab-pods.service"] in rows

    spec = LabSpec.build("lab", 3)
    kubeadm = render.render_vm_node(spec, spec.node(2), secrets=goldens.psks(spec), kube=goldens.KUBE)
    assert not set(kubeadm) & set(render.NONE_ONLY_FILES)
    assert set(render.NONE_ONLY_FILES) <= set(files)


@pytest.mark.timeout(30)
def test_podserver_run_dir_option(tmp_path):
    """podserver.py --run DIR: its two files there; other arguments are refused (netns runs it bare)."""
    cp = subprocess.run([PYTHON, str(resources.package_dir() / "backends" / "podserver.py"), "--bogus"],
                        capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert cp.returncode == 2 and "usage: podserver.py [--run DIR]" in cp.stderr
    proc = subprocess.Popen([PYTHON, str(resources.package_dir() / "backends" / "podserver.py"), "--run", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ok 0\n"
        assert (tmp_path / "ipsec-lab-pods.sock").exists()
    finally:
        proc.kill()
        proc.wait(timeout=10)
