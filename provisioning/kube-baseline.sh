#!/usr/bin/env bash
# Step 1 of 4 on every node (the seed's kube-baseline.sh, brought up to date):
#   - both modes: br_netfilter and IP forwarding on, the XFRM interface module loaded
#   - kubeadm mode only (NODE_MODE in node.env; the offline "none" mode has no Kubernetes):
#     - swap off
#     - containerd ${CONTAINERD_VERSION} and runc ${RUNC_VERSION} from their release builds (Debian 12's
#       containerd is 1.6, which no supported Kubernetes runs with), each checked against its
#       published sha256, with the systemd cgroup driver (the rendered containerd.toml)
#     - kubelet, kubeadm, kubectl, kubernetes-cni (the CNI plugins, in /opt/cni/bin) and cri-tools
#       (crictl: kubeadm >= 1.32 no longer pulls it in) from pkgs.k8s.io with the minor version
#       pinned (KUBE_MINOR), held so that `apt-get upgrade` never moves them
#     - the kubernetes-bootcamp image, pulled from the first registry in BOOTCAMP_IMAGES that serves it
# Idempotent: `vagrant provision` runs it again without changing a node that is already set up.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
echo "kube-baseline: ${NODE_NAME}, node mode ${NODE_MODE}"

# -- kernel modules and sysctls (both modes) --------------------------------------------------------
printf '%s\n' overlay br_netfilter xfrm_interface > /etc/modules-load.d/ipsec-lab.conf
modprobe overlay
modprobe br_netfilter
modprobe xfrm_interface
printf '%s\n' 'net.bridge.bridge-nf-call-iptables = 1' 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-ipsec-lab.conf
sysctl -q --system >/dev/null

if [ "$NODE_MODE" != kubeadm ]; then
    echo "kube-baseline: ${NODE_NAME} runs no Kubernetes (node mode ${NODE_MODE}); nothing to install"
    exit 0
fi
echo "kube-baseline: Kubernetes ${KUBE_MINOR}, containerd ${CONTAINERD_VERSION}, runc ${RUNC_VERSION}"

apt_install() {
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
}

# -- swap off, now and on every boot (kubelet refuses to start with swap on) ---------------------
swapoff -a
sed -ri '/^[^#].*[[:space:]]swap[[:space:]]/s/^/# ipsec-lab: swap off: /' /etc/fstab

# -- packages ------------------------------------------------------------------------------------
apt-get update -q
# tcpdump: the capture checks run it on every node's underlay.
apt_install ca-certificates curl gpg iptables conntrack socat ethtool tcpdump

# -- containerd and runc: release builds, verified against their published sha256 -----------------
fetch_verified() { # URL SHA256-URL DEST: download, check, then move into place
    local tmp
    tmp=$(mktemp -d)
    curl -fsSL -o "$tmp/file" "$1"
    curl -fsSL -o "$tmp/sum" "$2"
    if [ "$(awk '{print $1; exit}' "$tmp/sum")" != "$(sha256sum "$tmp/file" | awk '{print $1}')" ]; then
        echo "kube-baseline: $1 does not match its sha256 ($2)" >&2
        rm -rf "$tmp"
        exit 1
    fi
    mv "$tmp/file" "$3"
    rm -rf "$tmp"
}
gh=https://github.com
if ! /usr/local/bin/containerd --version 2>/dev/null | grep -q " v${CONTAINERD_VERSION} "; then
    tarball="containerd-${CONTAINERD_VERSION}-linux-amd64.tar.gz"
    url="${gh}/containerd/containerd/releases/download/v${CONTAINERD_VERSION}/${tarball}"
    fetch_verified "$url" "${url}.sha256sum" "/tmp/${tarball}"
    tar -C /usr/local -xzf "/tmp/${tarball}"
    rm -f "/tmp/${tarball}"
    install -d -m 0755 /usr/local/lib/systemd/system
    curl -fsSL -o /usr/local/lib/systemd/system/containerd.service \
        "https://raw.githubusercontent.com/containerd/containerd/v${CONTAINERD_VERSION}/containerd.service"
fi
if ! /usr/local/sbin/runc --version 2>/dev/null | grep -q "^runc version ${RUNC_VERSION}\$"; then
    url="${gh}/opencontainers/runc/releases/download/v${RUNC_VERSION}"
    sums=$(mktemp)
    curl -fsSL -o "$sums" "${url}/runc.sha256sum"
    grep ' \*\?runc.amd64$' "$sums" > "${sums}.amd64"
    fetch_verified "${url}/runc.amd64" "file://${sums}.amd64" /tmp/runc.amd64
    install -m 0755 /tmp/runc.amd64 /usr/local/sbin/runc
    rm -f /tmp/runc.amd64 "$sums" "${sums}.amd64"
fi

# -- kubelet, kubeadm, kubectl, kubernetes-cni, cri-tools from pkgs.k8s.io, pinned minor ----------
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
k8s_packages=(kubelet kubeadm kubectl kubernetes-cni cri-tools)
apt-mark unhold "${k8s_packages[@]}" >/dev/null 2>&1 || true
apt_install "${k8s_packages[@]}"
apt-mark hold "${k8s_packages[@]}" >/dev/null
systemctl enable kubelet.service >/dev/null 2>&1
for plugin in bridge host-local loopback; do
    [ -x "${CNI_BIN_DIR}/${plugin}" ] || { echo "kube-baseline: no ${CNI_BIN_DIR}/${plugin} (kubernetes-cni)" >&2; exit 1; }
done

# -- containerd: the rendered config (systemd cgroup driver, CNI_BIN_DIR), kubeadm's pause ---------
install -d -m 0755 /etc/containerd /etc/containerd/conf.d
changed=""
cmp -s "$FILES/containerd.toml" /etc/containerd/config.toml || changed=yes
install -m 0644 "$FILES/containerd.toml" /etc/containerd/config.toml
pause=$(kubeadm config images list --kubernetes-version "$(kubeadm version -o short)" 2>/dev/null | grep '/pause:' || true)
if [ -n "$pause" ]; then
    new=$(mktemp)
    printf '%s\n' 'version = 3' "[plugins.'io.containerd.cri.v1.images'.pinned_images]" "  sandbox = \"${pause}\"" > "$new"
    cmp -s "$new" /etc/containerd/conf.d/10-ipsec-lab-sandbox.toml || changed=yes
    install -m 0644 "$new" /etc/containerd/conf.d/10-ipsec-lab-sandbox.toml
    rm -f "$new"
fi
systemctl daemon-reload
systemctl enable containerd.service >/dev/null 2>&1
if [ -n "$changed" ] || ! systemctl is-active --quiet containerd.service; then
    systemctl restart containerd.service
fi
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
echo "kube-baseline: ${NODE_NAME} ready (containerd $(/usr/local/bin/containerd --version | cut -d' ' -f3)," \
    "kubelet $(kubelet --version | cut -d' ' -f2), image ${chosen})"
