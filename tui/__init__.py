"""ipsec-lab: a live lab of a Kubernetes-style IPsec pod network."""

__version__ = "0.1.0"
