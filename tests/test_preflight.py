"""Preflight: every piece a lab uses is looked for before anything is created; a missing one is one
line naming it and its Debian package, exit code 3, nothing changed. `doctor` lists them all."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import cli, lab_namespaces, unique_lab
from tui.lab import preflight, render
from tui.lab.model import LabSpec, pair_key

PLUGIN_DIR = Path(preflight.DEFAULT_PLUGIN_DIR)


def rendered(datapath: str) -> dict[str, render.RenderedFile]:
    spec = LabSpec.build("pre", 3)
    secrets = {pair_key(a.name, b.name): "x" for a in spec.node_list() for b in spec.node_list() if a.index < b.index}
    return render.render_lab(spec, datapath=datapath, secrets=secrets)["kube-node1"]


# ---------------------------------------------------------------------------------- no root needed
@pytest.mark.parametrize("datapath", render.DATAPATHS)
def test_every_plugin_the_rendered_config_loads_is_looked_for_and_has_a_package(datapath):
    conf = rendered(datapath)["strongswan.conf"].content
    plugins = preflight.loaded_plugins(conf)
    assert "openssl" in plugins and "vici" in plugins
    assert ("kernel-libipsec" in plugins) == (datapath == "kernel-libipsec")
    # A plugin the templates start to load without a known package would be named with a guess.
    assert [p for p in plugins if p not in preflight.PLUGIN_PACKAGES] == []


def test_the_cni_plugins_come_from_the_rendered_conflist():
    assert preflight.cni_plugins(rendered("kernel-libipsec")["10-ipsec-lab.conflist"].content) == ["bridge", "host-local"]


def test_a_missing_piece_is_one_line_with_its_package(tmp_path):
    (tmp_path / "libstrongswan-random.so").touch()
    found = preflight.check_strongswan_plugins("charon {\n    load = random openssl\n}\n", tmp_path)
    assert [f.ok for f in found] == [True, False]
    line = found[1].line()
    assert "\n" not in line
    assert line == (f"strongSwan plugin openssl is missing ({tmp_path}/libstrongswan-openssl.so): install the "
                    "Debian package libstrongswan-standard-plugins (`ipsec-lab doctor --install`, or scripts/setup.sh)")
    assert preflight.packages_to_install(found) == ["libstrongswan-standard-plugins"]
    with pytest.raises(preflight.UsageError, match=r"^strongSwan plugin openssl is missing"):
        preflight.require(found)


def test_the_packages_named_by_preflight_are_those_setup_installs():
    setup = Path("scripts/setup.sh").read_text()
    named = {*preflight.PLUGIN_PACKAGES.values(), *preflight.PROGRAMS.values(), *preflight.FILES.values(),
             "containernetworking-plugins"}
    # Installed as dependencies of the packages setup.sh names (strongswan-charon pulls libstrongswan
    # and strongswan-libcharon; dash and mount are Essential on Debian).
    by_dependency = {"libstrongswan", "strongswan-libcharon", "dash", "gcm", "agent"}
    assert sorted(p for p in named - by_dependency if f" {p}" not in setup and f"\n    {p}" not in setup) == []


# ---------------------------------------------------------------------------------- on this machine
@pytest.mark.lab
def test_the_plugin_table_agrees_with_dpkg_here():
    for name, package in preflight.PLUGIN_PACKAGES.items():
        path = PLUGIN_DIR / f"libstrongswan-{name}.so"
        if not path.exists():
            continue  # a plugin Debian ships elsewhere or not at all here; the table is a guide
        owner = subprocess.run(["dpkg", "-S", str(path)], capture_output=True, text=True).stdout.split(":")[0]
        assert owner == package, f"{name}: table says {package}, dpkg says {owner}"


@pytest.fixture
def plugins_without_openssl(tmp_path):
    """A plugin directory with every installed plugin but openssl: what a machine without
    libstrongswan-standard-plugins looks like to the lab."""
    view = tmp_path / "plugins"
    shutil.copytree(PLUGIN_DIR, view, symlinks=True)
    (view / "libstrongswan-openssl.so").unlink()
    return view


def nothing_of(lab: str) -> None:
    state_root = Path(os.environ.get("IPSEC_LAB_STATE_ROOT", "/run/ipsec-lab"))
    assert lab_namespaces(lab) == []
    assert not (state_root / lab).exists() and not (state_root / f"{lab}.lock").exists()


@pytest.mark.lab
@pytest.mark.parametrize("how", [["up"], ["--run-checks", "--only", "tunnels-established"]])
def test_up_without_the_openssl_plugin_is_refused_in_one_line_and_changes_nothing(plugins_without_openssl, how):
    lab = unique_lab("pf")
    env = dict(os.environ, IPSEC_LAB_PLUGIN_DIR=str(plugins_without_openssl))
    try:
        cp = cli("--lab", lab, *how, env=env, timeout=60)
        assert cp.returncode == 3, cp.stdout + cp.stderr
        lines = cp.stderr.strip().splitlines()
        assert lines == [f"ipsec-lab: strongSwan plugin openssl is missing ({plugins_without_openssl}/libstrongswan-openssl.so): "
                         "install the Debian package libstrongswan-standard-plugins (`ipsec-lab doctor --install`, "
                         "or scripts/setup.sh)"]
        nothing_of(lab)
    finally:
        cli("--lab", lab, "down", timeout=60)


@pytest.mark.lab
def test_up_without_a_cni_plugin_is_refused(tmp_path):
    lab = unique_lab("pf")
    (tmp_path / "bridge").symlink_to("/usr/lib/cni/bridge")
    env = dict(os.environ, IPSEC_LAB_CNI_BIN_DIR=str(tmp_path))
    try:
        cp = cli("--lab", lab, "up", env=env, timeout=60)
        assert cp.returncode == 3, cp.stderr
        assert "CNI plugin host-local is missing" in cp.stderr and "containernetworking-plugins" in cp.stderr
        nothing_of(lab)
    finally:
        cli("--lab", lab, "down", timeout=60)


@pytest.mark.lab
def test_doctor_lists_every_finding_and_fails_on_a_missing_one(plugins_without_openssl):
    ok = cli("doctor")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "openssl" in ok.stdout and "host-local" in ok.stdout and "everything a new lab needs is here" in ok.stdout
    bad = cli("doctor", env=dict(os.environ, IPSEC_LAB_PLUGIN_DIR=str(plugins_without_openssl)))
    assert bad.returncode == 3
    missing = [line for line in bad.stdout.splitlines() if "missing" in line]
    assert len(missing) == 1 and "openssl" in missing[0]
    # Folded, never cut with an ellipsis: the package name is there whole for the reader to copy.
    assert "libstrongswan-standard-plugins" in "".join(cell.strip() for line in bad.stdout.splitlines()
                                                       for cell in line.split("│")[4:5])
    assert bad.stderr.strip() == ("ipsec-lab: 1 missing: openssl (libstrongswan-standard-plugins); "
                                  "`ipsec-lab doctor --install` installs them")


@pytest.mark.parametrize("args", [["--nodes", "0"], ["up", "--nodes", "0"], ["--nodes", "0", "up"], ["--nodes", "0", "--run-checks"],
                                  ["up", "--nodes", "1"], ["up", "--nodes", "33"]])
def test_every_node_count_outside_the_range_is_refused(args):
    lab = unique_lab("pn")
    cp = cli("--lab", lab, *args, timeout=60)
    assert cp.returncode == 3, cp.stdout + cp.stderr
    assert cp.stderr.strip().startswith("ipsec-lab: node count must be between 2 and 32, got ")
    assert lab_namespaces(lab) == []
