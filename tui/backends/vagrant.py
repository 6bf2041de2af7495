"""The Vagrant backend: the seed's real Kubernetes cluster on VMs, from the same templates.

- The lab spec goes to .ipsec-lab/<lab>/vagrant.json, which the top-level Vagrantfile reads, and
  every node's files are rendered from provisioning/templates (render.render_vm_node) into
  .ipsec-lab/<lab>/nodes/<node>/, which Vagrant's file provisioner uploads.
- python-vagrant runs up, reload, destroy and status with --machine-readable; every line of
  their output goes to the Reporter as it comes (the event stream the netns backend uses).
- Every node command runs over Fabric (SSH), connections built from `vagrant ssh-config NODE`:
  tunnel state from `swanctl --list-sas --raw`, pods and services from `kubectl ... -o json`.

`python -m tui.backends.vagrant prepare --lab NAME [--nodes N]` writes the spec and the node
files without starting anything, for people who drive `vagrant` by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
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
from ..lab.model import POD_PORT, LabSpec, Pod, Service, validate_node_port, validate_replicas
from ..lab.proc import Result
from ..lab.status import LabStatus, NodeStatus, TunnelStatus
from ..lab.vici_status import tunnel_statuses
from . import vagrant_files as vf, vagrant_preflight as vp
from .base import Backend, Plan, parallel_or_error, split_complete_lines
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


class _MachineReadableVagrant(pyvagrant.Vagrant):  # type: ignore[misc]  # python-vagrant ships no types: Any
    """python-vagrant, with --machine-readable on the commands whose output we stream, so that
    every line names the machine it is about."""

    MACHINE_READABLE = {"up", "reload", "halt", "destroy", "provision"}

    def _make_vagrant_command(self, args: Sequence[str]) -> list[str]:
        cmd: list[str] = super()._make_vagrant_command(args)
        if len(cmd) > 1 and cmd[1] in self.MACHINE_READABLE and "--machine-readable" not in cmd:
            cmd.append("--machine-readable")
        return cmd


@dataclass(frozen=True)
class _Capture:
    name: str
    nodes: dict[str, str]  # node -> the capture's files on it, without extension


class VagrantBackend(Backend):
    name = "vagrant"
    cni_bin_dir = render.cni_bin_dir(vf.DEFAULT_NODE_MODE)  # per node mode: kubernetes-cni's or Debian's
    mesh_timeout = TUNNEL_WAIT_S
    mesh_poll = 1.0
    reboot_wait_s = 300.0  # how long a rebooted node may take to answer over SSH
    reboot_poll_s = 2.0  # seconds between two tries

    def __init__(self, lab: str, reporter: Reporter | None = None, *, host: vp.HostFacts | None = None) -> None:
        super().__init__(naming.validate_lab_name(lab), reporter)
        self.files = vf.LabFiles.of(lab)
        self.host = host
        self.shells = NodeShells(self._ssh_config)
        self._ssh_configs: dict[str, str] = {}

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
        return _MachineReadableVagrant(
            root=str(vf.ROOT), env=self._env(),
            out_cm=lambda: line_pipe(lambda line: out.feed(line, "stdout")),
            err_cm=lambda: line_pipe(lambda line: out.feed(line, "stderr")),
        )

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
        if node not in self._ssh_configs:
            self._ssh_configs[node] = str(self._run_vagrant(f"ssh-config {node}", lambda v: v.ssh_config(vm_name=node)))
        return self._ssh_configs[node]

    def _forget_node(self, node: str) -> None:
        self._ssh_configs.pop(node, None)
        self.shells.forget(node)

    def machine_states(self) -> dict[str, str]:
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
            "vagrant_env": self.files.env(), "created": time.time(),
        })

    # ------------------------------------------------------------------ up: the base's hooks
    def preflight(self, spec: LabSpec) -> None:
        self._provider = vp.preflight(spec, self.host or vp.HostFacts(), self._other_labs())

    def choose_datapath(self, requested: str | None) -> str:
        if requested not in (None, DATAPATH):
            raise UsageError(f"the Vagrant backend uses the {DATAPATH} data path (the VMs' kernels have ESP "
                             f"and XFRM interfaces), not {requested}")
        return DATAPATH

    def plan(self, spec: LabSpec, datapath: str) -> Plan:
        secrets = vf.lab_secrets(spec, self.files)
        box = vf.box()
        return Plan(spec, datapath, vf.render_lab_files(spec, secrets), secrets,
                    detail=f"{spec.nodes} nodes, box {box}, files in {self.files.dir}",
                    extra={"provider": self._provider, "box": box})

    def save_state(self, plan: Plan) -> None:
        # The Vagrantfile's spec first: the run state names it, and `down` destroys what it lists.
        vf.write_lab_files(plan.spec, self.files, plan.extra["box"], secrets=plan.secrets, rendered=plan.files)
        self._save_run_state(plan.extra["provider"], "creating")

    def write_files(self, plan: Plan) -> None:
        """Written with the spec in save_state: the Vagrantfile reads both."""

    def boot(self, plan: Plan) -> None:
        provider = plan.extra["provider"]
        with self.reporter.step(f"vagrant up ({provider}, {plan.spec.nodes} VMs)"):
            self._run_vagrant("up", lambda v: v.up(provider=provider, provision=True))

    def mark_up(self, plan: Plan) -> None:
        self._save_run_state(plan.extra["provider"], "up")

    def prepare(self, spec: LabSpec) -> dict[str, Any]:
        """Write the spec the Vagrantfile reads and every node's rendered files."""
        return vf.write_lab_files(spec, self.files)

    def tunnel_statuses(self, spec: LabSpec) -> list[TunnelStatus]:
        return self._tunnels(spec, {})

    # ------------------------------------------------------------------ down
    def teardown(self, quiet: bool) -> list[str]:
        removed: list[str] = []
        self.shells.close()
        self._ssh_configs.clear()
        if self.files.spec_file.exists():
            if shutil.which("vagrant") is None:
                self.reporter.line("vagrant is not installed: no VMs to destroy", stream="stderr")
            else:
                with self.reporter.step(f"vagrant destroy ({self.lab})"):
                    self._run_vagrant("destroy", lambda v: v.destroy())
                removed.append(f"VMs of lab {self.lab}")
        if self.files.dir.exists():
            shutil.rmtree(self.files.dir, ignore_errors=True)
            removed.append(f"files {self.files.dir}")
        if self.paths.state_file.exists():
            removed.append(f"state {self.paths.dir}")
        labstate.remove_lab_files(self.paths)
        for item in removed:
            self.reporter.line(f"removed {item}", source="actions")
        return removed

    # ------------------------------------------------------------------ node commands
    def node_argv(self, node: str, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        """`vagrant ssh NODE -c 'sudo -n -- CMD'` with this lab's Vagrant environment."""
        self.spec().node(node)
        env = [f"{k}={v}" for k, v in sorted(self.files.env().items())]
        cmd = NodeShells.command_line("vagrant", argv)
        tty = [] if interactive else ["--no-tty"]
        return ["env", *env, shutil.which("vagrant") or "vagrant", "ssh", node, *tty, "-c", cmd]

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
        pods = {p.name for p in self._pods()}
        if pod not in pods:
            raise NotFoundError(f"no pod named {pod!r}; `ipsec-lab status` lists the pods")
        return self.kubectl("exec", pod, "--", *argv, timeout=timeout, check=False)

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
        return parsers.pods_from_kubectl(self._kubectl_json("get", "pods", "-l", APP_LABEL))

    def _service(self) -> Service | None:
        res = self.kubectl("get", "service", naming.DEPLOYMENT_NAME, "-o", "json", check=False)
        if not res.ok:
            return None
        return parsers.service_from_kubectl(parsers.json_object(res.stdout))

    def _ipam_used(self, node: str) -> int:
        res = self.exec(node, ["sh", "-c", "ls /run/cni/networks/ipsec-lab 2>/dev/null || true"], timeout=10)
        return sum(1 for f in res.stdout.split() if f[:1].isdigit())

    def status(self) -> LabStatus:
        spec = self.spec()
        machines = self.machine_states()
        running = {n.name for n in spec.node_list() if machines.get(n.name) == "running"}
        reach = self._parallel_nodes(spec, lambda n: self._ipam_used(n) if n in running else LabError("not running"))
        tunnels = self._tunnels(spec, reach)
        ready: dict[str, bool] | None = None
        pods: list[Pod] = []
        services: list[Service] = []
        if spec.node(1).name in running and not isinstance(reach.get(spec.node(1).name), Exception):
            try:
                ready = parsers.ready_nodes_from_kubectl(self._kubectl_json("get", "nodes"))
                pods = self._pods()
                svc = self._service()
                services = [svc] if svc else []
            except LabError as exc:
                self.reporter.line(f"kubectl on {spec.node(1).name}: {exc}", stream="stderr", source="actions")
        nodes = []
        for n in spec.node_list():
            ipsec_up = any(t.node == n.name and t.ike_state != "DOWN" for t in tunnels) or (
                n.name in running and not isinstance(reach.get(n.name), Exception) and self._charon_answers(n.name))
            if n.name not in running:
                state = "down"
            elif isinstance(reach.get(n.name), Exception):
                state = "booting"
            elif ready is None:
                state = "ready"  # reachable, and no Kubernetes answer to go by
            else:
                state = "ready" if ready.get(n.name) else "booting"
            nodes.append(NodeStatus(
                name=n.name, ip=str(n.underlay_ip), pod_cidr=str(n.pod_cidr), state=state,
                ipsec_state="running" if ipsec_up else "stopped", ipsec_uptime=None,
                pods=sum(p.node == n.name for p in pods),
                ipam_used=reach[n.name] if isinstance(reach.get(n.name), int) else 0,
            ))
        return LabStatus(self.lab, self.name, DATAPATH, nodes, tunnels, pods, services)

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

    def deploy(self, replicas: int = 9) -> list[Pod]:
        validate_replicas(replicas)
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
        before = {p.name for p in self._pods()}
        if name not in before:
            raise NotFoundError(f"no pod named {name!r}; `ipsec-lab status` lists the pods")
        with self.reporter.step(f"kubectl delete pod {name}"):
            self.kubectl("delete", "pod", name, "--wait=true", timeout=120)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                fresh = [p for p in self._pods() if p.name not in before and p.state == "Running" and p.ip]
                if fresh:
                    return fresh[0]
                time.sleep(1.0)
        raise LabError(f"no replacement for pod {name} was Running within 120 s")

    def expose(self, node_port: int | None = None) -> Service:
        validate_node_port(node_port)
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
        self._node_cmd(node, commands.restart_strongswan_unit(), f"restart strongSwan on {node}")
        self._announce(node)

    def _announce(self, node: str) -> None:
        script = commands.announce_script(self.spec(), node)
        if script:
            self._node_cmd(node, commands.sh(script), f"initiate {node}'s answering connections", timeout=20)

    def reboot(self, node: str) -> None:
        self.spec().node(node)
        with self.reporter.step(f"reboot {node} (vagrant reload)", node=node):
            self._forget_node(node)
            self._run_vagrant(f"reload {node}", lambda v: v.reload(vm_name=node))
            self._forget_node(node)  # the forwarded SSH port may have changed
            deadline = time.monotonic() + self.reboot_wait_s
            while True:
                try:
                    if self.exec(node, ["true"], timeout=10).ok:
                        break
                except LabError:
                    pass
                if time.monotonic() > deadline:
                    raise LabError(f"{node} did not answer over SSH within {self.reboot_wait_s:.0f} s of its reboot")
                time.sleep(self.reboot_poll_s)
            self._announce(node)

    def set_underlay_link(self, node: str, up: bool) -> None:
        spec = self.spec()
        ip = str(spec.node(node).underlay_ip)
        state = "up" if up else "down"
        res = self.exec(node, commands.underlay_link_set(ip, up), timeout=15)
        if not res.ok:
            raise LabError(f"cannot set the underlay link of {node} {state}: {res.stderr.strip()}")
        self._action(f"underlay link of {node} {'restored' if up else 'cut'}", node=node)

    # ------------------------------------------------------------------ captures
    def start_capture(self, name: str) -> object:
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
