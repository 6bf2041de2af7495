"""Every command the lab sends to a node, built in one place, as data (argv lists).

Backends, checks, the tutorial and the TUI run these through `Backend.exec(node, argv)`; the
text a person sees ("the command it ran") is `shown(argv)`. Nothing here runs anything.
"""

from __future__ import annotations

import shlex
from typing import Sequence

from .model import LabSpec

Argv = list[str]

CHARON_LOG = "/var/log/charon.log"  # where the node's charon writes (render.NodePaths.charon_log)
# When the node's charon last stopped (epoch seconds), written as it stops: by strongswan.service's
# ExecStopPost on a VM, by the netns backend when it kills charon. In /var/log, which outlives a
# reboot on both, so the announce after a boot sees how long the node was away.
CHARON_STOPPED = "/var/log/charon.stopped"


def shown(argv: Sequence[str]) -> str:
    """An argv as a person would type it."""
    return shlex.join(argv)


# -- strongSwan ---------------------------------------------------------------------------------
def swanctl_terminate_ike(conn: str) -> Argv:
    """Take connection `conn` down as the seed's `ipsec down CONN` did (the IKE SA and its CHILD SAs)."""
    return ["swanctl", "--terminate", "--ike", conn]


def swanctl_initiate_child(conn: str, timeout: int = 10) -> Argv:
    """Start connection `conn`'s CHILD SA (and its IKE SA) now, waiting up to `timeout` seconds."""
    return ["swanctl", "--initiate", "--child", conn, "--timeout", str(timeout)]


def swanctl_rekey(conn: str, *, ike: bool = False) -> Argv:
    """Rekey connection `conn`'s CHILD SA (or, with `ike`, its IKE SA) now; charon queues it and
    answers at once, the new SPIs show in --list-sas once the exchange is done."""
    return ["swanctl", "--rekey", "--ike" if ike else "--child", conn]


def swanctl_load_all() -> Argv:
    """Load every connection and secret of /etc/swanctl/swanctl.conf into the running charon."""
    return ["swanctl", "--load-all", "--noprompt"]


def swanctl_list_sas(raw: bool = False) -> Argv:
    """List the IKE and CHILD SAs; `raw` prints vici's messages (tui.lab.parsers.parse_swanctl_raw)."""
    return ["swanctl", "--list-sas", *(["--raw"] if raw else [])]


def swanctl_stats() -> Argv:
    """charon's statistics: succeeds only while charon answers on its vici socket."""
    return ["swanctl", "--stats"]


def ipsec_down(conn: str) -> Argv:
    """The seed's own command (strongSwan's `ipsec` wrapper); the lab answers it as swanctl does."""
    return ["ipsec", "down", conn]


# A charon that was away longer than this may find a peer already re-initiating (its dead peer
# detection gave up): the peer's first retransmit can come no sooner than about 7 s after the last
# message this node answered (retransmit_timeout 1 s, base 1.4, 3 tries: 1 + 1.4 + 1.96 + 2.74).
ANNOUNCE_AT_ONCE_S = 4
# How long a node back from a longer absence listens for a peer's retry before initiating itself:
# a peer that is retrying sends again at most 2.74 s after its last try.
ANNOUNCE_LISTEN_S = 3


def announce_script(spec: LabSpec, node: str, stopped_stamp: str) -> str | None:
    """A shell line that starts the connections `node` only answers, run after its charon started.

    After a short absence (a restart: `stopped_stamp` holds when the old charon stopped, in epoch
    seconds, less than ANNOUNCE_AT_ONCE_S ago) the peers still hold SAs with the old daemon, and
    the INITIAL_CONTACT these initiations carry makes them drop those at once, instead of after
    dead peer detection. After a longer one (a reboot) a peer may already be re-initiating: if
    this node also initiated, both would complete and each pair would keep two IKE SAs (with
    `unique = keep` strongSwan takes a second SA from the same address for a reauthentication).
    So it first listens for ANNOUNCE_LISTEN_S for an IKE SA from that peer and initiates only if
    none came (a peer whose try met this charon before swanctl.conf was loaded got
    NO_PROPOSAL_CHOSEN and stopped trying). The lower-numbered end of each pair starts the others
    by itself, per swanctl.conf. None when the node answers no connection.

    No quotes, braces or #: the VM's strongswan.conf carries this line as a start-script.
    """
    passive = [t for t in spec.tunnels_of(node) if not t.initiator]
    if not passive:
        return None
    listen = shown(swanctl_list_sas(raw=True))
    # The listen is bounded by the clock, not by a count of tries: under emulation one swanctl call
    # takes half a second, and 15 tries listened for 10 s (netns in a VM: reboot gap 6-8 s -> 13-18 s).
    # date +%s counts whole seconds: + 1 makes it at least ANNOUNCE_LISTEN_S.
    parts = [f"( if [ $away -ge {ANNOUNCE_AT_ONCE_S} ]; then end=$(( $(date +%s) + {ANNOUNCE_LISTEN_S + 1} )); "
             f"while [ $(date +%s) -lt $end ]; do "
             f"{listen} 2>/dev/null | grep -qw remote-host={t.remote_addr} && exit 0; sleep 0.2; done; fi; "
             f"{shown(swanctl_initiate_child(t.name, 5))} ) >/dev/null 2>&1 &" for t in passive]
    # A missing or garbled stamp counts as a long absence (the careful path).
    return (f"s=$(cat {stopped_stamp} 2>/dev/null); case x$s in x|x*[!0-9]*) s=0;; esac; "
            f"away=$(( $(date +%s) - s )); " + " ".join(parts) + " wait")


