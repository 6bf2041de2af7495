#!/usr/bin/env bash
# Step 2 of 4 on every node (the seed's cni-provision.sh): the pod network and the IPsec mesh,
# from the files ipsec-lab rendered for this node from the same templates as the netns lab.
#   - the CNI config (host-local, dataDir under /run), the guard unit (the cleartext guard route,
#     before any network comes up), the boot unit (cni0, cleartext guard, XFRM interfaces,
#     FORWARD rules) ordered before strongSwan and kubelet
#   - strongSwan as charon-systemd managed by swanctl, route-based with XFRM interfaces (if_id),
#     ordered before kubelet
# It runs before kubeadm (the seed ran it last): kubelet reaches the API server over the mesh.
# Idempotent: files are installed again, units restarted, nothing is appended twice.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
echo "cni-provision: ${NODE_NAME} ${NODE_IP}, pods ${POD_CIDR} on cni0 ${CNI0_IP}"

# strongswan-starter brings the `ipsec` command (the seed's `ipsec down mesh-left` keeps working
# against charon-systemd through the stroke plugin); its own daemon must never run beside it.
systemctl mask strongswan-starter.service >/dev/null 2>&1
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
    charon-systemd strongswan-swanctl libstrongswan-standard-plugins strongswan-starter iproute2 iptables

# The private interface is the one holding this node's underlay address (eth1, enp0s8, ...
# depending on box and provider); the boot unit reads it from underlay.env.
underlay_if=$(ip -o -4 addr show | awk -v ip="$NODE_IP" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')
if [ -z "$underlay_if" ]; then
    echo "cni-provision: no interface holds ${NODE_IP}; is the private network up?" >&2
    exit 1
fi
install -d -m 0755 /etc/ipsec-lab
printf 'UNDERLAY_IF=%s\n' "$underlay_if" > /etc/ipsec-lab/underlay.env

# Every rendered file to where it belongs (manifest.tsv: role, mode, destination).
while IFS=$'\t' read -r role mode dest; do
    install -D -m "$mode" "$FILES/$role" "$dest"
    echo "cni-provision: installed ${dest}"
done < "$FILES/manifest.tsv"

systemctl daemon-reload
systemctl enable ipsec-lab-guard.service ipsec-lab-boot.service strongswan.service >/dev/null 2>&1
systemctl restart ipsec-lab-guard.service ipsec-lab-boot.service
systemctl restart strongswan.service
ip -br link show type xfrm
swanctl --list-conns | grep -E '^[a-z]' || true
echo "cni-provision: ${NODE_NAME} mesh configured (peers connect as they come up)"
