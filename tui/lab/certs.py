"""X.509 authentication (`up --auth x509`): a lab CA and one certificate per node, made with
strongSwan's own `pki` (Debian package strongswan-pki), Ed25519 keys.

Everything is made in memory, before anything of the lab exists: the node keys go from `pki`'s
stdout into the node's rendered files (mode 0600, swanctl's private/ directory: the node's state
directory on netns, /etc/swanctl on a VM) and nowhere else. The CA key lives in a private
temporary directory only while the node certificates are issued, then it is gone: nobody can
issue another certificate of this lab's CA afterwards.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import LabError, UsageError
from .model import LabSpec

KEY_TYPE = "ed25519"
CA_FILE = "ipsec-lab-ca.crt"  # in swanctl's x509ca/
LIFETIME_DAYS = 3650
PKI_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeCredentials:
    """What one node's charon authenticates with: its certificate and key, and the lab CA."""

    node: str
    cert_pem: str
    key_pem: str
    ca_pem: str

    @property
    def cert_file(self) -> str:
        return f"{self.node}.crt"

    @property
    def key_file(self) -> str:
        return f"{self.node}.key"


def ca_dn(lab: str) -> str:
    return f"O=ipsec-lab, OU={lab}, CN=ipsec-lab {lab} CA"


def node_dn(lab: str, node: str) -> str:
    return f"O=ipsec-lab, OU={lab}, CN={node}"


def _pki(args: Sequence[str], *, input: bytes | None = None) -> bytes:
    exe = shutil.which("pki")
    if exe is None:
        raise UsageError("strongSwan's pki is missing: install the Debian package strongswan-pki "
                         "(`ipsec-lab doctor --install`, or scripts/setup.sh)")
    try:
        done = subprocess.run([exe, *args], input=input, capture_output=True, timeout=PKI_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"pki {args[0]} did not finish in {PKI_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        raise LabError(f"pki {' '.join(args[:1])} failed: {why[-1] if why else f'exit {done.returncode}'}")
    return done.stdout


def new_key() -> bytes:
    """A new private key (PEM, PKCS#8), on stdout only."""
    return _pki(["--gen", "--type", KEY_TYPE, "--outform", "pem"])


def self_signed_ca(key_file: Path, dn: str) -> bytes:
    return _pki(["--self", "--ca", "--in", str(key_file), "--type", KEY_TYPE, "--dn", dn,
                 "--lifetime", str(LIFETIME_DAYS), "--outform", "pem"])


def issue(ca_cert: Path, ca_key: Path, key_pem: bytes, dn: str, san: str) -> bytes:
    """A certificate for `key_pem`'s public key, signed by the CA; the key is read from stdin."""
    pub = _pki(["--pub", "--type", "priv", "--outform", "der"], input=key_pem)
    return _pki(["--issue", "--cacert", str(ca_cert), "--cakey", str(ca_key), "--type", "pub",
                 "--dn", dn, "--san", san, "--lifetime", str(LIFETIME_DAYS), "--outform", "pem"], input=pub)


def make_ca(dn: str, nodes: Sequence[str], lab: str) -> dict[str, NodeCredentials]:
    """A CA with subject `dn` and a certificate per node (CN and subjectAltName: the node's name)."""
    with tempfile.TemporaryDirectory(prefix="ipsec-lab-ca-") as tmp:  # mode 0700
        d = Path(tmp)
        ca_key, ca_cert = d / "ca.key", d / "ca.crt"
        ca_key.touch(mode=0o600)
        ca_key.write_bytes(new_key())
        ca_cert.write_bytes(self_signed_ca(ca_key, dn))
        ca_pem = ca_cert.read_text()
        out = {}
        for node in nodes:
            key = new_key()
            cert = issue(ca_cert, ca_key, key, node_dn(lab, node), node)
            out[node] = NodeCredentials(node, cert.decode(), key.decode(), ca_pem)
        return out


def lab_credentials(spec: LabSpec) -> dict[str, NodeCredentials]:
    """The lab CA and every node's certificate and key, in memory."""
    return make_ca(ca_dn(spec.name), [n.name for n in spec.node_list()], spec.name)