def restart_strongswan_unit() -> Argv:
    """On a VM: charon killed as a crash would (no DELETEs to the peers), then started by systemd."""
    return sh("systemctl kill -s SIGKILL strongswan.service; systemctl restart strongswan.service")


# -- iptables -----------------------------------------------------------------------------------
def iptables_restore() -> Argv:
    """Replace the tables named in the rules read from stdin (kube-proxy's way)."""
    return ["iptables-restore", "-w"]


def iptables_list(chain: str, table: str = "filter") -> Argv:
    """The rules of one chain, as iptables-save would print them (`-P` policy line first)."""
    return ["iptables", "-w", "-t", table, "-S", chain] if table != "filter" else ["iptables", "-w", "-S", chain]


def iptables_delete(chain: str, rule: Sequence[str]) -> Argv:
    """Delete one rule from `chain` (the first that matches)."""
    return ["iptables", "-w", "-D", chain, *rule]


def iptables_ensure(chain: str, rule: Sequence[str]) -> Argv:
    """Append `rule` to `chain` unless it is there already (idempotent)."""
    r = shlex.join([chain, *rule])
    return sh(f"iptables -w -C {r} 2>/dev/null || iptables -w -A {r}")


KUBE_FORWARD_RULE = ("-m", "mark", "--mark", "0x4000/0x4000", "-j", "ACCEPT")  # kube-proxy's KUBE-FORWARD


# -- ip -----------------------------------------------------------------------------------------
def ip_link_set(dev: str, up: bool) -> Argv:
    return ["ip", "link", "set", dev, "up" if up else "down"]


def ip_route_show(*selector: str) -> Argv:
    return ["ip", "route", "show", *selector]


# The node's private interface, found by its address ($1): eth1, enp0s8, ... depend on the box.
FIND_UNDERLAY_IF = ("ip -o -4 addr show | awk -v ip=\"$1\" "
                    "'{ split($4, a, \"/\"); if (a[1] == ip) { print $2; exit } }'")


UNDERLAY_ENV = "/etc/ipsec-lab/underlay.env"  # a VM's underlay interface, as provisioning found it


def underlay_link_set(address: str, up: bool) -> Argv:
    """Set a VM's underlay interface up or down: the one provisioning recorded (a link set down may
    lose its address, and then no interface holds it), else the one that holds `address`."""
    return ["sh", "-c", f'dev=$(. {UNDERLAY_ENV} 2>/dev/null && echo "$UNDERLAY_IF"); [ -n "$dev" ] || dev=$({FIND_UNDERLAY_IF}); '
                        '[ -n "$dev" ] || { echo "no interface holds $1" >&2; exit 1; }; '
                        f'ip link set "$dev" {"up" if up else "down"}', "underlay", address]


# -- capture ----------------------------------------------------------------------------------
def ip_links() -> Argv:
    """Every interface of the node with its details (`ip -o -d link show`: one line each; xfrm if_id ...)."""
    return ["ip", "-o", "-d", "link", "show"]


def ip_addresses() -> Argv:
    """Every IPv4 address of the node, one line each (`ip -o -4 addr show`)."""
    return ["ip", "-o", "-4", "addr", "show"]


def tcpdump(iface: str, bpf: str = "", *, count: int | None = None, write: str | None = None) -> Argv:
    """tcpdump's own decoding, a line per packet as it arrives (-l); with `write`, the packets also go
    to that pcap file as they arrive (-U --print -w)."""
    argv = ["tcpdump", "-n", "-l", "--immediate-mode", "-i", iface]
    if count:
        argv += ["-c", str(count)]
    if write:
        argv += ["-U", "--print", "-w", write]
    return [*argv, *([bpf] if bpf else [])]


