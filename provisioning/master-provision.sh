#!/usr/bin/env bash
# Step 3 of 4, on the control plane only (the seed's master-provision.sh):
#   kubeadm init from the rendered kubeadm.yaml with the cluster CA ipsec-lab made (so the
#   joins can pin it), kubectl config for root and vagrant, the control-plane taint removed.
# Idempotent: a node that already has /etc/kubernetes/admin.conf is not initialised again.
set -euo pipefail
FILES=/tmp/ipsec-lab
# shellcheck source=/dev/null
. "$FILES/node.env"
if [ "$NODE_MODE" != kubeadm ]; then
    echo "master-provision: ${NODE_NAME} runs no Kubernetes (node mode ${NODE_MODE}); nothing to do"
    exit 0
fi
if [ "$NODE_NAME" != "$CONTROL_PLANE" ]; then
    echo "master-provision: ${NODE_NAME} is not the control plane (${CONTROL_PLANE}); nothing to do"
    exit 0
fi

if [ ! -f /etc/kubernetes/admin.conf ]; then
    install -d -m 0755 /etc/kubernetes/pki
    install -m 0644 "$FILES/ca.crt" /etc/kubernetes/pki/ca.crt
    install -m 0600 "$FILES/ca.key" /etc/kubernetes/pki/ca.key
    kubeadm init --config /etc/ipsec-lab/kubeadm.yaml
else
    echo "master-provision: ${NODE_NAME} is already initialised"
fi

# kubectl config for root and for vagrant, as the seed did
for home in /root /home/vagrant; do
    [ -d "$home" ] || continue
    install -d -m 0700 "$home/.kube"
    install -m 0600 /etc/kubernetes/admin.conf "$home/.kube/config"
done
if id vagrant >/dev/null 2>&1; then
    chown -R vagrant:vagrant /home/vagrant/.kube
fi

export KUBECONFIG=/etc/kubernetes/admin.conf
# The seed: kubectl taint nodes kube-node1 node-role.kubernetes.io/master:NoSchedule-
# (kubeadm.yaml never sets the taint; this removes it should an older config have set it)
kubectl taint nodes "$NODE_NAME" node-role.kubernetes.io/control-plane:NoSchedule- >/dev/null 2>&1 || true
kubectl wait --for=condition=Ready "node/${NODE_NAME}" --timeout=300s
kubectl get nodes -o wide
