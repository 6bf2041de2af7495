#!/usr/bin/env bash
# Step 1 of 4 on every node (the seed's kube-baseline.sh, brought up to date):
#   - swap off, br_netfilter and IP forwarding on, the XFRM interface module loaded
#   - containerd (Debian's package) with the systemd cgroup driver
#   - kubelet, kubeadm and kubectl from pkgs.k8s.io with the minor version pinned (KUBE_MINOR),
#     held so that `apt-get upgrade` never moves them
#   - the kubernetes-bootcamp image, pulled from the first registry in BOOTCAMP_IMAGES that serves it
# Idempotent: `vagrant provision` runs it again without changing a node that is already set up.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
echo "kube-baseline: ${NODE_NAME}, Kubernetes ${KUBE_MINOR}"

apt_install() {
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
}

# -- swap off, now and on every boot (kubelet refuses to start with swap on) ---------------------
swapoff -a
sed -ri '/^[^#].*[[:space:]]swap[[:space:]]/s/^/# ipsec-lab: swap off: /' /etc/fstab

# -- kernel modules and sysctls ---------------------------------------------------------------------
printf '%s\n' overlay br_netfilter xfrm_interface > /etc/modules-load.d/ipsec-lab.conf
modprobe overlay
modprobe br_netfilter
modprobe xfrm_interface
printf '%s\n' 'net.bridge.bridge-nf-call-iptables = 1' 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-ipsec-lab.conf
sysctl -q --system >/dev/null

# -- packages ------------------------------------------------------------------------------------
apt-get update -q
apt_install ca-certificates curl gpg iptables conntrack socat ethtool containerd

key=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
list=/etc/apt/sources.list.d/kubernetes.list
repo="https://pkgs.k8s.io/core:/stable:/${KUBE_MINOR}/deb/"
want="deb [signed-by=${key}] ${repo} /"
if [ ! -s "$key" ] || [ "$(cat "$list" 2>/dev/null)" != "$want" ]; then
    install -d -m 0755 /etc/apt/keyrings
    curl -fsSL "${repo}Release.key" | gpg --dearmor --yes -o "$key"
    echo "$want" > "$list"
    apt-get update -q
fi
apt-mark unhold kubelet kubeadm kubectl >/dev/null 2>&1 || true
apt_install kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl >/dev/null
systemctl enable kubelet.service >/dev/null 2>&1

# -- containerd: systemd cgroup driver, the CNI plugins kubernetes-cni installs, kubeadm's pause ----
pause=$(kubeadm config images list --kubernetes-version "$(kubeadm version -o short)" 2>/dev/null | grep '/pause:' || true)
new=$(mktemp)
containerd config default > "$new"
sed -i -e 's/SystemdCgroup = false/SystemdCgroup = true/' \
       -e 's#^\([[:space:]]*\)bin_dir = .*#\1bin_dir = "/opt/cni/bin"#' \
       -e 's#^\([[:space:]]*\)conf_dir = .*#\1conf_dir = "/etc/cni/net.d"#' "$new"
if [ -n "$pause" ]; then
    sed -i "s#^\([[:space:]]*\)sandbox_image = .*#\1sandbox_image = \"${pause}\"#" "$new"
fi
grep -q 'SystemdCgroup = true' "$new" || { echo "kube-baseline: cannot set containerd's systemd cgroup driver" >&2; exit 1; }
install -d -m 0755 /etc/containerd
if ! cmp -s "$new" /etc/containerd/config.toml; then
    install -m 0644 "$new" /etc/containerd/config.toml
    systemctl restart containerd.service
fi
rm -f "$new"
systemctl enable containerd.service >/dev/null 2>&1
printf '%s\n' 'runtime-endpoint: unix:///run/containerd/containerd.sock' \
    'image-endpoint: unix:///run/containerd/containerd.sock' > /etc/crictl.yaml

# -- the bootcamp image: the first registry that still serves it; the seed's gcr.io name last -----
read -ra images <<< "$BOOTCAMP_IMAGES"
install -d -m 0755 /etc/ipsec-lab
chosen=""
for image in "${images[@]}"; do
    if crictl pull "$image" >/dev/null; then
        chosen=$image
        break
    fi
    echo "kube-baseline: ${image} could not be pulled, trying the next registry" >&2
done
if [ -z "$chosen" ]; then
    echo "kube-baseline: no registry served the bootcamp image (${BOOTCAMP_IMAGES})" >&2
    exit 1
fi
echo "$chosen" > /etc/ipsec-lab/bootcamp-image
echo "kube-baseline: ${NODE_NAME} ready (containerd, kubelet $(kubelet --version | cut -d' ' -f2), image ${chosen})"
