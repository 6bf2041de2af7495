"""The Vagrant backend: the seed's lab on real VMs, from the same templates as netns.

- Node modes (`--kubernetes`): "none" (the default, offline) boots the offline box (tui/vm/box.py)
  and runs the same pods as the netns backend: network namespaces attached by the real CNI
  plugins, answered by the pod server, managed on each node by nodepods.py; "kubeadm" is the
  seed's cluster (the nodes install Kubernetes from the internet).
- The hypervisor: the machine's own libvirtd where one runs; else the lab starts its own in a
  network namespace of the lab's (tui/vm/hypervisor.py), and `vagrant` runs inside that namespace.
  Acceleration is probed (KVM, or QEMU's emulation with an AES-NI CPU model).
- The lab spec goes to .ipsec-lab/<lab>/vagrant.json, which the top-level Vagrantfile reads, and
  every node's files are rendered from provisioning/templates (render.render_vm_node) into
  .ipsec-lab/<lab>/nodes/<node>/, which Vagrant's file provisioner uploads.
- python-vagrant runs up, box add and destroy with --machine-readable; every line of their output
  goes to the Reporter as it comes (the event stream the netns backend uses), without Vagrant's
  `Progress: N%` updates.
- Every node command runs over Fabric (SSH), connections built from `vagrant ssh-config NODE`
  (kept in the lab's files after up): tunnel state from `swanctl --list-sas --raw`, pods from
  nodepods.py (none) or `kubectl ... -o json` (kubeadm).

`python -m tui.backends.vagrant prepare --lab NAME [--nodes N]` writes the spec and the node
files without starting anything, for people who drive `vagrant` by hand.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# python-vagrant warns on import when vagrant is not on PATH; preflight says it in one line.
logging.getLogger("vagrant").addHandler(logging.NullHandler())
import vagrant as pyvagrant  # noqa: E402

from ..lab import commands, naming, parsers, pcap, render, state as labstate
from ..lab.errors import LabError, NotFoundError, UsageError
from ..lab.events import Reporter
from ..lab.model import (NODE_PORT_RANGE, POD_PORT, LabSpec, Pod, Service, validate_node_port,
                         validate_replicas)
from ..lab.proc import Result, RunningCommand
from ..lab.status import LabStatus, NodeStatus, TunnelStatus
from ..lab.vici_status import auth_details, tunnel_statuses
from ..vm import box as offline_box, hypervisor as hv
from . import vagrant_files as vf, vagrant_preflight as vp, workload
from .base import Backend, Plan, parallel, parallel_or_error, split_complete_lines
from .ssh import NodeShells
from .vagrant_output import VagrantOutput, line_pipe

DATAPATH = "kernel-xfrm"
TUNNEL_WAIT_S = float(os.environ.get("IPSEC_LAB_VAGRANT_TUNNEL_WAIT", "300"))
KUBECTL = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
APP_LABEL = f"app={naming.DEPLOYMENT_NAME}"
SPREAD_PATCH = json.dumps([{
    "op": "add", "path": "/spec/template/spec/topologySpreadConstraints",
    "value": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": naming.DEPLOYMENT_NAME}}}],
}])


# The offline node mode's programs on each node (render.NONE_ONLY_FILES installs them).
NODEPODS = ["python3", "/usr/local/lib/ipsec-lab/nodepods.py"]
TCG_CPU_MODEL = "Westmere"  # libvirt's type qemu: a model with AES-NI (host-passthrough is KVM's only)


class _MachineReadableVagrant(pyvagrant.Vagrant):  # type: ignore[misc]  # python-vagrant ships no types: Any
    """python-vagrant, with --machine-readable on the commands whose output we stream, so that
    every line names the machine it is about, and run inside the lab's namespace where the lab's
    own libvirtd keeps the VMs' networks (vagrant-libvirt reaches the VMs over them)."""

    MACHINE_READABLE = {"up", "reload", "halt", "destroy", "provision", "box"}
    netns: str | None = None

    def _make_vagrant_command(self, args: Sequence[str]) -> list[str]:
        cmd: list[str] = super()._make_vagrant_command(args)
        if len(cmd) > 1 and cmd[1] in self.MACHINE_READABLE and "--machine-readable" not in cmd:
            cmd.append("--machine-readable")
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd


@dataclass(frozen=True)
class _Capture:
    name: str
    nodes: dict[str, str]  # node -> the capture's files on it, without extension


@dataclass(frozen=True)
class _HostCapture:
    path: str  # the merged capture
    parts: list[tuple[subprocess.Popen[str], str]]  # one tcpdump per VM's underlay port, its file


