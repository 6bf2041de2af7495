#!/usr/bin/env bash
# Step 4 of 4, on every node but the control plane (the seed's node-provision.sh):
#   wait until the API server answers on kube-node1's cni0 address (through this node's IPsec
#   tunnel to kube-node1), then kubeadm join with the token and the pinned CA hash.
# Idempotent: a node that already has /etc/kubernetes/kubelet.conf does not join again.
set -euo pipefail
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
if [ "$NODE_MODE" != kubeadm ]; then
    echo "node-provision: ${NODE_NAME} runs no Kubernetes (node mode ${NODE_MODE}); nothing to do"
    exit 0
fi
if [ "$NODE_NAME" = "$CONTROL_PLANE" ]; then
    echo "node-provision: ${NODE_NAME} is the control plane; nothing to join"
    exit 0
fi
if [ -f /etc/kubernetes/kubelet.conf ]; then
    echo "node-provision: ${NODE_NAME} has already joined"
    exit 0
fi

# kube-node1 may still be provisioning (libvirt brings the VMs up in parallel): wait up to 15 min.
api="https://${API_ADDRESS}:6443/readyz"
for attempt in $(seq 1 180); do
    if curl -ks -m 3 -o /dev/null "$api"; then
        break
    fi
    if [ "$attempt" -eq 180 ]; then
        echo "node-provision: the API server at ${api} did not answer through the IPsec mesh" >&2
        swanctl --list-sas >&2 || true
        exit 1
    fi
    sleep 5
done
kubeadm join --config /etc/ipsec-lab/kubeadm.yaml
echo "node-provision: ${NODE_NAME} joined"
