#!/usr/bin/env bash
# Step 2 of 4 on every node (the seed's cni-provision.sh): the pod network and the IPsec mesh,
# from the files ipsec-lab rendered for this node from the same templates as the netns lab.
#   - the CNI config (host-local, dataDir under /run), the guard unit (the cleartext guard route,
#     before any network comes up), the boot unit (cni0, cleartext guard, XFRM interfaces with
#     cni0's address, FORWARD rules) ordered before strongSwan (and kubelet in the kubeadm mode)
#   - strongSwan as charon under the starter (strongswan.service runs `ipsec start`: charon writes
#     /run/charon.pid, which `ipsec down` and the boot-order check read), configured by swanctl,
#     route-based with XFRM interfaces (if_id)
# Both node modes: the offline box ("none") already holds every package, so nothing is fetched.
# It runs before kubeadm (the seed ran it last): kubelet reaches the API server over the mesh.
# Idempotent: files are installed again, units restarted, nothing is appended twice.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
echo "cni-provision: ${NODE_NAME} ${NODE_IP} (node mode ${NODE_MODE}), pods ${POD_CIDR} on cni0 ${CNI0_IP}"

# strongswan-charon (charon, which writes /run/charon.pid) and strongswan-starter (`ipsec`, the
# starter); tcpdump for the capture checks. Installed only where missing (offline: none are).
packages=(strongswan-charon strongswan-starter strongswan-swanctl libstrongswan-standard-plugins
          iproute2 iptables tcpdump)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$NODE_MODE" != kubeadm ]; then
        echo "cni-provision: the box lacks ${missing[*]}; rebuild it (ipsec-lab box build)" >&2
        exit 1
    fi
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"
fi
# The packaged starter unit would run a second starter beside strongswan.service (same command).
systemctl disable --now strongswan-starter.service >/dev/null 2>&1 || true
systemctl mask strongswan-starter.service >/dev/null 2>&1
for p in bridge host-local loopback; do
    if [ "$NODE_MODE" != kubeadm ] && [ ! -x "${CNI_BIN_DIR}/${p}" ]; then  # kubeadm: kube-baseline checked
        echo "cni-provision: no CNI plugin ${CNI_BIN_DIR}/${p}" >&2
        exit 1
    fi
done

# AppArmor (where it is enforced): Debian's profile for /usr/lib/ipsec/charon allows /run/charon.*
# but not the log file strongswan.conf names; its local include is the place to add it.
if [ -f /etc/apparmor.d/usr.lib.ipsec.charon ]; then
    printf '%s\n' '# ipsec-lab: charon filelog (strongswan.conf)' '/var/log/charon.log rw,' \
        > /etc/apparmor.d/local/usr.lib.ipsec.charon
    if command -v apparmor_parser >/dev/null && [ -d /sys/kernel/security/apparmor ]; then
        apparmor_parser -r /etc/apparmor.d/usr.lib.ipsec.charon || true
    fi
fi

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
for _ in $(seq 1 50); do  # charon writes its pid file once it runs, then loads swanctl.conf
    [ -s /run/charon.pid ] && [ -S /run/charon.vici ] && break
    sleep 0.2
done
[ -s /run/charon.pid ] || { echo "cni-provision: charon did not start (no /run/charon.pid)" >&2; exit 1; }
if [ "$NODE_MODE" = none ]; then  # offline, the pods' server (podserver.py; nodepods.py restores pods at boot)
    systemctl enable ipsec-lab-pods.service >/dev/null 2>&1
    systemctl restart ipsec-lab-pods.service
fi
ip -br link show type xfrm
swanctl --list-conns | grep -E '^[a-z]' || true
echo "cni-provision: ${NODE_NAME} mesh configured, charon pid $(cat /run/charon.pid) (peers connect as they come up)"