class VagrantBackend(Backend):
    name = "vagrant"
    cni_bin_dir = render.cni_bin_dir(vf.DEFAULT_NODE_MODE)  # per node mode: kubernetes-cni's or Debian's
    mesh_timeout = TUNNEL_WAIT_S
    mesh_poll = 1.0
    reboot_wait_s = 300.0  # how long a rebooted node may take to answer over SSH
    reboot_poll_s = 2.0  # seconds between two tries
    poweroff_wait_s = 120.0  # a guest's clean shutdown (measured 10 s under emulation), then it is switched off

    def __init__(self, lab: str, reporter: Reporter | None = None, *, host: vp.HostFacts | None = None,
                 node_mode: str | None = None) -> None:
        super().__init__(naming.validate_lab_name(lab), reporter)
        self.files = vf.LabFiles.of(lab)
        self.host = host
        self.requested_mode = node_mode
        self.shells = NodeShells(self._ssh_config, netns=self._netns)
        self._ssh_configs: dict[str, str] = {}
        self._libvirt: dict[str, Any] | None = None
        self._pod_nodes: dict[str, str] = {}  # pod -> node, from the last listing (node mode none)

    # ------------------------------------------------------------------ node mode, hypervisor
    @property
    def node_mode(self) -> str:
        """none (offline: pods as on netns) or kubeadm (the seed's cluster): the lab's, once it exists."""
        if self.files.spec_file.exists():
            return vf.node_mode(self.files)
        return self.requested_mode or vf.DEFAULT_NODE_MODE

    @property
    def pods_are_namespaces(self) -> bool:
        return self.node_mode == "none"

    @property
    def nodes_are_vms(self) -> bool:
        return True

    def clock_offset(self, node: str) -> float:
        """The VM's clock against ours, from one round trip (error: half of it, milliseconds)."""
        best: tuple[float, float] | None = None
        for _ in range(3):
            t0 = time.time()
            res = self.exec(node, ["date", "+%s.%N"], timeout=10)
            t1 = time.time()
            with contextlib.suppress(ValueError):
                offset = float(res.stdout.strip()) - (t0 + t1) / 2
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, offset)
        return best[1] if best else 0.0

    def _libvirt_settings(self) -> dict[str, Any]:
        if self._libvirt is None:
            try:
                self._libvirt = dict(vf.read_vagrant_spec(self.files).get("libvirt") or {})
            except LabError:
                return {}
        return self._libvirt

    def _netns(self) -> str | None:
        ns = self._libvirt_settings().get("netns")
        return str(ns) if ns else None

    def _private_libvirt(self) -> hv.PrivateLibvirt:
        return hv.PrivateLibvirt(self.lab, self.files.hypervisor_dir)

    @property
    def hypervisor_summary(self) -> str:
        """e.g. "libvirt (the lab's own, in ilab-x-hv), TCG": what status and the header show."""
        lv = self._libvirt_settings()
        if not lv:
            return ""
        where = f"the lab's own, in {lv['netns']}" if lv.get("own") else lv.get("uri", "libvirt")
        return f"libvirt ({where}), {str(lv.get('accel', '?')).upper()}"

    # ------------------------------------------------------------------ capabilities
    def read_charon_log(self, node: str, offset: int) -> tuple[list[str], int]:
        """The node's charon log, fetched over SSH from byte `offset` (from 0 when the log is now
        shorter: the node rebooted). A node that cannot be reached gives no lines."""
        try:
            res = self.exec(node, commands.read_file_from(commands.CHARON_LOG, offset), timeout=10)
        except LabError:
            return [], offset
        size_line, _, data = res.stdout.partition("\n")
        try:
            size = int(size_line.strip())
        except ValueError:
            return [], offset
        start = offset if size >= offset else 0
        return split_complete_lines(data.encode(), start)

    # ------------------------------------------------------------------ vagrant itself
    def _env(self) -> dict[str, str]:
        return dict(os.environ, **self.files.env())

    def _vagrant(self, output: VagrantOutput | None = None) -> _MachineReadableVagrant:
        out = output or VagrantOutput(self.reporter)
        v = _MachineReadableVagrant(
            root=str(vf.ROOT), env=self._env(),
            out_cm=lambda: line_pipe(lambda line: out.feed(line, "stdout")),
            err_cm=lambda: line_pipe(lambda line: out.feed(line, "stderr")),
        )
        v.netns = self._netns()
        return v

    def _run_vagrant(self, what: str, fn: Callable[[_MachineReadableVagrant], Any]) -> Any:
        out = VagrantOutput(self.reporter)
        try:
            return fn(self._vagrant(out))
        except subprocess.CalledProcessError as exc:
            reason = out.last_error() or f"exit {exc.returncode}"
            raise LabError(f"vagrant {what} failed: {reason}") from None
        except RuntimeError as exc:  # python-vagrant: the vagrant executable is not on PATH
            raise UsageError(f"vagrant {what}: {exc}".splitlines()[0]) from None

    def _ssh_config(self, node: str) -> str:
        """`vagrant ssh-config NODE`: from the lab's files (kept after up), else from Vagrant."""
        if node not in self._ssh_configs:
            path = self.files.ssh_config_file(node)
            try:
                text = path.read_text()
            except OSError:
                if not self.files.spec_file.exists():  # the lab is gone (down): never start Vagrant for it
                    raise NotFoundError(f"lab {self.lab!r} is not up") from None
                text = str(self._run_vagrant(f"ssh-config {node}", lambda v: v.ssh_config(vm_name=node)))
                labstate.write_file(path, text, 0o600)
            self._ssh_configs[node] = text
        return self._ssh_configs[node]

    def _forget_node(self, node: str) -> None:
        self._ssh_configs.pop(node, None)
        self.shells.forget(node)

    def machine_states(self) -> dict[str, str]:
        """node -> "running", "shutoff", "not_created": from libvirt where the lab knows it (one
        `virsh list`, quick), else `vagrant status`."""
        lv = self._libvirt_settings()
        if lv.get("uri"):
            if lv.get("own") and not self._private_libvirt().running():
                return {}
            cp = self._libvirt_virsh("list", "--all")
            if cp.returncode == 0:
                states = {}
                for line in cp.stdout.splitlines()[2:]:  # " Id   Name   State" and a rule first
                    bits = line.split(None, 2)
                    if len(bits) == 3:
                        states[bits[1]] = bits[2].strip().replace("shut off", "shutoff")
                return {n.name: states.get(self._domain(n.name), "not_created") for n in self.spec().node_list()}
        return {s.name: s.state for s in self._run_vagrant("status", lambda v: v.status())}

    # ------------------------------------------------------------------ lab records
    def exists(self) -> bool:
        return self.paths.state_file.exists() or self.files.spec_file.exists()

    def spec(self) -> LabSpec:
        if not self.files.spec_file.exists():
            raise NotFoundError(f"no Vagrant lab named {self.lab!r} (start one with "
                                f"`ipsec-lab --backend vagrant --lab {self.lab} up`)")
        return LabSpec.from_dict(vf.read_vagrant_spec(self.files)["spec"])

    def _other_labs(self) -> dict[str, ipaddress.IPv4Network]:
        out: dict[str, ipaddress.IPv4Network] = {}
        for p in self.files.base.glob("*/vagrant.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                out[p.parent.name] = ipaddress.IPv4Network(json.loads(p.read_text())["spec"]["underlay"])
        return out

    def _save_run_state(self, provider: str, phase: str) -> None:
        labstate.save_state(self.paths, {
            "version": 1, "backend": self.name, "phase": phase, "provider": provider,
            "spec": self.spec().to_dict(), "datapath": DATAPATH, "files": str(self.files.dir),
            "node_mode": self.node_mode, "vagrant_env": self.files.env(), "created": time.time(),
        })

    def _run_state(self) -> dict[str, Any]:
        return labstate.load_state(self.paths)

    def _update_run_state(self, **changes: Any) -> None:
        doc = self._run_state()
        doc.update(changes)
        labstate.save_state(self.paths, doc)

    # ------------------------------------------------------------------ up: the base's hooks
    def preflight(self, spec: LabSpec) -> None:
        mode = self.requested_mode or vf.DEFAULT_NODE_MODE
        if mode not in render.NODE_MODES:
            raise UsageError(f"unknown node mode {mode!r}: --kubernetes takes {' or '.join(render.NODE_MODES)}")
        self._provider = vp.preflight(spec, self.host or vp.HostFacts(), self._other_labs(), mode)
        self._mode = mode
        if self._provider == "libvirt" and (self.host is None or self.host.system_libvirtd is None):
            self._system_libvirtd = hv.system_libvirtd()
        else:
            self._system_libvirtd = bool(self.host and self.host.system_libvirtd)
        if self._provider == "libvirt" and not self._system_libvirtd:
            hv.check_tools()  # the lab starts its own libvirtd: one line now if it cannot
        if mode == "none" and not os.environ.get("IPSEC_LAB_BOX") and offline_box.cached() is None:
            offline_box.check_tools()  # `up` builds the box first: one line now if it cannot
        sock = self._private_libvirt().socket
        if self._provider == "libvirt" and not self._system_libvirtd and len(str(sock).encode()) > 100:
            # A unix socket's address holds 108 bytes; libvirtd's lives under the lab's files.
            raise UsageError(f"the lab's libvirtd socket path would be too long ({sock}): set "
                             "IPSEC_LAB_VAGRANT_DIR to a shorter directory")

    def choose_datapath(self, requested: str | None) -> str:
        if requested not in (None, DATAPATH):
            raise UsageError(f"the Vagrant backend uses the {DATAPATH} data path (the VMs' kernels have ESP "
                             f"and XFRM interfaces), not {requested}")
        return DATAPATH

    def plan(self, spec: LabSpec, datapath: str) -> Plan:
        secrets = vf.lab_secrets(spec, self.files)
        box = vf.box(self._mode)
        said = ("node mode none: no Kubernetes (offline); pods are network namespaces on each VM, as on netns "
                "(--kubernetes kubeadm: the seed's cluster, online)" if self._mode == "none" else
                "node mode kubeadm: the seed's Kubernetes cluster, installed on the nodes from the internet")
        self.reporter.line(said)
        return Plan(spec, datapath, vf.render_lab_files(spec, secrets, self._mode), secrets,
                    detail=f"{spec.nodes} nodes, node mode {self._mode}, box {box}, files in {self.files.dir}",
                    extra={"provider": self._provider, "box": box, "mode": self._mode})

    def save_state(self, plan: Plan) -> None:
        # The Vagrantfile's spec first: the run state names it, and `down` destroys what it lists.
        vf.write_lab_files(plan.spec, self.files, plan.extra["box"], secrets=plan.secrets, rendered=plan.files,
                           mode=plan.extra["mode"])
        self._save_run_state(plan.extra["provider"], "creating")

    def write_files(self, plan: Plan) -> None:
        """Written with the spec in save_state: the Vagrantfile reads both."""

    def boot(self, plan: Plan) -> None:
        provider = plan.extra["provider"]
        if provider == "libvirt":
            self._start_hypervisor(plan)
        with self.reporter.step(f"vagrant up ({provider}, {plan.spec.nodes} VMs, node mode {plan.extra['mode']})"):
            self._run_vagrant("up", lambda v: v.up(provider=provider, provision=True))
        self._keep_ssh_configs(plan.spec)

    def _start_hypervisor(self, plan: Plan) -> None:
        """The box (built when missing), libvirtd (the machine's, or the lab's own), the acceleration
        probe, and the box known to Vagrant: all written into the spec the Vagrantfile reads."""
        recipe = offline_box.Recipe()
        offline = plan.extra["box"] == offline_box.vagrant_name(recipe)
        if offline and offline_box.cached(recipe) is None:
            with self.reporter.step("build the offline box (once; cached in ~/.cache/ipsec-lab)") as step:
                report = offline_box.build(recipe, lambda line: self.reporter.line(line, source="box"))
                step.detail = f"{report.box.name} in {sum(report.seconds.values()):.0f} s"
        kernel = offline_box.kernel_file(recipe) if offline else None
        accel, why = hv.probe_accel(kernel, cache=offline_box.cache_dir() / "accel-probe.json")
        if self._system_libvirtd:
            settings: dict[str, Any] = {"uri": "qemu:///system", "netns": None, "own": False, "pool": None}
        else:
            libvirt = self._private_libvirt()
            with self.reporter.step(f"start the lab's libvirtd (namespace {libvirt.ns})"):
                libvirt.start(lambda line: self.reporter.line(line, source="hypervisor"))
            settings = {"uri": libvirt.uri, "netns": libvirt.ns, "own": True, "pool": hv.POOL}
        settings.update(accel=accel, accel_why=why, driver="kvm" if accel == "kvm" else "qemu",
                        cpu_model=None if accel == "kvm" else TCG_CPU_MODEL)
        self.reporter.line(f"acceleration: {accel.upper()}: {why}")
        vf.set_libvirt(self.files, settings)
        self._libvirt = settings
        if offline:
            self._add_box(plan.extra["box"], offline_box.box_file(recipe))

    def _add_box(self, name: str, path: Path) -> None:
        """The offline box, known to Vagrant under its recipe's name; boxes of older recipes go."""
        listed = self._run_vagrant("box list", lambda v: v.box_list())
        for old in {b.name for b in listed if b.name.startswith(offline_box.BOX_NAME + "-") and b.name != name}:
            with contextlib.suppress(LabError):  # another lab may still run on it: Vagrant refuses then
                self._run_vagrant(f"box remove {old}", lambda v: v.box_remove(old, "libvirt"))
        if any(b.name == name for b in listed):
            return
        with self.reporter.step(f"vagrant box add {name}"):
            self._run_vagrant("box add", lambda v: v.box_add(name, str(path)))

    def _keep_ssh_configs(self, spec: LabSpec) -> None:
        """Every node's `vagrant ssh-config`, asked once (in parallel) and kept in the lab's files."""
        for n in spec.node_list():
            self.files.ssh_config_file(n.name).unlink(missing_ok=True)
            self._ssh_configs.pop(n.name, None)
        parallel(self._ssh_config, [n.name for n in spec.node_list()])

    def mark_up(self, plan: Plan) -> None:
        self._save_run_state(plan.extra["provider"], "up")

    def prepare(self, spec: LabSpec) -> dict[str, Any]:
        """Write the spec the Vagrantfile reads and every node's rendered files."""
        return vf.write_lab_files(spec, self.files, mode=self.requested_mode or vf.DEFAULT_NODE_MODE)

    def tunnel_statuses(self, spec: LabSpec) -> list[TunnelStatus]:
        return self._tunnels(spec, {})

    # ------------------------------------------------------------------ down
    def teardown(self, quiet: bool) -> list[str]:
        """Everything of the lab, also half-made or after a kill -9 of `up`. With the lab's own
        libvirtd, stopping it is the whole job: its domains, networks, pool and volumes live in
        its directories and namespace, and whatever still runs there (an orphaned `vagrant up`,
        QEMU, dnsmasq) is the lab's and is killed by PID. With the machine's libvirtd (or
        VirtualBox), `vagrant destroy`."""
        removed: list[str] = []
        self.shells.close()
        self._ssh_configs.clear()
        libvirt = self._private_libvirt()
        own = self.files.hypervisor_dir.exists() or os.path.exists(f"/run/netns/{libvirt.ns}")
        if own:
            with self.reporter.step(f"stop the lab's libvirtd and its VMs ({self.lab})"):
                removed += libvirt.stop(lambda line: None)
        elif self.files.spec_file.exists():
            if shutil.which("vagrant") is None:
                self.reporter.line("vagrant is not installed: no VMs to destroy", stream="stderr")
            else:
                with self.reporter.step(f"vagrant destroy ({self.lab})"):
                    self._run_vagrant("destroy", lambda v: v.destroy())
                removed.append(f"VMs of lab {self.lab}")
        dot = self.files.dotfile_path
        if dot is None and self.files.spec_file.exists():  # the default lab: Vagrant's own .vagrant
            with contextlib.suppress(LabError):
                for n in self.spec().node_list():
                    machine = vf.ROOT / ".vagrant" / "machines" / n.name
                    if machine.exists():
                        shutil.rmtree(machine, ignore_errors=True)
                        removed.append(f"Vagrant's record of {n.name}")
        if self.files.dir.exists():
            shutil.rmtree(self.files.dir, ignore_errors=True)
            removed.append(f"files {self.files.dir}")
        if self.paths.state_file.exists():
            removed.append(f"state {self.paths.dir}")
        labstate.remove_lab_files(self.paths)
        self._libvirt = None
        for item in removed:
            self.reporter.line(f"removed {item}", source="actions")
        return removed

    # ------------------------------------------------------------------ node commands
    def node_argv(self, node: str, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        """OpenSSH with the node's kept `vagrant ssh-config`, inside the lab's namespace where the
        VMs' networks live (`vagrant ssh NODE` does the same, seconds slower): for the interactive
        shell. Every other node command goes through Fabric (exec, stream)."""
        self.spec().node(node)
        self._ssh_config(node)  # kept in the lab's files
        cfg = self.files.ssh_config_file(node)
        ns = self._netns()
        tty = ["-t"] if interactive else ["-T"]
        return [*(["ip", "netns", "exec", ns] if ns else []), "ssh", "-F", str(cfg), "-q", *tty, node,
                NodeShells.command_line("vagrant", argv)]

    def stream(self, node: str, argv: Sequence[str], *, stderr_to_parent: bool = False) -> RunningCommand:
        self.spec().node(node)
        return self.shells.spawn(node, argv, stderr_to_parent=stderr_to_parent)

    def exec(self, node: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0) -> Result:
        self.spec().node(node)
        return self.shells.run(node, argv, input=input, timeout=timeout)

    def _control_plane(self) -> str:
        return self.spec().node(1).name

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60.0, check: bool = True) -> Result:
        res = self.exec(self._control_plane(), [*KUBECTL, *args], input=input, timeout=timeout)
        if check and not res.ok:
            msg = (res.stderr or res.stdout).strip().splitlines()
            raise LabError(f"kubectl {' '.join(args)} failed: {msg[-1] if msg else f'exit {res.returncode}'}")
        return res

    def _kubectl_json(self, *args: str) -> dict[str, Any]:
        res = self.kubectl(*args, "-o", "json")
        try:
            return parsers.json_object(res.stdout)
        except ValueError:
            raise LabError(f"kubectl {' '.join(args)} printed no JSON") from None

    def _action(self, text: str, node: str | None = None) -> None:
        self.reporter.line(text, node=node, source="actions")

    def cni_config(self, node: str) -> dict[str, Any]:
        path = render.VM_FILES["10-ipsec-lab.conflist"][2]
        res = self.exec(node, ["cat", path], timeout=10)
        if not res.ok:
            raise LabError(f"cannot read {path} on {node}: {res.stderr.strip()}")
        try:
            return parsers.json_object(res.stdout)
        except ValueError:
            raise LabError(f"{path} on {node} is not JSON") from None

    def pod_exec(self, pod: str, argv: Sequence[str], *, timeout: float = 30.0) -> Result:
        if self.node_mode != "none":
            if pod not in {p.name for p in self._pods()}:
                raise NotFoundError(f"no pod named {pod!r}; `ipsec-lab status` lists the pods")
            return self.kubectl("exec", pod, "--", *argv, timeout=timeout, check=False)
        # Where each pod lives, from the last listing (the checks run many of these at once: one
        # listing of every node per call cost three SSH rounds each, and timed out under load).
        for fresh in (False, True):
            if fresh or pod not in self._pod_nodes:
                self._pod_nodes = {p.name: p.node for p in self._pods()}
            node = self._pod_nodes.get(pod)
            if node is None:
                continue
            res = self.exec(node, [*NODEPODS, "exec", pod, "--", *argv], timeout=timeout)
            if res.returncode != 2 or "no pod" not in res.stderr:  # 2: not on that node (any more)
                return res
        raise NotFoundError(f"no pod named {pod!r}; `ipsec-lab status` lists the pods")

    # ------------------------------------------------------------------ status
    def _parallel_nodes(self, spec: LabSpec, fn: Callable[[str], Any]) -> dict[str, Any]:
        """fn on every node at once; a node where it raised LabError maps to that error."""
        names = [n.name for n in spec.node_list()]
        return dict(zip(names, parallel_or_error(fn, names)))

    def _sas(self, node: str) -> list[tuple[str, dict[str, Any]]] | None:
        res = self.exec(node, commands.swanctl_list_sas(raw=True), timeout=15)
        return parsers.parse_swanctl_raw(res.stdout) if res.ok else None

    def _tunnels(self, spec: LabSpec, reachable: dict[str, Any]) -> list[TunnelStatus]:
        sas = self._parallel_nodes(spec, lambda n: self._sas(n) if not isinstance(reachable.get(n), Exception) else None)
        out: list[TunnelStatus] = []
        for n in spec.node_list():
            got = sas.get(n.name)
            out.extend(tunnel_statuses(spec.tunnels_of(n), None if isinstance(got, Exception) else got))
        return out

    def _pods(self) -> list[Pod]:
        if self.node_mode == "none":
            by_node = self._parallel_nodes(self.spec(), self._node_pods)
            failed = next((v for v in by_node.values() if isinstance(v, Exception)), None)
            if failed is not None:  # never a partial list: deploy would place pods twice
                raise failed
            return [p for n in self.spec().node_list() for p in by_node[n.name]]
        return parsers.pods_from_kubectl(self._kubectl_json("get", "pods", "-l", APP_LABEL))

    def _service(self) -> Service | None:
        if self.node_mode == "none":
            svc = self._run_state().get("service")
            return Service(**svc) if svc else None
        res = self.kubectl("get", "service", naming.DEPLOYMENT_NAME, "-o", "json", check=False)
        if not res.ok:
            return None
        return parsers.service_from_kubectl(parsers.json_object(res.stdout))

    # ------------------------------------------------------------------ node mode none: nodepods.py
    def _nodepods(self, node: str, *args: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        res = self.exec(node, [*NODEPODS, *args], timeout=timeout)
        if not res.ok:
            raise LabError(f"nodepods {args[0]} on {node}: {(res.stderr or res.stdout).strip().splitlines()[-1:] or res.returncode}")
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            raise LabError(f"nodepods {args[0]} on {node} printed no JSON") from None
        return list(doc)

    def _node_pods(self, node: str) -> list[Pod]:
        # 60 s: a listing waits for nodepods' lock, which a boot's restore (a CNI ADD per pod) or an
        # add holds for tens of seconds on an emulated VM; in ci10 a listing on kube-node1 took > 20 s.
        return self._pods_from_list(node, self._nodepods(node, "list", timeout=60))

    @staticmethod
    def _pods_from_list(node: str, listed: list[dict[str, Any]]) -> list[Pod]:
        return [Pod(name=p["name"], node=node, ip=p.get("ip") or "", restarts=int(p.get("restarts", 0)),
                    created=float(p.get("created", 0.0)), netns=p.get("netns") or "",
                    state="Running" if p.get("ip") else "Pending")
                for p in listed]

    def _probe(self, node: str) -> dict[str, str]:
        """The node's status sections (commands.node_probe), one SSH round trip."""
        pods = [*NODEPODS, "list"] if self.node_mode == "none" else None
        res = self.exec(node, commands.node_probe(pods), timeout=20)
        return parsers.sections(res.stdout)

    def status(self) -> LabStatus:
        spec = self.spec()
        machines = self.machine_states()
        running = {n.name for n in spec.node_list() if machines.get(n.name) == "running"}
        probes = self._parallel_nodes(spec, lambda n: self._probe(n) if n in running else LabError("not running"))
        seen: dict[str, dict[str, str]] = {n: p for n, p in probes.items() if isinstance(p, dict)}
        tunnels: list[TunnelStatus] = []
        for n in spec.node_list():
            sec = seen.get(n.name, {})
            sas = parsers.parse_swanctl_raw(sec["sas"]) if sec.get("charon", "").strip() and "sas" in sec else None
            auth = auth_details(*parsers.parse_swanctl_auth(sec.get("conns", ""), sec.get("certs", "")), sas) if sas is not None else {}
            tunnels.extend(dataclasses.replace(t, detail=t.detail | auth.get(t.name, {}))
                           for t in tunnel_statuses(spec.tunnels_of(n), sas))
        ready: dict[str, bool] | None = None
        pods: list[Pod] = []
        services: list[Service] = []
        if self.node_mode == "none":
            for n in spec.node_list():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    pods += self._pods_from_list(n.name, json.loads(seen[n.name]["pods"]))
            svc = self._service()
            services = [svc] if svc else []
        elif spec.node(1).name in seen:
            try:
                ready = parsers.ready_nodes_from_kubectl(self._kubectl_json("get", "nodes"))
                pods = self._pods()
                svc = self._service()
                services = [svc] if svc else []
            except LabError as exc:
                self.reporter.line(f"kubectl on {spec.node(1).name}: {exc}", stream="stderr", source="actions")
        nodes = []
        for n in spec.node_list():
            sec = seen.get(n.name, {})
            age = sec.get("charon", "").strip()
            if n.name not in running:
                state = "down"
            elif n.name not in seen:
                state = "booting"
            elif ready is None:
                state = "ready"  # reachable, and no Kubernetes answer to go by
            else:
                state = "ready" if ready.get(n.name) else "booting"
            nodes.append(NodeStatus(
                name=n.name, ip=str(n.underlay_ip), pod_cidr=str(n.pod_cidr), state=state,
                ipsec_state="running" if age else "stopped",
                ipsec_uptime=float(age) if age.isdigit() else None,
                pods=sum(p.node == n.name for p in pods),
                ipam_used=sum(1 for f in sec.get("ipam", "").split() if f[:1].isdigit()),
            ))
        return LabStatus(self.lab, self.name, DATAPATH, nodes, tunnels, pods, services,
                         hypervisor=self.hypervisor_summary)

    def _charon_answers(self, node: str) -> bool:
        try:
            return self.exec(node, commands.swanctl_stats(), timeout=10).ok
        except LabError:
            return False

    # ------------------------------------------------------------------ workload
    def _bootcamp_image(self) -> str:
        res = self.exec(self._control_plane(), ["cat", "/etc/ipsec-lab/bootcamp-image"], timeout=10)
        image = res.stdout.strip() if res.ok else ""
        return image or vf.BOOTCAMP_IMAGES[0]

    # node mode none: the Deployment's and the Service's records live in the lab's state; each
    # node's pods in its nodepods.py; kube-proxy's NodePort rules are rendered here and applied.
    def _deploy_offline(self, replicas: int) -> list[Pod]:
        spec = self.spec()
        with labstate.lab_lock(self.paths):
            dep = self._run_state().get("deployment") or {"name": naming.DEPLOYMENT_NAME, "hash": workload.rand(10)}
            with self.reporter.step(f"deploy {naming.DEPLOYMENT_NAME} x{replicas}"):
                doomed, placement = workload.scale(self._pods(), spec.node_list(), replicas, dep["hash"])
                self._apply_pod_changes(spec, doomed, placement)
            self._update_run_state(deployment=dict(dep, replicas=replicas))
        return self._pods()

    def _apply_pod_changes(self, spec: LabSpec, doomed: list[Pod], placement: dict[str, list[str]]) -> None:
        touched = [n.name for n in spec.node_list() if n.name in placement or any(p.node == n.name for p in doomed)]

        def change(node: str) -> None:
            gone = [p.name for p in doomed if p.node == node]
            if gone:
                self._nodepods(node, "del", *gone, timeout=120)
                for name in gone:
                    self.reporter.line(f"pod {name} deleted (CNI DEL)", node=node)
            if placement.get(node):
                pods = {p["name"]: p for p in self._nodepods(node, "add", *placement[node], timeout=180)}
                for name in placement[node]:
                    self.reporter.line(f"pod {name}: CNI ADD (bridge, host-local) -> {pods.get(name, {}).get('ip', '?')}",
                                       node=node)

        parallel(change, touched)
        if touched:
            self._sync_service_rules(spec)

    def _sync_service_rules(self, spec: LabSpec) -> None:
        svc = self._service()
        if svc is None:
            return
        endpoints = [p.ip for p in self._pods() if p.ip]

        def apply(node: str) -> None:
            rules = render.render_kube_proxy_rules(spec, spec.node(node), svc, endpoints)
            res = self.exec(node, commands.iptables_restore(), input=rules, timeout=30)
            if not res.ok:
                raise LabError(f"iptables-restore failed on {node}: {res.stderr.strip()[-200:]}")
            # Forwarded NodePort traffic passes FORWARD DROP only with kube-proxy's mark (KUBE-FORWARD).
            self.exec(node, commands.iptables_ensure("FORWARD", commands.KUBE_FORWARD_RULE), timeout=30)
            self.reporter.line(f"kube-proxy rules: node port {svc.node_port} -> {len(endpoints)} endpoints", node=node)

        parallel(apply, [n.name for n in spec.node_list()])

    def _expose_offline(self, node_port: int | None) -> Service:
        with labstate.lab_lock(self.paths):
            st = self._run_state()
            if not st.get("deployment"):
                raise UsageError("nothing to expose: deploy first (`ipsec-lab deploy`)")
            old = st.get("service")
            port = node_port or (old["node_port"] if old else random.randint(*NODE_PORT_RANGE))
            svc = Service(name=naming.DEPLOYMENT_NAME, type="NodePort", port=POD_PORT, node_port=port)
            self._update_run_state(service=dataclasses.asdict(svc))
            with self.reporter.step(f"expose {naming.DEPLOYMENT_NAME} on node port {port}"):
                self._sync_service_rules(self.spec())
        return svc

    def deploy(self, replicas: int = 9) -> list[Pod]:
        validate_replicas(replicas)
        if self.node_mode == "none":
            return self._deploy_offline(replicas)
        dep = naming.DEPLOYMENT_NAME
        with self.reporter.step(f"deploy {dep} x{replicas}"):
            if not self.kubectl("get", "deployment", dep, "-o", "name", check=False).ok:
                image = self._bootcamp_image()
                # The seed's `kubectl run --replicas 9` is gone; create at 0, spread pods evenly
                # over the nodes (3 per node for 9 on 3), then scale.
                self._action(f"kubectl create deployment {dep} --image={image} --port={POD_PORT}")
                self.kubectl("create", "deployment", dep, f"--image={image}", f"--port={POD_PORT}", "--replicas=0")
                self.kubectl("patch", "deployment", dep, "--type=json", "-p", SPREAD_PATCH)
            self._action(f"kubectl scale deployment {dep} --replicas={replicas}")
            self.kubectl("scale", "deployment", dep, f"--replicas={replicas}")
            self.kubectl("rollout", "status", f"deployment/{dep}", "--timeout=300s", timeout=320)
        return self._pods()

    def delete_pod(self, name: str) -> Pod:
        if self.node_mode == "none":
            spec = self.spec()
            with labstate.lab_lock(self.paths):
                pods = self._pods()
                pod = next((p for p in pods if p.name == name), None)
                if pod is None:
                    raise NotFoundError(f"no pod named {name!r}; `ipsec-lab status` lists the pods")
                dep = self._run_state().get("deployment") or {"hash": workload.rand(10)}
                # The Deployment controller schedules the replacement on the node with the fewest pods.
                rest = [p for p in pods if p is not pod]
                target = workload.least_loaded(rest, spec.node_list())
                new = workload.pod_name(dep["hash"], {p.name for p in pods})
                with self.reporter.step(f"delete pod {name}"):
                    self._apply_pod_changes(spec, [pod], {target: [new]})
            fresh = next((p for p in self._pods() if p.name == new), None)
            if fresh is None:
                raise LabError(f"the replacement of pod {name} is missing on {target}")
            return fresh
        before = {p.name for p in self._pods()}
        if name not in before:
            raise NotFoundError(f"no pod named {name!r}; `ipsec-lab status` lists the pods")
        with self.reporter.step(f"kubectl delete pod {name}"):
            self.kubectl("delete", "pod", name, "--wait=true", timeout=120)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                started = [p for p in self._pods() if p.name not in before and p.state == "Running" and p.ip]
                if started:
                    return started[0]
                time.sleep(1.0)
        raise LabError(f"no replacement for pod {name} was Running within 120 s")

    def expose(self, node_port: int | None = None) -> Service:
        validate_node_port(node_port)
        if self.node_mode == "none":
            return self._expose_offline(node_port)
        dep = naming.DEPLOYMENT_NAME
        if not self.kubectl("get", "deployment", dep, "-o", "name", check=False).ok:
            raise UsageError("nothing to expose: deploy first (`ipsec-lab deploy`)")
        with self.reporter.step(f"expose {dep} as a NodePort"):
            if self._service() is None:
                self._action(f"kubectl expose deployment {dep} --type=NodePort --port {POD_PORT}")
                self.kubectl("expose", "deployment", dep, "--type=NodePort", f"--port={POD_PORT}")
            if node_port is not None:
                patch = json.dumps([{"op": "replace", "path": "/spec/ports/0/nodePort", "value": node_port}])
                self.kubectl("patch", "service", dep, "--type=json", "-p", patch)
        svc = self._service()
        if svc is None:
            raise LabError(f"service {dep} is missing after kubectl expose")
        return svc

    # ------------------------------------------------------------------ faults
    def _node_cmd(self, node: str, argv: list[str], what: str, timeout: float = 30) -> Result:
        self.spec().node(node)
        with self.reporter.step(what, node=node):
            res = self.exec(node, argv, timeout=timeout)
            for line in (res.stdout + res.stderr).splitlines():
                self.reporter.line(line, node=node, source="actions")
            if not res.ok:
                raise LabError(f"{' '.join(argv)} failed on {node}: {(res.stderr or res.stdout).strip()[-200:]}")
        return res

    def tunnel_down(self, node: str, conn: str) -> str:
        self.spec().tunnel(node, conn)
        cmd = commands.swanctl_terminate_ike(conn)
        self._node_cmd(node, cmd, f"{' '.join(cmd)} on {node} (the seed's `ipsec down {conn}`)", timeout=20)
        return " ".join(cmd)

    def tunnel_up(self, node: str, conn: str) -> str:
        self.spec().tunnel(node, conn)
        cmd = commands.swanctl_initiate_child(conn)
        self._node_cmd(node, cmd, f"{' '.join(cmd)} on {node}", timeout=20)
        return " ".join(cmd)

    def restart_ipsec(self, node: str) -> None:
        # As on netns: killed (a graceful stop's DELETEs make every peer re-initiate while the
        # new daemon does, leaving duplicate IKE SAs), started again, then it announces itself.
        # The node's charon starts its answering connections itself once it loaded them
        # (strongswan-vm.conf's start-scripts), as after a reboot.
        self._node_cmd(node, commands.restart_strongswan_unit(), f"restart strongSwan on {node}")

    def _boot_id(self, node: str) -> str:
        res = self.exec(node, ["cat", "/proc/sys/kernel/random/boot_id"], timeout=10)
        return res.stdout.strip() if res.ok else ""

    @property
    def reboot_power_cycles(self) -> bool:
        """Whether `reboot` power-cycles the VM (a cold boot: a new QEMU process) rather than
        resetting it: under emulation (TCG) QEMU's warm reset leaves the rebooted guest slow. Measured
        here on kube-node3 (3 VMs, 2 cores): after `systemctl reboot` the boot took 16 s (kernel) +
        79 s (userspace), against 9 s + 49 s after a cold start, and in 1 of 3 reboots GRUB copied the
        initrd at about 30 bytes/s (a byte loop at 0xce3e, seen with `info registers`) for more than
        300 s. Under KVM a warm reboot is what a user gets, and what the lab does."""
        return self._libvirt_settings().get("accel") == "tcg"

    def _domain(self, node: str) -> str:
        return f"ipsec-lab-{self.lab}-{node}"  # the Vagrantfile's default_prefix, and the node name

    def _power_cycle(self, node: str) -> None:
        """The guest shuts down cleanly (`systemctl poweroff`: its units stop as in a reboot), QEMU
        exits, libvirt starts the domain again."""
        with contextlib.suppress(LabError):  # the connection may drop before the answer
            self.exec(node, ["systemctl", "poweroff"], timeout=15)
        deadline = time.monotonic() + self.poweroff_wait_s
        while self.machine_states().get(node) != "shutoff":
            if time.monotonic() > deadline:  # a guest that will not stop is switched off, as a power button held
                self._libvirt_virsh("destroy", self._domain(node))
                break
            time.sleep(1.0)
        cp = self._libvirt_virsh("start", self._domain(node))
        if cp.returncode != 0:
            raise LabError(f"reboot {node}: virsh start {self._domain(node)} failed: {cp.stderr.strip()}")

    def reboot(self, node: str) -> None:
        """A real reboot of the VM: `systemctl reboot` on it, or under emulation a power cycle
        (reboot_power_cycles). Back when it answers over SSH with a new boot id and its charon
        runs. Its units bring cni0, the XFRM interfaces, strongSwan and (node mode none) its pods
        back, and the NodePort rules follow the pods' addresses. The node's charon tells its peers
        itself (start-scripts)."""
        spec = self.spec()
        spec.node(node)
        how = ("systemctl poweroff, virsh start: a cold boot, since QEMU's warm reset leaves an emulated VM slow"
               if self.reboot_power_cycles else "systemctl reboot: a real VM reboot")
        with self.reporter.step(f"reboot {node} ({how})", node=node):
            before = self._boot_id(node)
            if self.reboot_power_cycles:
                self._power_cycle(node)
            else:
                with contextlib.suppress(LabError):  # the connection may drop before the answer
                    self.exec(node, ["systemctl", "reboot"], timeout=15)
            self._forget_node(node)
            deadline = time.monotonic() + self.reboot_wait_s
            while True:
                time.sleep(self.reboot_poll_s)
                try:
                    now = self._boot_id(node)
                    if now and now != before and self._charon_answers(node):
                        break
                except LabError:
                    self._forget_node(node)
                if time.monotonic() > deadline:
                    raise LabError(f"{node} did not come back over SSH within {self.reboot_wait_s:.0f} s of its reboot")
        if self.node_mode == "none" and self._service() is not None:
            self._wait_pods_back(node)
            self._sync_service_rules(spec)

    def _wait_pods_back(self, node: str, timeout: float = 60.0) -> None:
        """Until nodepods' boot unit gave every pod of the node its new address."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(LabError):
                pods = self._node_pods(node)
                if all(p.ip for p in pods):
                    return
            time.sleep(1.0)
        raise LabError(f"the pods of {node} did not come back within {timeout:.0f} s of its reboot")

    def set_underlay_link(self, node: str, up: bool) -> None:
        spec = self.spec()
        ip = str(spec.node(node).underlay_ip)
        state = "up" if up else "down"
        res = self.exec(node, commands.underlay_link_set(ip, up), timeout=15)
        if not res.ok:
            raise LabError(f"cannot set the underlay link of {node} {state}: {res.stderr.strip()}")
        self._action(f"underlay link of {node} {'restored' if up else 'cut'}", node=node)

    # ------------------------------------------------------------------ captures
    def _libvirt_virsh(self, *args: str) -> subprocess.CompletedProcess[str]:
        lv = self._libvirt_settings()
        return subprocess.run(["virsh", "-c", str(lv.get("uri") or "qemu:///system"), *args], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL)

    def _underlay_ports(self) -> list[str]:
        """The host side of every VM's underlay NIC (libvirt's vnetN), where the VMs' packets enter."""
        ports: list[str] = []
        for n in self.spec().node_list():
            cp = self._libvirt_virsh("domiflist", self._domain(n.name))
            net = vf.read_vagrant_spec(self.files)["libvirt_network"]
            for line in cp.stdout.splitlines():
                bits = line.split()
                if len(bits) >= 3 and bits[2] == net:
                    ports.append(bits[0])
        return ports

    @property
    def node_files_are_local(self) -> bool:
        return False

    def capture_file(self, node: str, name: str) -> tuple[str, Path] | None:
        """In the VM's /run (gone at a reboot, as on a real node); its copy in the lab's captures."""
        self.spec().node(node)
        return f"/run/{name}.pcap", self.files.captures / f"{name}.pcap"

    def fetch_node_file(self, node: str, remote: str, local: Path) -> None:
        # base64 over the node's Fabric session: one command, no second channel (sftp) to set up.
        res = self.exec(node, ["base64", "-w0", remote], timeout=120)
        if not res.ok:
            raise LabError(f"cannot read {remote} on {node}: {res.stderr.strip() or f'exit {res.returncode}'}")
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(f"{local.name}.{threading.get_ident()}.part")  # two readers at once (verdict, save)
        part.write_bytes(base64.b64decode(res.stdout.strip()))
        part.replace(local)  # a reader never sees half a copy

    def start_capture(self, name: str) -> object:
        """tcpdump where the VMs' underlay is wired: on libvirt, one per VM on the host side of its
        underlay NIC (vnetN, in the lab's namespace when the lab runs its own libvirtd), packets
        entering from the VM only, merged at stop: each packet between two nodes is captured once,
        as a switch port would see it, and capturing goes on while a node reboots. Elsewhere
        (VirtualBox), on each VM's own interface."""
        ports = self._underlay_ports() if self._libvirt_settings() else []
        if len(ports) != self.spec().nodes:
            return self._start_capture_on_nodes(name)
        self.files.captures.mkdir(parents=True, exist_ok=True)
        safe = "".join(c for c in name if c.isalnum() or c in "-_") or "capture"
        ns = self._netns()
        handle = _HostCapture(str(self.files.captures / f"{safe}.pcap"), [])
        for port in ports:
            part = str(self.files.captures / f"{safe}.{port}.pcap")
            argv = [*(["ip", "netns", "exec", ns] if ns else []), "tcpdump", "-n", "-U", "--immediate-mode",
                    "-Q", "in", "-i", port, "-w", part]
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
            handle.parts.append((p, part))
            assert p.stderr is not None  # stderr=PIPE
            line = p.stderr.readline()  # "tcpdump: listening on vnet0, ..." once the socket is open
            if "listening on" not in line:
                self.stop_capture(handle)
                raise LabError(f"tcpdump on {port} (the VMs' underlay) did not start: {line.strip()}")
        return handle

    def _start_capture_on_nodes(self, name: str) -> object:
        """tcpdump on every node's private interface, outgoing packets only: each packet between
        two nodes is captured once, at its sender, as a switch between them would see it."""
        spec = self.spec()
        safe = "".join(c for c in name if c.isalnum() or c in "-_") or "capture"
        handle = _Capture(safe, {})
        for n in spec.node_list():
            base = f"/tmp/ipsec-lab-capture-{safe}-{n.name}"
            script = (f'dev=$({commands.FIND_UNDERLAY_IF}); [ -n "$dev" ] || {{ echo "no interface holds $1" >&2; exit 1; }}; '
                      f'rm -f {base}.pcap {base}.log; '
                      f'nohup tcpdump -n -U --immediate-mode -Q out -Z root -i "$dev" -w {base}.pcap '
                      f'>/dev/null 2>{base}.log </dev/null & echo $! > {base}.pid; '
                      f'for i in $(seq 1 100); do grep -q "listening on" {base}.log && exit 0; sleep 0.05; done; '
                      f'cat {base}.log >&2; exit 1')
            res = self.exec(n.name, ["sh", "-c", script, "capture", str(n.underlay_ip)], timeout=20)
            if not res.ok:
                self.stop_capture(handle)
                raise LabError(f"tcpdump on {n.name} did not start: {res.stderr.strip()}")
            handle.nodes[n.name] = base
        return handle

    def stop_capture(self, handle: object) -> str:
        if isinstance(handle, _HostCapture):
            for p, _ in handle.parts:
                p.send_signal(signal.SIGINT)
            for p, _ in handle.parts:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            parts = [part for _, part in handle.parts]
            try:
                pcap.merge(parts, handle.path)
            except ValueError as exc:
                raise LabError(str(exc)) from None
            finally:
                for part in parts:
                    Path(part).unlink(missing_ok=True)
            return handle.path
        if not isinstance(handle, _Capture):
            raise TypeError(f"not a capture of this backend: {handle!r}")
        self.files.captures.mkdir(parents=True, exist_ok=True)
        out = str(self.files.captures / f"{handle.name}.pcap")
        with tempfile.TemporaryDirectory(prefix="ipsec-lab-capture-") as tmp:
            parts = []
            for node, base in handle.nodes.items():
                script = (f'pid=$(cat {base}.pid 2>/dev/null) && kill -INT "$pid" 2>/dev/null; '
                          f'for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done; '
                          f'chmod a+r {base}.pcap')
                self.exec(node, ["sh", "-c", script], timeout=20)
                local = str(Path(tmp) / f"{node}.pcap")
                self.shells.get(node, f"{base}.pcap", local)
                self.exec(node, ["rm", "-f", f"{base}.pcap", f"{base}.pid", f"{base}.log"], timeout=10)
                parts.append(local)
            try:
                pcap.merge(parts, out)
            except ValueError as exc:
                raise LabError(str(exc)) from None
        return out


# ---------------------------------------------------------------------------------- prepare CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tui.backends.vagrant",
                                description="Write a Vagrant lab's spec and node files (starts nothing).")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write .ipsec-lab/<lab>/ for the Vagrantfile")
    prep.add_argument("--lab", default=os.environ.get("IPSEC_LAB", vf.DEFAULT_LAB))
    prep.add_argument("--nodes", type=int, default=3)
    prep.add_argument("--underlay", default="192.168.56.0/24")
    prep.add_argument("--pod-supernet", default="10.128.0.0/16")
    args = p.parse_args(argv)
    try:
        spec = LabSpec.build(args.lab, args.nodes, args.underlay, args.pod_supernet)
        files = vf.LabFiles.of(args.lab)
        vf.write_lab_files(spec, files)
    except LabError as exc:
        print(f"ipsec-lab: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, UsageError) else 2
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(files.env().items()))
    print(f"wrote {files.dir}; now: {env} vagrant up --provision")
    return 0


if __name__ == "__main__":
    sys.exit(main())
