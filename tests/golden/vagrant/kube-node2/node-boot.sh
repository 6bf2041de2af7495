#!/bin/sh
# Boot script for kube-node2, rendered by ipsec-lab. Runs before strongSwan and the pods
# (the seed's start order) and again on every boot; every step is idempotent.
set -eu

# 1. cni0 with its gateway address before strongSwan starts, so charon sees the address its
#    traffic selectors and routes use (the seed's start-order fix).
ip link show cni0 >/dev/null 2>&1 || ip link add cni0 type bridge
ip link set cni0 mtu 1400
ip addr replace 10.128.2.1/24 dev cni0
ip link set cni0 up
sysctl -qw net.ipv4.ip_forward=1

# 2. The cleartext guard: with a tunnel down, pod traffic must never fall back to another route
#    and leave unencrypted. IPsec routes (table 220, or the XFRM interfaces) are more specific.
ip route replace unreachable 10.128.0.0/16

# Route-based IPsec: one XFRM interface per peer; strongSwan's SAs carry the same if_id.
ip link show ipsec-n1 >/dev/null 2>&1 || ip link add ipsec-n1 type xfrm dev "$UNDERLAY_IF" if_id 1
ip link set ipsec-n1 mtu 1400 up
ip addr replace 10.128.2.1/32 dev ipsec-n1
ip route replace 10.128.1.0/24 dev ipsec-n1 src 10.128.2.1
ip link show ipsec-n3 >/dev/null 2>&1 || ip link add ipsec-n3 type xfrm dev "$UNDERLAY_IF" if_id 3
ip link set ipsec-n3 mtu 1400 up
ip addr replace 10.128.2.1/32 dev ipsec-n3
ip route replace 10.128.3.0/24 dev ipsec-n3 src 10.128.2.1

# 3. FORWARD policy DROP, as on a Kubernetes node, with the seed's explicit accepts for pod
#    traffic in and out of cni0 (which covers traffic to and from the tunnels).
iptables -w -P FORWARD DROP
iptables -w -C FORWARD -i cni0 -m comment --comment "ipsec-lab: pods out" -j ACCEPT 2>/dev/null \
  || iptables -w -A FORWARD -i cni0 -m comment --comment "ipsec-lab: pods out" -j ACCEPT
iptables -w -C FORWARD -o cni0 -m comment --comment "ipsec-lab: pods in" -j ACCEPT 2>/dev/null \
  || iptables -w -A FORWARD -o cni0 -m comment --comment "ipsec-lab: pods in" -j ACCEPT

# 4. A boot stamp (seconds since the kernel booted, the clock process start times use), so the
#    boot-order check can prove cni0 and the firewall were ready before the IPsec daemon started.
cut -d' ' -f1 /proc/uptime > /run/ipsec-lab-boot.done
