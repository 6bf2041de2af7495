"""`up --auth x509`: a lab CA made with strongSwan's pki, one certificate per node, used by swanctl.

Without root: bad input, the rendered files (goldens), pki's certificates, the SA detail's
authentication from a recorded vici exchange. On a real netns lab: the mesh comes up with
certificates, keys stay 0600 in the nodes' own files, `status --json` names each peer's
certificate, and a node holding a certificate of another CA is refused for good.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tui.lab import certs, render
from tui.lab.errors import UsageError
from tui.lab.model import LabSpec
from tui.lab.vici_status import auth_details

from . import goldens
from .conftest import ROOT, cli, lab_namespaces, unique_lab, wait_for

FIXTURE = ROOT / "tests" / "fixtures" / "vici-auth-x509.json"
needs_pki = pytest.mark.skipif(shutil.which("pki") is None, reason="strongSwan's pki (strongswan-pki) is missing")


# -- no root ----------------------------------------------------------------------------------
def test_bad_auth_is_one_line_exit_3_and_creates_nothing():
    lab = unique_lab("xa")
    cp = cli("--lab", lab, "up", "--auth", "foo", timeout=30)
    assert cp.returncode == 3
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1 and "--auth" in lines[0] and "'foo'" in lines[0] and "x509" in lines[0], cp.stderr
    assert not Path(f"/run/ipsec-lab/{lab}").exists() and lab_namespaces(lab) == []
    for argv in (("--auth", "foo", "--run-checks"), ("--auth", "foo")):  # the check suite's lab, the TUI's
        cp = cli("--lab", lab, *argv, timeout=30)
        assert cp.returncode == 3 and len(cp.stderr.strip().splitlines()) == 1 and "'foo'" in cp.stderr, cp.stderr
    assert not Path(f"/run/ipsec-lab/{lab}").exists() and lab_namespaces(lab) == []
    with pytest.raises(UsageError, match="unknown authentication 'foo'; expected one of psk, x509"):
        LabSpec.build(lab, 3, auth="foo")


def test_psk_stays_the_default():
    spec = LabSpec.build("lab", 3)
    assert spec.auth == "psk" and LabSpec.from_dict({**spec.to_dict()} | {"auth": "psk"}) == spec
    old_state = {k: v for k, v in spec.to_dict().items() if k != "auth"}  # a lab saved before x509
    assert LabSpec.from_dict(old_state).auth == "psk"
    sw = render.render_node(spec, spec.node(1), datapath="kernel-xfrm", secrets=goldens.psks(spec))["swanctl.conf"].content
    assert "auth = psk" in sw and "pubkey" not in sw


def test_x509_files_match_goldens():
    """Where each credential goes, on both backends: swanctl.conf (auth = pubkey, certs, cacerts,
    id = node, remote id = peer), the CA and the node certificate 0644, the key 0600; a VM's
    manifest installs them in /etc/swanctl."""
    goldens.check(goldens.x509_nodes())
    spec = LabSpec.build("lab", 3, auth="x509")
    creds = goldens.fixed_credentials(spec)
    files = render.render_node(spec, spec.node(2), datapath="kernel-xfrm", secrets={}, credentials=creds)
    assert files["swanctl/private/kube-node2.key"].mode == 0o600
    assert files["swanctl/x509/kube-node2.crt"].mode == 0o644
    sw = files["swanctl.conf"].content
    assert sw.count("auth = pubkey") == 4 and sw.count("certs = kube-node2.crt") == 2
    assert sw.count("cacerts = ipsec-lab-ca.crt") == 2 and "secret =" not in sw
    vm = render.render_vm_node(spec, spec.node(2), secrets=goldens.psks(spec), kube=goldens.KUBE, credentials=creds)
    def auth_lines(text):
        return [ln for ln in text.splitlines() if ln.strip().startswith(("auth =", "id =", "certs =", "cacerts ="))]
    assert auth_lines(vm["swanctl.conf"].content) == auth_lines(sw) and len(auth_lines(sw)) == 12
    assert render.vm_destination("swanctl/private/kube-node2.key") == "/etc/swanctl/private/kube-node2.key"
    # Only the node's own key: no other node's key is in its files.
    assert [r for r in vm if r.startswith("swanctl/private/")] == ["swanctl/private/kube-node2.key"]


def test_x509_without_credentials_is_refused():
    spec = LabSpec.build("lab", 2, auth="x509")
    with pytest.raises(Exception, match="kube-node1 has no certificate"):
        render.render_lab(spec, datapath="kernel-xfrm", secrets={})


@needs_pki
def test_pki_makes_a_ca_and_a_certificate_per_node(tmp_path):
    spec = LabSpec.build("certs", 3, auth="x509")
    creds = certs.lab_credentials(spec)
    assert sorted(creds) == ["kube-node1", "kube-node2", "kube-node3"]
    ca = tmp_path / "ca.crt"
    ca.write_text(creds["kube-node1"].ca_pem)
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    for node, c in creds.items():
        assert c.ca_pem == creds["kube-node1"].ca_pem  # one lab CA
        cert = x509.load_pem_x509_certificate(c.cert_pem.encode())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [node]
        assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
        assert "PRIVATE KEY" in c.key_pem
        crt = tmp_path / f"{node}.crt"
        crt.write_text(c.cert_pem)
        ok = subprocess.run(["pki", "--verify", "--in", str(crt), "--cacert", str(ca)], capture_output=True, text=True)
        assert ok.returncode == 0 and "certificate trusted" in ok.stdout, ok.stdout + ok.stderr
    # Another CA's certificate is not trusted by this one.
    other = certs.make_ca("O=elsewhere, CN=another CA", ["kube-node3"], "certs")["kube-node3"]
    crt = tmp_path / "other.crt"
    crt.write_text(other.cert_pem)
    bad = subprocess.run(["pki", "--verify", "--in", str(crt), "--cacert", str(ca)], capture_output=True, text=True)
    assert bad.returncode != 0
    # The CA key existed only in a temporary directory, now gone.
    assert not any(p.name.startswith("ipsec-lab-ca-") for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir())


def _decode(o):
    if isinstance(o, dict):
        return base64.b64decode(o["base64"]) if set(o) == {"base64"} else {k: _decode(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_decode(v) for v in o]
    return o


def test_sa_detail_names_the_auth_method_and_the_peer_certificate():
    """Recorded on kube-node1 of a real `up --auth x509` lab (vici list-conns, list-certs, list-sas)."""
    rec = json.loads(FIXTURE.read_text())
    got = auth_details(_decode(rec["conns"]), _decode(rec["certs"]), [tuple(s) for s in _decode(rec["sas"])])
    assert got == {
        "mesh-left": {"auth": "pubkey", "peer_cert": "O=ipsec-lab, OU=certsa, CN=kube-node2"},
        "mesh-right": {"auth": "pubkey", "peer_cert": "O=ipsec-lab, OU=certsa, CN=kube-node3"},
    }
    # No SA yet: the method is known (configured), the peer's certificate is not (none authenticated).
    assert auth_details(_decode(rec["conns"]), _decode(rec["certs"]), None)["mesh-left"] == {"auth": "pubkey"}


# -- real labs --------------------------------------------------------------------------------
@contextlib.contextmanager
def x509_lab(prefix: str):
    from tui.backends.netns import NetnsBackend

    name = unique_lab(prefix)
    backend = NetnsBackend(name)
    try:
        backend.up(LabSpec.build(name, 3, auth="x509"))
        yield backend
    finally:
        backend.down()
        assert lab_namespaces(name) == []


@pytest.mark.lab
@pytest.mark.timeout(180)
def test_x509_lab_comes_up_keys_stay_on_the_nodes_and_a_foreign_ca_is_refused():
    with x509_lab("xc") as backend:
        lab = backend.lab
        st = backend.status()
        assert st.all_tunnels_up
        for t in st.tunnels:
            assert t.detail["auth"] == "pubkey", t
            assert t.detail["peer_cert"] == f"O=ipsec-lab, OU={lab}, CN={t.peer}", t
        # `status --json` says the same.
        doc = json.loads(cli("--lab", lab, "status", "--json", check=True).stdout)
        assert {t["detail"]["peer_cert"] for t in doc["tunnels"]} == {
            f"O=ipsec-lab, OU={lab}, CN=kube-node{i}" for i in (1, 2, 3)}
        # Keys: 0600, each only in its own node's files, never in the lab's state.
        keys = sorted(backend.paths.dir.rglob("*.key"))
        assert [(k.parent.name, k.name) for k in keys] == [("private", f"kube-node{i}.key") for i in (1, 2, 3)]
        for k in keys:
            assert k.stat().st_mode & 0o777 == 0o600
            assert backend.paths.node_etc(k.stem) in k.parents
        assert "PRIVATE KEY" not in backend.paths.state_file.read_text()
        # The peer's certificate is what charon authenticated (its log says so).
        log1 = backend.paths.charon_log("kube-node1").read_text()
        assert "authentication of 'kube-node2' with ED25519 successful" in log1

        # kube-node3 gets a certificate and key of another CA (same name), and restarts charon.
        other = certs.make_ca("O=elsewhere, CN=another CA", ["kube-node3"], lab)["kube-node3"]
        etc = backend.paths.node_etc("kube-node3") / "swanctl"
        (etc / "x509" / "kube-node3.crt").write_text(other.cert_pem)
        (etc / "x509ca" / certs.CA_FILE).write_text(other.ca_pem)
        (etc / "private" / "kube-node3.key").write_text(other.key_pem)
        offsets = {n: backend.paths.charon_log(n).stat().st_size for n in ("kube-node1", "kube-node2")}
        backend.restart_ipsec("kube-node3")
        t0 = time.monotonic()

        def node3_ends(status):
            return [t for t in status.tunnels if "kube-node3" in (t.node, t.peer)]

        # Every tunnel with kube-node3 goes (the peers' old SAs end by dead peer detection) and
        # none comes back; kube-node1 <-> kube-node2 stays up throughout.
        wait_for(lambda: not any(t.up for t in node3_ends(backend.status())), timeout=30, interval=0.5,
                 what="every tunnel with kube-node3 down")
        down_after = time.monotonic() - t0
        ever_up = []
        end = time.monotonic() + 15
        while time.monotonic() < end:
            st = backend.status()
            ever_up += [f"{t.node}/{t.name}" for t in node3_ends(st) if t.up]
            assert all(t.up for t in st.tunnels if "kube-node3" not in (t.node, t.peer)), st.tunnels
            time.sleep(0.5)
        assert ever_up == [], f"a tunnel with a foreign-CA node came up: {ever_up}"
        # The peers logged why: kube-node3's certificate is of no CA they trust.
        for n, off in offsets.items():
            with open(backend.paths.charon_log(n), "rb") as f:
                f.seek(off)
                new = f.read().decode(errors="replace")
            # (Seen here: kube-node3's IKE_AUTH refused with `no issuer certificate found for ...
            # CN=kube-node3`, and kube-node3 answering theirs with AUTHENTICATION_FAILED.)
            failures = [ln for ln in new.splitlines() if "no issuer certificate found" in ln
                        or "no trusted ED25519 public key" in ln or "AUTHENTICATION_FAILED" in ln]
            assert failures, f"{n} logged no auth failure:\n{new[-2000:]}"
            print(n, failures[0])
        print(f"tunnels with the foreign-CA node down {down_after:.1f} s after its restart; none back in 15 s")


def test_vm_status_reads_the_same_detail_from_swanctl():
    """A VM node's probe (commands.node_probe) prints swanctl's raw listings; recorded on kube-node1
    of a real netns `--auth x509` lab, they give the same detail as vici does on netns."""
    from tui.lab import commands, parsers

    d = ROOT / "tests" / "fixtures" / "swanctl"
    conns, crts = parsers.parse_swanctl_auth((d / "list-conns-raw-x509.txt").read_text(),
                                             (d / "list-certs-raw-x509.txt").read_text())
    sas = parsers.parse_swanctl_raw((d / "list-sas-raw-x509.txt").read_text())
    assert auth_details(conns, crts, sas) == {
        "mesh-left": {"auth": "pubkey", "peer_cert": "O=ipsec-lab, OU=certsb, CN=kube-node2"},
        "mesh-right": {"auth": "pubkey", "peer_cert": "O=ipsec-lab, OU=certsb, CN=kube-node3"},
    }
    probe = " ".join(commands.node_probe())
    assert "@@conns; swanctl --list-conns --raw" in probe and "@@certs; swanctl --list-certs --raw --type x509" in probe
    # A PSK node (the default; recorded the same way on a lab brought up without --auth): the
    # method, and no certificate.
    conns, crts = parsers.parse_swanctl_auth((d / "list-conns-raw-psk.txt").read_text(),
                                             (d / "list-certs-raw-psk.txt").read_text())
    assert crts == [] and auth_details(conns, crts, sas) == {"mesh-left": {"auth": "psk"}, "mesh-right": {"auth": "psk"}}


def test_tunnels_screen_shows_the_auth_method_and_peer_certificate():
    """The TUI's SA detail (Tunnels screen), from the detail `status` gives; none shown where a
    backend reported none (the recorded FakeBackend statuses of the pilot tests)."""
    from tui.lab.status import TunnelStatus
    from tui.screens.tunnels import detail_text

    t = TunnelStatus("kube-node1", "mesh-left", "kube-node2", "ESTABLISHED", "INSTALLED",
                     detail={"auth": "pubkey", "peer_cert": "O=ipsec-lab, OU=lab, CN=kube-node2"})
    text = detail_text(t, None, 0.0).plain
    assert "authentication   public key (X.509)\n" in text
    assert "peer certificate O=ipsec-lab, OU=lab, CN=kube-node2\n" in text
    psk = detail_text(TunnelStatus("kube-node1", "mesh-left", "kube-node2", "ESTABLISHED", "INSTALLED",
                                   detail={"auth": "psk"}), None, 0.0).plain
    assert "authentication   pre-shared key\n" in psk and "peer certificate" not in psk
    assert "authentication" not in detail_text(TunnelStatus("kube-node1", "mesh-left", "kube-node2", "DOWN", "DOWN"),
                                               None, 0.0).plain


@pytest.mark.lab
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_the_tui_brings_up_an_x509_lab_and_shows_the_peer_certificate():
    """`ipsec-lab --auth x509` (the TUI): the app brings the lab up with certificates, and the
    Tunnels screen's SA detail shows the method and the peer's certificate subject."""
    from textual.widgets import Static

    from tui.app import IpsecLabApp
    from tui.backends.netns import NetnsBackend
    from tui.widgets.matrix import TunnelMatrix

    from .test_tui_pilot import SIZE, until

    name = unique_lab("xt")
    backend = NetnsBackend(name)
    try:
        app = IpsecLabApp(backend, deploy_replicas=0, poll_interval=0.3, auth="x509")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.status is not None and app.status.all_tunnels_up, 60, "all tunnels up")
            assert backend.spec().auth == "x509"
            await pilot.press("2")
            await until(pilot, lambda: app.current_mode == "tunnels", 5, "tunnels screen")
            matrix = app.screen.query_one(TunnelMatrix)
            await until(pilot, lambda: matrix.selected is not None, 5, "a selected tunnel")

            def detail() -> str:
                return str(app.screen.query_one("#tunnel-detail", Static).render())
            await until(pilot, lambda: "peer certificate" in detail(), 10, "the peer certificate in the detail")
            assert "public key (X.509)" in detail()
            assert f"O=ipsec-lab, OU={name}, CN={matrix.selected.peer}" in detail()
    finally:
        backend.down()
        assert lab_namespaces(name) == []
