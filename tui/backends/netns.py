"""The netns backend: the seed's cluster network on one Linux host, as network namespaces.

- An underlay namespace holds bridge br0 (the "switch" between the nodes, with the gateway).
- Each node is a namespace with eth0 on that switch, its own cni0, iptables and routes, its own
  charon, and a private /run, /etc/swanctl, /etc/strongswan.conf and /var/log, bound from the
  lab's state directory by a small wrapper around `ip netns exec` (see NODE_WRAPPER).
- Pods are namespaces held by files in the node's /run/netns (as containerd keeps them), attached
  by the real CNI bridge + host-local plugins run inside the node, and served by one podserver
  process per node. There is no kubelet: a pod is a network namespace with an HTTP server.

Everything of lab L is named ilab-L-*, and state.json records it before it exists, so `down`
finds and removes all of it even after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets as pysecrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..lab import certs, commands, naming, preflight, proc, render, state as labstate
from ..lab.errors import LabError, NotFoundError, UsageError
from ..lab.events import Reporter
from ..lab.model import NODE_PORT_RANGE, POD_PORT, LabSpec, Node, Pod, Service, pair_key, validate_node_port, validate_replicas
from ..lab.proc import ProcRef, Result
from ..lab.status import LabStatus, NodeStatus, TunnelStatus
from ..lab.vici_status import list_auth, list_sas, tunnel_statuses
from .base import Backend, Plan, parallel
from .netns_state import Deployment, NetnsState, NodeRecord, PodRecord

CHARON = "/usr/lib/ipsec/charon"
CNI_BIN_DIR = "/usr/lib/cni"
SWANCTL_SUBDIRS = ("conf.d", "x509", "x509ca", "x509aa", "x509ocsp", "x509crl", "x509ac", "pubkey",
                   "private", "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12")

# Runs a command inside a node: the node's /run, swanctl dir, strongswan.conf and /var/log are
# bound over the host's, in the private mount namespace `ip netns exec` already gives us.
# /run goes last: the other sources live under the host's /run, which it hides.
NODE_WRAPPER = (
    'mount --bind "$2" /etc/swanctl && mount --bind "$3" /etc/strongswan.conf && '
    'mount --bind "$4" /var/log && mount --rbind "$1" /run && shift 4 && exec "$@"'
)
HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters Kubernetes uses in generated names
POD_LIST = "ipsec-lab-pods.json"
POD_CONTROL = "ipsec-lab-pods.sock"
TUNNEL_WAIT_S = float(os.environ.get("IPSEC_LAB_TUNNEL_WAIT", "30"))


def _rand(n: int) -> str:
    return "".join(random.choice(HASH_ALPHABET) for _ in range(n))


@dataclass(frozen=True)
class _Capture:
    process: "subprocess.Popen[str]"
    path: str


class NetnsBackend(Backend):
    name = "netns"
    mesh_timeout = TUNNEL_WAIT_S
    mesh_poll = 0.01

    def __init__(self, lab: str, reporter: Reporter | None = None) -> None:
        super().__init__(naming.validate_lab_name(lab), reporter)
        self._state_lock = threading.RLock()
        self._state: NetnsState | None = None

    # ------------------------------------------------------------------ state helpers
    def load_state(self) -> NetnsState:
        """The lab's state as state.json holds it now (and kept for the changes that follow)."""
        with self._state_lock:
            self._state = NetnsState.from_json(labstate.load_state(self.paths))
            return self._state

    def _load(self) -> dict[str, Any]:
        """load_state(), as state.json's dict. Kept for tests/test_checks.py (its test-only backends
        read charon PIDs from it and halt nodes); new code uses load_state() or charon_ref()."""
        return self.load_state().to_json()

    @property
    def state(self) -> NetnsState:
        """The state loaded last (load_state), which this backend changes and saves."""
        if self._state is None:
            raise LabError(f"lab {self.lab!r}: state not loaded")
        return self._state

    def _save(self) -> None:
        with self._state_lock:
            labstate.save_state(self.paths, self.state.to_json())

    def _update(self, fn: Callable[[NetnsState], None]) -> None:
        with self._state_lock:
            fn(self.state)
            self._save()

    def _update_node(self, node: str, **changes: Any) -> None:
        with self._state_lock:
            rec = self.state.nodes[node]
            for key, value in changes.items():
                setattr(rec, key, value)
            self._save()

    def charon_ref(self, node: str) -> ProcRef | None:
        """The node's charon process as state.json records it (None before it started)."""
        return NetnsState.from_json(labstate.load_state(self.paths)).nodes[node].charon

    def exists(self) -> bool:
        return self.paths.state_file.exists()

    @property
    def pods_are_namespaces(self) -> bool:
        return True

    def charon_log(self, node: str) -> Path | None:
        return self.paths.charon_log(node)

    def spec(self) -> LabSpec:
        return LabSpec.from_dict(labstate.load_state(self.paths)["spec"])

    @property
    def ul_ns(self) -> str:
        return naming.underlay_namespace(self.lab)

    def node_ns(self, node: str) -> str:
        return naming.node_namespace(self.lab, node)

    # ------------------------------------------------------------------ preflight
    def host_findings(self) -> list[preflight.Finding]:
        """What any netns lab needs, whatever its data path: root, the programs, strongSwan's files."""
        return [preflight.check_root(), *preflight.check_programs(), *preflight.check_files()]

    def lab_findings(self, rendered: dict[str, dict[str, render.RenderedFile]], datapath: str) -> list[preflight.Finding]:
        """What this lab's rendered files will load: strongSwan and CNI plugins, and the kernel's part."""
        files = next(iter(rendered.values()))
        found = [*preflight.check_strongswan_plugins(files["strongswan.conf"].content),
                 *preflight.check_cni_plugins(files["10-ipsec-lab.conflist"].content, preflight.cni_bin_dir(CNI_BIN_DIR))]
        if datapath == "kernel-libipsec":
            found.append(preflight.check_tun())
        return found

    def doctor(self, datapath: str | None = None) -> list[preflight.Finding]:
        """Every finding at once, for `ipsec-lab doctor`: the host's, then those of a 3-node lab on
        the data path `up` would pick here."""
        found = self.host_findings()
        if preflight.missing(found[:1]) or shutil.which("ip") is None:
            datapath = datapath or "kernel-libipsec"  # cannot probe the kernel without root and ip
            found.append(preflight.Finding("kernel", "data path", True, f"{datapath} (assumed: not probed)"))
        elif datapath is None:
            datapath, why = self._probe_datapath()
            found.append(preflight.Finding("kernel", "data path", True, f"{datapath} ({why})"))
        spec = LabSpec.build(self.lab, 3)
        found += self.lab_findings(render.render_lab(spec, datapath=datapath, secrets=_secrets(spec, lambda: "x")), datapath)
        return [*found, preflight.check_netem()]

    def _probe_datapath(self) -> tuple[str, str]:
        """kernel-xfrm where the kernel has ESP and XFRM interfaces, else kernel-libipsec; and why."""
        ns = naming.probe_namespace(self.lab)
        proc.run(["ip", "netns", "add", ns], what=f"creating probe namespace {ns}")
        try:
            xfrm_if = proc.run(["ip", "-n", ns, "link", "add", "probe0", "type", "xfrm", "dev", "lo", "if_id", "1"], check=False)
            esp = proc.run(
                ["ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2", "proto", "esp",
                 "spi", "0x100", "mode", "tunnel", "aead", "rfc4106(gcm(aes))", "0x" + "11" * 20, "128"],
                check=False,
            )
        finally:
            proc.run(["ip", "netns", "del", ns], check=False)
        if xfrm_if.ok and esp.ok:
            return "kernel-xfrm", "this kernel has ESP and XFRM interfaces"
        return "kernel-libipsec", "this kernel has " + ("no XFRM interfaces" if not xfrm_if.ok else "no kernel ESP")

    def detect_datapath(self) -> str:
        datapath, why = self._probe_datapath()
        if datapath == "kernel-libipsec":
            self.reporter.line(f"data path: kernel-libipsec (userspace ESP in UDP; {why})")
        return datapath

    # ------------------------------------------------------------------ up: the base's hooks
    # Preflight, data path and rendering change nothing (the probe namespace comes and goes),
    # so a missing piece is refused before even the lab's lock file exists.
    def preflight(self, spec: LabSpec) -> None:
        preflight.require(self.host_findings())
        netem = preflight.check_netem()  # never blocks: `link --delay` says so when asked
        if not netem.ok:
            self.reporter.line(f"note: {netem.detail}")

    def choose_datapath(self, requested: str | None) -> str:
        if requested is None:
            with self.reporter.step("detect data path"):
                detected = self.detect_datapath()
            return detected
        if requested == "kernel-xfrm":
            probed, why = self._probe_datapath()
            if probed != requested:
                raise UsageError(f"the kernel-xfrm data path needs kernel ESP and XFRM interfaces, but {why}: "
                                 "use --datapath kernel-libipsec (or auto)")
        return requested  # kernel-libipsec runs anywhere preflight passed (render refuses unknown ones)

    def plan(self, spec: LabSpec, datapath: str) -> Plan:
        if spec.auth == "x509":  # a lab CA and node keys, in memory: the keys go to the nodes' files only
            secrets: dict[str, str] = {}
            creds = certs.lab_credentials(spec)
            files = render.render_lab(spec, datapath=datapath, secrets=secrets, credentials=creds)
            return Plan(spec, datapath, files, secrets, detail=f"X.509: lab CA, {len(creds)} node certificates")
        secrets = _secrets(spec, lambda: pysecrets.token_hex(32))
        return Plan(spec, datapath, render.render_lab(spec, datapath=datapath, secrets=secrets), secrets)

    def preflight_plan(self, plan: Plan) -> None:
        # Every plugin the rendered files load is there, before anything is created.
        preflight.require(self.lab_findings(plan.files, plan.datapath))

    def before_create(self, plan: Plan) -> None:
        leftovers = self._lab_namespaces()
        if leftovers:
            raise UsageError(
                f"namespaces of an earlier lab {self.lab!r} are still there ({leftovers[0]}, ...); "
                f"`ipsec-lab --lab {self.lab} down` removes them"
            )

    def save_state(self, plan: Plan) -> None:
        with self._state_lock:
            self._state = NetnsState(spec=plan.spec, datapath=plan.datapath, secrets=dict(plan.secrets),
                                     nodes={n.name: NodeRecord() for n in plan.spec.node_list()}, created=time.time())
            self._save()

    def write_files(self, plan: Plan) -> None:
        for node, files in plan.files.items():
            self._write_node_files(node, files)

    def boot(self, plan: Plan) -> None:
        spec = plan.spec
        with self.reporter.step("create underlay"):
            self._create_underlay(spec)
        parallel(lambda n: self._boot_node(spec, n, rebooting=False, load=False), spec.node_list())
        # Answering ends load first: a charon that runs but has no config yet refuses an
        # initiator with NO_PROPOSAL_CHOSEN, and strongSwan never retries that.
        for n in reversed(spec.node_list()):
            self._load_conns(n.name)

    def mark_up(self, plan: Plan) -> None:
        self._update(lambda s: setattr(s, "phase", "up"))

    def _write_node_files(self, node: str, files: dict[str, render.RenderedFile]) -> None:
        etc = self.paths.node_etc(node)
        for sub in SWANCTL_SUBDIRS:
            (etc / "swanctl" / sub).mkdir(parents=True, exist_ok=True)
        targets = {
            "strongswan.conf": etc / "strongswan.conf",
            "swanctl.conf": etc / "swanctl" / "swanctl.conf",
            "10-ipsec-lab.conflist": etc / "cni" / "net.d" / "10-ipsec-lab.conflist",
            "node-boot.sh": etc / "ipsec-lab" / "node-boot.sh",
        }
        for role, f in files.items():
            # X.509 files (render.credential_files) are named by their path below the node's etc/.
            target = etc / role if role.startswith(render.SWANCTL_ROLE_PREFIX) else targets[role]
            labstate.write_file(target, f.content, f.mode)
        self.paths.node_log(node).mkdir(parents=True, exist_ok=True)

    def _create_underlay(self, spec: LabSpec) -> None:
        ns = self.ul_ns
        proc.run(["ip", "netns", "add", ns])
        batch = [
            "link set lo up",
            f"link add {naming.UNDERLAY_BRIDGE} type bridge",
            f"link set {naming.UNDERLAY_BRIDGE} mtu {spec.underlay_mtu}",
            f"addr add {spec.gateway}/{spec.underlay.prefixlen} dev {naming.UNDERLAY_BRIDGE}",
            f"link set {naming.UNDERLAY_BRIDGE} up",
        ]
        self._ip_batch(ns, batch)
        # The underlay is a switch, not a router: traffic that is not for a node dies here.
        proc.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self.reporter.line(f"underlay {spec.underlay} on {naming.UNDERLAY_BRIDGE} in namespace {ns}")

    def _ip_batch(self, ns: str, lines: Iterable[str]) -> None:
        proc.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n", what=f"ip -n {ns} -batch")

    # ------------------------------------------------------------------ nodes
    def node_argv(self, node: str, argv: Sequence[str], *, interactive: bool = False) -> list[str]:
        etc = self.paths.node_etc(node)
        return [
            "ip", "netns", "exec", self.node_ns(node), "sh", "-c", NODE_WRAPPER, "ipsec-lab-node",
            str(self.paths.node_run(node)), str(etc / "swanctl"), str(etc / "strongswan.conf"),
            str(self.paths.node_log(node)), *argv,
        ]

    def _check_node(self, node: str) -> LabSpec:
        spec = self.load_state().spec
        spec.node(node)  # raises UsageError for an unknown node
        return spec

    def exec(self, node: str, argv: Sequence[str], *, input: str | None = None, timeout: float = 30.0,
             env: dict[str, str] | None = None, check: bool = False) -> Result:
        return proc.run(self.node_argv(node, argv), input=input, timeout=timeout, env=env, check=check,
                        what=f"{' '.join(argv)} on {node}")

    def _boot_node(self, spec: LabSpec, node: Node, *, rebooting: bool, load: bool = True) -> None:
        name, ns = node.name, self.node_ns(node.name)
        with self.reporter.step(f"boot {name}", node=name):
            self._update_node(name, state="booting")
            run_dir = self.paths.node_run(name)
            (run_dir / "netns").mkdir(parents=True, exist_ok=True)
            run_dir.chmod(0o755)
            # Pods' namespaces are mounted here later, from the host side; a shared mount lets
            # them propagate into processes already running in the node (the podserver).
            proc.run(["mount", "--bind", str(run_dir / "netns"), str(run_dir / "netns")])
            proc.run(["mount", "--make-shared", str(run_dir / "netns")])
            proc.run(["ip", "netns", "add", ns])
            port = naming.underlay_port(node.index)
            self._ip_batch(self.ul_ns, [
                f"link add {port} type veth peer name {naming.NODE_UNDERLAY_IF} netns {ns}",
                f"link set {port} mtu {spec.underlay_mtu} master {naming.UNDERLAY_BRIDGE} up",
            ])
            self._ip_batch(ns, [
                "link set lo up",
                f"link set {naming.NODE_UNDERLAY_IF} mtu {spec.underlay_mtu}",
                f"addr add {node.underlay_ip}/{spec.underlay.prefixlen} dev {naming.NODE_UNDERLAY_IF}",
                # The cleartext guard goes in before the default route: anything sent to a pod
                # between here and the boot script (which sets it too) would leave in clear.
                f"route add unreachable {spec.pod_supernet}",
                f"link set {naming.NODE_UNDERLAY_IF} up",
                f"route add default via {spec.gateway}",
            ])
            self.reporter.line(f"{naming.NODE_UNDERLAY_IF} {node.underlay_ip}/{spec.underlay.prefixlen}, default via {spec.gateway}", node=name)
            # The seed's start order: cni0 and the firewall first, then strongSwan, then pods.
            script = (self.paths.node_etc(name) / "ipsec-lab" / "node-boot.sh").read_text()
            boot = self.exec(name, ["sh", "-x", "-s"], input=script, check=False)
            for line in boot.stderr.splitlines():
                if line.startswith("+ "):
                    self.reporter.line(line[2:], node=name)
            if not boot.ok:
                raise LabError(f"boot script failed on {name}: {proc.last_line(boot.stderr)}")
            self._start_charon(name)
            if load:
                self._load_conns(name, announce=rebooting)
            self._start_podserver(name)
            with self._state_lock:
                rec = self.state.nodes[name]
                self._update_node(name, state="ready", booted_at=time.time(), boots=rec.boots + 1)
            if rebooting:
                self._recreate_node_pods(spec, node)

    def _start_daemon(self, node: str, argv: Sequence[str], log_name: str, env: dict[str, str] | None = None) -> ProcRef:
        log = open(self.paths.node_log(node) / log_name, "ab")
        try:
            p = subprocess.Popen(self.node_argv(node, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, env=env, cwd="/")
        finally:
            log.close()
        return ProcRef(p.pid, proc.start_time(p.pid) or 0)

    def _start_charon(self, node: str) -> None:
        vici = self.paths.vici_socket(node)
        # A killed charon leaves its socket and pid file; a stale pid that now names another
        # process would make the new charon refuse to start.
        for stale in (vici, self.paths.node_run(node) / "charon.pid", self.paths.node_run(node) / "charon.ctl"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        ref = self._start_daemon(node, [CHARON], "charon.stdout")
        self._update_node(node, charon=ref)
        deadline = time.monotonic() + 10
        while True:
            if not proc.alive(ref):
                tail = self._log_tail(node, 3)
                raise LabError(f"charon on {node} exited at start: {tail or 'see its log'}")
            try:
                list_sas(str(vici), timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"charon on {node} does not answer on {vici}")
                time.sleep(0.005)
        self.reporter.line(f"charon started (pid {ref.pid})", node=node)

    def _load_conns(self, node: str, announce: bool = False) -> None:
        """swanctl --load-all; with `announce`, also start the connections this node only answers.

        After a restart or reboot the peers still hold SAs with this node's old charon; starting
        every connection from here sends INITIAL_CONTACT, so they replace them at once instead of
        waiting for dead peer detection.
        """
        load = self.exec(node, commands.swanctl_load_all())
        for line in (load.stdout + load.stderr).splitlines():
            self.reporter.line(line, node=node, source="provisioning")
        if not load.ok:
            raise LabError(f"swanctl --load-all failed on {node}: {proc.last_line(load.stderr or load.stdout)}")
        script = commands.announce_script(self.spec(), node, commands.CHARON_STOPPED) if announce else None
        if script:
            self.exec(node, commands.sh(script), timeout=15)
            self.reporter.line("initiated the connections this node only answers (INITIAL_CONTACT to the peers)",
                               node=node)

    def _charon_stopped(self, node: str) -> None:
        """Note when the node's charon stopped (commands.CHARON_STOPPED, as a VM's unit does): the
        announce after its next start reads how long it was away."""
        labstate.write_file(self.paths.node_log(node) / Path(commands.CHARON_STOPPED).name, f"{int(time.time())}\n", 0o644)

    def _log_tail(self, node: str, n: int) -> str:
        try:
            lines = self.paths.charon_log(node).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return " | ".join(lines[-n:])

    def _start_podserver(self, node: str) -> None:
        import sys

        # sys.executable imports the same installed tui (a wheel or the editable install): no PYTHONPATH.
        ref = self._start_daemon(node, [sys.executable, "-m", "tui.backends.podserver"], "podserver.log")
        self._update_node(node, podserver=ref)
        deadline = time.monotonic() + 15
        while not (self.paths.node_run(node) / POD_CONTROL).exists():
            if not proc.alive(ref):
                raise LabError(f"podserver on {node} exited at start; see {self.paths.node_log(node) / 'podserver.log'}")
            if time.monotonic() > deadline:
                raise LabError(f"podserver on {node} did not start")
            time.sleep(0.005)

    def _podserver_sync(self, node: str) -> None:
        with self._state_lock:
            pods = {p.name: p.netns for p in self.state.pods_of(node) if p.netns}
        labstate.write_file(self.paths.node_run(node) / POD_LIST, json.dumps(pods), 0o644)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect(str(self.paths.node_run(node) / POD_CONTROL))
            sock.sendall(b"sync\n")
            answer = sock.recv(4096).decode().strip()
        except OSError as exc:
            raise LabError(f"podserver on {node} does not answer: {exc}") from None
        finally:
            sock.close()
        if not answer.startswith("ok"):
            raise LabError(f"podserver on {node}: {answer}")

    def tunnel_statuses(self, spec: LabSpec) -> list[TunnelStatus]:
        out: list[TunnelStatus] = []
        for n in spec.node_list():
            try:
                sas = list_sas(str(self.paths.vici_socket(n.name)), timeout=1.0)
            except OSError:
                sas = None
            out.extend(tunnel_statuses(spec.tunnels_of(n), sas))
        return out

    # ------------------------------------------------------------------ pods
    def _cni(self, node: Node, command: str, container_id: str, netns: str) -> dict[str, Any]:
        conflist = self._conflist(node.name)
        plugin = dict(conflist["plugins"][0], cniVersion=conflist["cniVersion"], name=conflist["name"])
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_BIN_DIR,
        }
        res = self.exec(node.name, [f"{CNI_BIN_DIR}/{plugin['type']}"], input=json.dumps(plugin), env=env)
        if not res.ok:
            try:
                msg = json.loads(res.stdout).get("msg", res.stdout)
            except ValueError:
                msg = proc.last_line(res.stderr or res.stdout)
            raise LabError(f"CNI {command} failed on {node.name}: {msg}")
        out: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
        return out

    def _create_pod(self, node: Node, name: str, restarts: int = 0) -> PodRecord:
        nsid = f"cni-{uuid.uuid4()}"
        host_path = self.paths.node_run(node.name) / "netns" / nsid
        host_path.touch()
        proc.run(["unshare", f"--net={host_path}", "ip", "link", "set", "lo", "up"], what=f"creating pod {name}")
        container_id = uuid.uuid4().hex
        result = self._cni(node, "ADD", container_id, f"/run/netns/{nsid}")
        ip = str(result["ips"][0]["address"]).split("/")[0]
        self.reporter.line(f"pod {name}: CNI ADD (bridge, host-local) -> {ip}", node=node.name)
        return PodRecord(name=name, node=node.name, ip=ip, netns=f"/run/netns/{nsid}", id=container_id,
                         restarts=restarts, created=time.time())

    def _destroy_pod(self, spec: LabSpec, pod: PodRecord, *, cni_del: bool = True) -> None:
        node = spec.node(pod.node)
        if cni_del and pod.netns:
            with contextlib.suppress(LabError):
                self._cni(node, "DEL", pod.id, pod.netns)
        if pod.netns:
            host_path = self.paths.node_run(node.name) / "netns" / Path(pod.netns).name
            proc.umount_lazy(str(host_path))
            with contextlib.suppress(FileNotFoundError):
                host_path.unlink()

    def deploy(self, replicas: int = 9) -> list[Pod]:
        validate_replicas(replicas)
        with labstate.lab_lock(self.paths):
            st = self.load_state()
            spec = st.spec
            if replicas > spec.nodes * 250:
                raise UsageError("more replicas than the nodes' /24 ranges can hold")
            dep = st.deployment or Deployment(naming.DEPLOYMENT_NAME, _rand(10), 0)
            st.deployment = replace(dep, replicas=replicas)
            pods = st.pods
            with self.reporter.step(f"deploy {naming.DEPLOYMENT_NAME} x{replicas}"):
                # Scale down: newest pods first, from the fullest node.
                doomed: list[PodRecord] = []
                while len(pods) - len(doomed) > replicas:
                    left = [p for p in pods if p not in doomed]
                    counts = {n.name: sum(p.node == n.name for p in left) for n in spec.node_list()}
                    fullest = max(counts, key=lambda k: (counts[k], spec.node(k).index))
                    doomed.append(max((p for p in left if p.node == fullest), key=lambda p: p.created))
                # Scale up: round-robin over the nodes with the fewest pods (3 per node for 9 on 3).
                placement: dict[str, list[str]] = {}
                counts = {n.name: sum(p.node == n.name for p in pods if p not in doomed) for n in spec.node_list()}
                existing = {p.name for p in pods}
                for _ in range(replicas - (len(pods) - len(doomed))):
                    target = min(counts, key=lambda k: (counts[k], spec.node(k).index))
                    counts[target] += 1
                    name = self._new_pod_name(dep.hash, existing)
                    existing.add(name)
                    placement.setdefault(target, []).append(name)
                self._apply_pod_changes(spec, doomed, placement)
            return [self._pod(p) for p in self.state.pods]

    def _new_pod_name(self, pod_hash: str, taken: set[str]) -> str:
        while True:
            name = f"{naming.DEPLOYMENT_NAME}-{pod_hash}-{_rand(5)}"
            if name not in taken:
                return name

    def _apply_pod_changes(self, spec: LabSpec, doomed: list[PodRecord], placement: dict[str, list[str]]) -> None:
        for p in doomed:
            self._destroy_pod(spec, p)
            self.reporter.line(f"pod {p.name} deleted (CNI DEL)", node=p.node)
        names = {p.name for p in doomed}
        self._update(lambda s: setattr(s, "pods", [p for p in s.pods if p.name not in names]))
        touched = {p.node for p in doomed} | set(placement)

        def create_on(node: Node) -> None:
            for name in placement.get(node.name, []):
                pod = self._create_pod(node, name)
                self._update(lambda s: s.pods.append(pod))
            if node.name in touched:
                self._podserver_sync(node.name)

        parallel(create_on, [n for n in spec.node_list() if n.name in touched])
        if touched:
            self._sync_service_rules(spec)

    def delete_pod(self, name: str) -> Pod:
        with labstate.lab_lock(self.paths):
            st = self.load_state()
            spec = st.spec
            pod = st.pod(name)
            if pod is None:
                raise NotFoundError(f"no pod named {name!r}; `ipsec-lab status` lists the pods")
            pod_hash = st.deployment.hash if st.deployment else _rand(10)
            replacement = self._new_pod_name(pod_hash, {p.name for p in st.pods})
            # The Deployment controller schedules the replacement on the node with the fewest pods.
            counts = {n.name: sum(p.node == n.name for p in st.pods if p is not pod) for n in spec.node_list()}
            target = min(counts, key=lambda k: (counts[k], spec.node(k).index))
            self._apply_pod_changes(spec, [pod], {target: [replacement]})
            fresh = self.state.pod(replacement)
            assert fresh is not None  # just added by _apply_pod_changes
            return self._pod(fresh)

    def _recreate_node_pods(self, spec: LabSpec, node: Node) -> None:
        """After a reboot: the node's pods come back (same names, one more restart, new sandboxes)."""
        with self._state_lock:
            old = list(self.state.pods_of(node.name))
        for p in old:
            fresh = self._create_pod(node, p.name, restarts=p.restarts + 1)
            self._update(lambda s: setattr(s, "pods", [fresh if q.name == fresh.name else q for q in s.pods]))
        self._podserver_sync(node.name)

    def _pod(self, p: PodRecord) -> Pod:
        return Pod(name=p.name, node=p.node, ip=p.ip, restarts=p.restarts, created=p.created, netns=p.netns)

    # ------------------------------------------------------------------ service (kube-proxy's job)
    def expose(self, node_port: int | None = None) -> Service:
        validate_node_port(node_port)
        lo, hi = NODE_PORT_RANGE
        with labstate.lab_lock(self.paths):
            st = self.load_state()
            if st.deployment is None:
                raise UsageError("nothing to expose: deploy first (`ipsec-lab deploy`)")
            if node_port is None:
                node_port = st.service.node_port if st.service else random.randint(lo, hi)
            svc = Service(name=naming.DEPLOYMENT_NAME, type="NodePort", port=POD_PORT, node_port=node_port)
            self._update(lambda s: setattr(s, "service", svc))
            with self.reporter.step(f"expose {naming.DEPLOYMENT_NAME} on node port {node_port}"):
                self._sync_service_rules(st.spec)
            return svc

    def _sync_service_rules(self, spec: LabSpec) -> None:
        with self._state_lock:
            svc = self.state.service
            endpoints = [p.ip for p in self.state.pods if p.ip]
        if svc is None:
            return
        parallel(lambda n: self._apply_service_rules(spec, n, svc, endpoints), spec.node_list())

    def _apply_service_rules(self, spec: LabSpec, node: Node, svc: Service, endpoints: list[str]) -> None:
        rules = render.render_kube_proxy_rules(spec, node, svc, endpoints)
        res = self.exec(node.name, commands.iptables_restore(), input=rules)
        if not res.ok:
            raise LabError(f"iptables-restore failed on {node.name}: {proc.last_line(res.stderr)}")
        # Forwarded NodePort traffic (from the underlay to a pod elsewhere) passes FORWARD DROP
        # only with kube-proxy's mark, as kube-proxy's KUBE-FORWARD chain allows it.
        self.exec(node.name, commands.iptables_ensure("FORWARD", commands.KUBE_FORWARD_RULE))
        self.reporter.line(f"kube-proxy rules: node port {svc.node_port} -> {len(endpoints)} endpoints", node=node.name)

    # ------------------------------------------------------------------ faults
    def tunnel_down(self, node: str, conn: str) -> str:
        spec = self._check_node(node)
        spec.tunnel(node, conn)
        cmd = commands.swanctl_terminate_ike(conn)
        with self.reporter.step(f"{' '.join(cmd)} on {node} (the seed's `ipsec down {conn}`)", node=node):
            res = self.exec(node, cmd, timeout=15)
            for line in (res.stdout + res.stderr).splitlines():
                self.reporter.line(line, node=node, source="actions")
            if not res.ok:
                raise LabError(f"{' '.join(cmd)} failed on {node}: {proc.last_line(res.stderr or res.stdout)}")
        return " ".join(cmd)

    def tunnel_up(self, node: str, conn: str) -> str:
        spec = self._check_node(node)
        spec.tunnel(node, conn)
        cmd = commands.swanctl_initiate_child(conn)
        current = next((t for t in self.tunnel_statuses(spec) if t.node == node and t.name == conn), None)
        if current is not None and current.up:
            self.reporter.line(f"{conn} on {node} is already up", node=node, source="actions")
            return " ".join(cmd)
        with self.reporter.step(f"{' '.join(cmd)} on {node}", node=node):
            res = self.exec(node, cmd, timeout=15)
            for line in (res.stdout + res.stderr).splitlines():
                self.reporter.line(line, node=node, source="actions")
        return " ".join(cmd)

    def restart_ipsec(self, node: str) -> None:
        with labstate.lab_lock(self.paths):
            self._check_node(node)
            with self.reporter.step(f"restart strongSwan on {node}", node=node):
                ref = self.state.nodes[node].charon
                # Killed, as a crash (and systemd's Restart=) would: a graceful stop sends DELETEs
                # that make every peer re-initiate at the moment the new daemon does, leaving
                # duplicate IKE SAs. The new charon's INITIAL_CONTACT clears the peers' old SAs.
                # A charon started while the old one still exits cannot bind UDP 500/4500 and
                # never gets an SA: stop() returns only once the old PID is gone.
                proc.stop([ref], grace=0.0, sig=signal.SIGKILL)
                self._charon_stopped(node)
                self._start_charon(node)
                self._load_conns(node, announce=True)

    def reboot(self, node: str) -> None:
        with labstate.lab_lock(self.paths):
            spec = self._check_node(node)
            n = spec.node(node)
            with self.reporter.step(f"reboot {node}", node=node):
                self._halt_node(n)
                self._boot_node(spec, n, rebooting=True)
                self._sync_service_rules(spec)

    def _halt_node(self, node: Node) -> None:
        """Power off: processes killed, the namespace and its /run (pods, IPAM data) gone."""
        name = node.name
        self._update_node(name, state="down")
        rec = self.state.nodes[name]
        proc.stop([rec.charon, rec.podserver], grace=0.0, sig=signal.SIGKILL)
        self._charon_stopped(name)
        self._kill_namespace_processes(self.node_ns(name))
        proc.run(["ip", "-n", self.ul_ns, "link", "del", naming.underlay_port(node.index)], check=False)
        run_dir = self.paths.node_run(name)
        proc.umount_all_under(str(run_dir))
        shutil.rmtree(run_dir, ignore_errors=True)
        proc.run(["ip", "netns", "del", self.node_ns(name)], check=False)

        def forget_sandboxes(s: NetnsState) -> None:
            for p in s.pods_of(name):
                p.ip, p.netns = None, ""

        self._update(forget_sandboxes)
        self.reporter.line(f"{name} powered off: processes stopped, namespace and /run wiped", node=name)

    def set_underlay_link(self, node: str, up: bool) -> None:
        spec = self._check_node(node)
        port = naming.underlay_port(spec.node(node).index)
        proc.run(["ip", "-n", self.ul_ns, *commands.ip_link_set(port, up)[1:]])
        self.reporter.line(f"underlay link of {node} {'restored' if up else 'cut'}", node=node, source="actions")

    def cni_config(self, node: str) -> dict[str, Any]:
        self._check_node(node)
        return self._conflist(node)

    def _conflist(self, node: str) -> dict[str, Any]:
        conf: dict[str, Any] = json.loads((self.paths.node_etc(node) / "cni" / "net.d" / "10-ipsec-lab.conflist").read_text())
        return conf

    def pod_exec(self, pod: str, argv: Sequence[str], *, timeout: float = 30.0) -> Result:
        p = self.load_state().pod(pod)
        if p is None:
            raise NotFoundError(f"no pod named {pod!r}; `ipsec-lab status` lists the pods")
        if not p.netns:
            raise LabError(f"pod {pod} has no sandbox right now (its node is rebooting)")
        return self.exec(p.node, ["nsenter", f"--net={p.netns}", *argv], timeout=timeout)

    # ------------------------------------------------------------------ captures
    def start_capture(self, name: str) -> object:
        """tcpdump on the underlay bridge: it sees every packet between the nodes."""
        cap_dir = self.paths.dir / "captures"
        cap_dir.mkdir(parents=True, exist_ok=True)
        path = cap_dir / f"{name}.pcap"
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ul_ns, "tcpdump", "-n", "-U", "--immediate-mode", "-i", naming.UNDERLAY_BRIDGE, "-w", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert p.stderr is not None  # stderr=PIPE
        line = p.stderr.readline()  # "tcpdump: listening on br0, ..." once the socket is open
        if "listening on" not in line:
            p.kill()
            p.wait()
            raise LabError(f"tcpdump on the underlay did not start: {line.strip()}")
        return _Capture(p, str(path))

    def capture_file(self, node: str, name: str) -> tuple[str, Path] | None:
        self._check_node(node)  # the node's /run is its run directory here (NODE_WRAPPER)
        return f"/run/{name}.pcap", self.paths.node_run(node) / f"{name}.pcap"

    def stop_capture(self, handle: object) -> str:
        if not isinstance(handle, _Capture):
            raise TypeError(f"not a capture of this backend: {handle!r}")
        p = handle.process
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        return handle.path

    # ------------------------------------------------------------------ status
    def status(self) -> LabStatus:
        st = self.load_state()
        spec = st.spec
        nodes = []
        tunnels: list[TunnelStatus] = []
        pod_counts: dict[str, int] = {}
        for p in st.pods:
            pod_counts[p.node] = pod_counts.get(p.node, 0) + 1
        for n in spec.node_list():
            rec = st.nodes.get(n.name, NodeRecord(state="unknown"))
            running = proc.alive(rec.charon)
            try:
                sas = list_sas(str(self.paths.vici_socket(n.name)), timeout=1.0) if running else None
                auth = list_auth(str(self.paths.vici_socket(n.name)), sas, timeout=1.0) if running else {}
            except OSError:
                sas, auth = None, {}
            # The SA detail also says how each peer authenticated (and its certificate's subject).
            tunnels.extend(replace(t, detail=t.detail | auth.get(t.name, {}))
                           for t in tunnel_statuses(spec.tunnels_of(n), sas))
            nodes.append(NodeStatus(
                name=n.name, ip=str(n.underlay_ip), pod_cidr=str(n.pod_cidr), state=rec.state,
                ipsec_state="running" if running else "stopped", ipsec_uptime=proc.uptime_of(rec.charon),
                pods=pod_counts.get(n.name, 0), ipam_used=self._ipam_used(n.name),
            ))
        pods = []
        for p in st.pods:
            rec = st.nodes.get(p.node, NodeRecord(state="unknown"))
            state = "Running" if rec.state == "ready" and p.ip and proc.alive(rec.podserver) else (
                "ContainerCreating" if rec.state in ("booting", "down") else "Unknown")
            pods.append(replace(self._pod(p), state=state))
        services = [st.service] if st.service else []
        return LabStatus(self.lab, self.name, st.datapath, nodes, tunnels, pods, services)

    def _ipam_used(self, node: str) -> int:
        d = self.paths.node_run(node) / "cni" / "networks" / "ipsec-lab"
        try:
            return sum(1 for f in d.iterdir() if f.name[0].isdigit() and not f.name.startswith("last_reserved"))
        except OSError:
            return 0

    # ------------------------------------------------------------------ down
    def _lab_namespaces(self) -> list[str]:
        prefix = naming.lab_prefix(self.lab)
        try:
            names = os.listdir("/run/netns")
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.startswith(prefix))

    def _kill_namespace_processes(self, ns: str) -> None:
        """Processes inside one of this lab's namespaces (started by the lab or a user's exec)."""
        res = proc.run(["ip", "netns", "pids", ns], check=False)
        refs: list[ProcRef | None] = []
        for tok in res.stdout.split():
            if tok.isdigit() and int(tok) != os.getpid():
                st = proc.start_time(int(tok))
                if st is not None:
                    refs.append(ProcRef(int(tok), st))
        if refs:
            proc.stop(refs, grace=0.5, sig=signal.SIGKILL)

    def teardown(self, quiet: bool) -> list[str]:
        removed: list[str] = []
        try:
            nodes = NetnsState.from_json(labstate.load_state(self.paths)).nodes
        except (LabError, KeyError, TypeError, ValueError):  # no state, or state.json cut short
            nodes = {}
        refs: list[ProcRef | None] = [r for rec in nodes.values() for r in (rec.charon, rec.podserver) if proc.alive(r)]
        if refs:
            proc.stop(refs, grace=1.0)
            removed.append(f"{len(refs)} processes")
        namespaces = self._lab_namespaces()
        for ns in namespaces:
            self._kill_namespace_processes(ns)
        if self.paths.dir.exists():
            proc.umount_all_under(str(self.paths.dir))
        # Nodes first (their veths go with them), the underlay last.
        for ns in sorted(namespaces, key=lambda n: n == self.ul_ns):
            proc.run(["ip", "netns", "del", ns], check=False)
            removed.append(f"namespace {ns}")
        if self.paths.dir.exists():
            removed.append(f"state {self.paths.dir}")
        labstate.remove_lab_files(self.paths)
        if not quiet:
            for item in removed:
                self.reporter.line(f"removed {item}", source="actions")
        self._state = None
        return removed


def _secrets(spec: LabSpec, make: Callable[[], str]) -> dict[str, str]:
    """One pre-shared key per node pair."""
    return {pair_key(a.name, b.name): make() for a in spec.node_list() for b in spec.node_list() if a.index < b.index}