def tcpdump_compile(iface: str, bpf: str) -> Argv:
    """Compile a BPF filter for `iface` without capturing (-d): fails with tcpdump's own error line."""
    return ["tcpdump", "-d", "-i", iface, bpf]


# -- probes -------------------------------------------------------------------------------------
def ping(ip: str, *, count: int = 1, wait: float = 1.0, interval: float | None = None, size: int | None = None,
         dont_fragment: bool = False, timestamps: bool = False, deadline: int | None = None, quiet: bool = True,
         pattern: bytes | None = None) -> Argv:
    """ping from a node. `timestamps` (-D) prefixes each reply with its time (tui.lab.probes.ping_gap);
    `pattern` fills the payload (-p), a marker a capture can look for."""
    argv = ["ping", "-n"]
    if quiet:
        argv.append("-q")
    if timestamps:
        argv.append("-D")
    if interval is not None:
        argv += ["-i", str(interval)]
    if count:
        argv += ["-c", str(count)]
    argv += ["-W", str(wait)]
    if deadline is not None:
        argv += ["-w", str(deadline)]
    if size is not None:
        argv += ["-s", str(size)]
    if dont_fragment:
        argv += ["-M", "do"]
    if pattern is not None:
        argv += ["-p", pattern.hex()]
    return [*argv, ip]


def ping_fan_out(targets: Sequence[tuple[str, str]], wait: float = 1.0) -> Argv:
    """One ping to each (label, ip) at once, from one node; prints `LABEL up` or `LABEL down` per
    target (tui.lab.probes.parse_fan_out reads it)."""
    lines = [f"(ping -n -q -c 1 -W {wait} {shlex.quote(ip)} >/dev/null 2>&1 && echo {shlex.quote(label)} up "
             f"|| echo {shlex.quote(label)} down) &" for label, ip in targets]
    return sh("\n".join([*lines, "wait"]))


# What the boot-order check reads on a node: cni0's address and state, when the boot script
# finished (seconds since boot), and when charon started (seconds since boot).
BOOT_ORDER_PROBE = (
    "hz=$(getconf CLK_TCK); "
    "echo cni0 $(ip -o -4 addr show dev cni0 2>/dev/null | awk '{print $4}') $(cat /sys/class/net/cni0/operstate 2>/dev/null); "
    "echo boot $(cat /run/ipsec-lab-boot.done 2>/dev/null || echo none); "
    "pid=$(cat /run/charon.pid 2>/dev/null); "
    "echo charon $(awk -v hz=$hz '{s=$0; sub(/.*\\) /, \"\", s); split(s, f, \" \"); printf \"%.2f\", f[20]/hz}' /proc/$pid/stat 2>/dev/null || echo none)"
)


def boot_order_probe() -> Argv:
    """Prints `cni0 ADDR STATE`, `boot SECONDS|none` and `charon SECONDS|none`, one per line."""
    return sh(BOOT_ORDER_PROBE)


def read_file_from(path: str, offset: int, limit: int = 1 << 20) -> Argv:
    """Prints the file's size on the first line, then up to `limit` of its bytes from `offset`
    (from 0 when the file is now shorter than `offset`: it was started anew)."""
    return ["sh", "-c", 's=$(stat -c %s "$1" 2>/dev/null || echo 0); echo "$s"; o=$2; [ "$s" -lt "$o" ] && o=0; '
                        'tail -c +$((o + 1)) "$1" 2>/dev/null | head -c "$3"', "read", path, str(offset), str(limit)]


def node_probe(pods_list: Sequence[str] | None = None) -> Argv:
    """A VM node's status in one round trip, as "@@name" sections (parsers.sections): the IPAM
    files host-local holds, charon's age in seconds (empty: not running), its SAs (raw), and,
    where the node keeps its own pods, their list (`pods_list` prints it as JSON)."""
    parts = [
        "echo @@ipam; ls /run/cni/networks/ipsec-lab 2>/dev/null",
        'echo @@charon; p=$(cat /run/charon.pid 2>/dev/null) && ps -o etimes= -p "$p" 2>/dev/null',
        f"echo @@sas; {shlex.join(swanctl_list_sas(raw=True))} 2>/dev/null",
        # How each peer authenticates, and the certificates charon holds (parsers.parse_swanctl_auth)
        "echo @@conns; swanctl --list-conns --raw 2>/dev/null",
        "echo @@certs; swanctl --list-certs --raw --type x509 2>/dev/null",
    ]
    if pods_list:
        parts.append(f"echo @@pods; {shlex.join(pods_list)} 2>/dev/null")
    return sh("; ".join(parts) + "; true")


def sh(script: str, *args: str) -> Argv:
    """A shell script as an argv ($1... are `args`)."""
    return ["sh", "-c", script, *(["sh", *args] if args else [])]
