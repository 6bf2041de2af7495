"""`pip install` works: a wheel built from this checkout, installed into a fresh virtual environment
and run from a directory outside the checkout, brings a lab up, runs a check, opens the TUI with its
styles and tutorial, and finds the Vagrantfile and its provisioning scripts: all from the files the
wheel installed, never the checkout's (tui.lab.resources, pyproject's tool.setuptools sections)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from tui.lab.state import LabPaths
from tui.tutorial.steps import load_steps

from .conftest import ROOT, lab_namespaces, unique_lab
from .test_tui_tmux import screen, tmux, wait_screen

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="the wheel's lab needs root"),
]
DATA = ("Vagrantfile", "provisioning/", "assets/")  # what the wheel carries as tui/_data/...
FIXTURES = ROOT / "tests" / "fixtures" / "vagrant"


def run(argv, *, timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                        stdin=subprocess.DEVNULL, **kw)
    if check and cp.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {cp.returncode}:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    return cp


def tempdir(request, prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def source_files() -> list[str]:
    """The working tree's files as git would ship them: tracked and new, never ignored ones."""
    out = run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], timeout=30).stdout
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


@pytest.fixture(scope="module")
def wheel(request) -> Path:
    """The wheel, built from a copy of the working tree: a build in the checkout would leave
    build/ and egg-info behind there, and a stale build/lib could end up in the wheel."""
    tmp = tempdir(request, "ilab-wheel-")
    src = tmp / "src"
    for f in source_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src], timeout=300)
    (whl,) = (tmp / "dist").glob("ipsec_lab-*.whl")
    return whl


class Venv:
    def __init__(self, root: Path, work: Path, state: Path) -> None:
        self.root, self.work, self.state = root, work, state
        self.bin = root / "bin"
        self.python = self.bin / "python"
        self.ipsec_lab = self.bin / "ipsec-lab"

    def env(self) -> dict[str, str]:
        """Nothing of the checkout or the dev venv: no PYTHONPATH, this venv first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(PATH=f"{self.bin}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}", VIRTUAL_ENV=str(self.root),
                   XDG_STATE_HOME=str(self.state))
        return env

    def run(self, *argv, timeout: float = 120, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        return run(argv, timeout=timeout, check=check, cwd=self.work, env=env or self.env())


@pytest.fixture(scope="module")
def venv(request, wheel) -> Venv:
    """A fresh virtual environment with the wheel installed (dependencies as pip is configured here)."""
    tmp = tempdir(request, "ilab-venv-")
    v = Venv(tmp / "venv", tmp / "work", tmp / "state")
    v.work.mkdir()
    run([sys.executable, "-m", "venv", v.root], timeout=120)
    v.run(v.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, timeout=500)
    return v


def test_the_wheel_carries_every_package_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "tui").rglob("__init__.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"packages missing from the wheel (pyproject's tool.setuptools packages): {missing}"
    data = [f for f in source_files() if f.startswith(DATA)]
    assert "provisioning/templates/strongswan.conf.j2" in data and "assets/app.tcss" in data
    missing = sorted(f for f in data if f"tui/_data/{f}" not in names)
    assert not missing, f"data files missing from the wheel (pyproject's tool.setuptools package-data): {missing}"
    strays = sorted(n for n in names if not n.startswith(("tui/", "ipsec_lab-")))
    assert not strays, f"the wheel installs files outside its package: {strays}"


def test_the_installed_package_finds_its_own_files(venv):
    code = r"""
import json, sysconfig
import tui, tui.app as app
from tui.backends import vagrant_files as vs
from tui.lab import render, resources
from tui.tutorial import steps
print(json.dumps({
    "tui": tui.__file__, "purelib": sysconfig.get_paths()["purelib"], "checkout": str(resources.checkout_root() or "") or None,
    "css": app.IpsecLabApp.CSS_PATH, "steps": [s.id for s in steps.load_steps()], "tutorial": str(steps.TUTORIAL_DIR),
    "templates": sorted(render.environment().list_templates()), "template_dir": str(render.TEMPLATE_DIR),
    "vagrantfile": str(vs.VAGRANTFILE), "vagrant_cwd": str(vs.ROOT), "provisioning": str(resources.provisioning_dir()),
    "workdir": str(vs.workdir()),
}))
"""
    got = json.loads(venv.run(venv.python, "-c", code).stdout)
    pkg = Path(got["purelib"]) / "tui"
    assert Path(got["tui"]) == pkg / "__init__.py"
    assert got["checkout"] is None
    data = pkg / "_data"
    for key in ("css", "tutorial", "template_dir", "vagrantfile", "vagrant_cwd", "provisioning"):
        assert Path(got[key]).is_relative_to(data), (key, got[key])
        assert not Path(got[key]).resolve().is_relative_to(ROOT), (key, got[key])
    assert Path(got["css"]).read_bytes() == (ROOT / "assets" / "app.tcss").read_bytes()
    assert got["steps"] == sorted(p.stem for p in (ROOT / "assets" / "tutorial").glob("*.md"))
    assert got["templates"] == sorted(p.name for p in (ROOT / "provisioning" / "templates").iterdir())
    assert sorted(p.name for p in Path(got["provisioning"]).glob("*.sh")) == \
        sorted(p.name for p in (ROOT / "provisioning").glob("*.sh"))
    # Vagrant's writable files go to the user's state directory, never into site-packages.
    assert Path(got["workdir"]) == venv.state / "ipsec-lab" / "vagrant"
    # The command is the venv's, and its script runs the venv's python.
    assert shutil.which("ipsec-lab", path=venv.env()["PATH"]) == str(venv.ipsec_lab)
    assert venv.ipsec_lab.read_text().splitlines()[0] == f"#!{venv.python}"


def test_the_installed_command_brings_a_lab_up_runs_a_check_and_opens_the_tutorial(venv, request):
    lab = unique_lab("whl")
    session = f"ilab-wheel-{lab}"
    done = venv.work / "tui-exit.txt"

    def teardown():
        tmux("kill-session", "-t", session)
        tmux("kill-server")  # only the server on the tests' own tmux socket
        venv.run(venv.ipsec_lab, "--lab", lab, "down", timeout=90, check=False)
        assert lab_namespaces(lab) == []
    request.addfinalizer(teardown)

    venv.run(venv.ipsec_lab, "--lab", lab, "up", timeout=180)
    # The pod servers run the venv's python, without a PYTHONPATH into the checkout.
    state = json.loads(LabPaths.of(lab).state_file.read_text())
    for node, info in state["nodes"].items():
        pid = info["podserver"][0]
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[:3] == [str(venv.python).encode(), b"-m", b"tui.backends.podserver"], (node, argv)
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert not any(e.startswith(b"PYTHONPATH=") for e in environ), node

    cp = venv.run(venv.ipsec_lab, "--lab", lab, "--run-checks", "--only", "tunnels-established", timeout=180)
    assert "1 passed, 0 failed" in cp.stdout

    # The TUI, on the running lab, in tutorial mode: it starts only if its stylesheet loads, and the
    # first step comes from the wheel's assets/tutorial.
    first = load_steps(ROOT / "assets" / "tutorial")[0].title
    cmd = (f"cd {venv.work} && env -u COLUMNS -u LINES -u PYTHONPATH PATH={venv.bin}:$PATH "
           f"{venv.ipsec_lab} --lab {lab} --tutorial; echo \"exit=$?\" > {done}; sleep 60")
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45", "sh", "-c", cmd)
    s = wait_screen(session, first, 30)
    assert "Tutorial 1/" in s and "Do it F5" in s
    tmux("send-keys", "-t", session, "q")
    wait_screen(session, "Quit, leave lab running", 10)
    tmux("send-keys", "-t", session, "l")
    deadline = time.monotonic() + 15
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.exists(), f"the TUI did not exit; the screen:\n{screen(session)}"
    assert done.read_text().strip() == "exit=0"

    venv.run(venv.ipsec_lab, "--lab", lab, "down", timeout=90)
    assert lab_namespaces(lab) == []


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_the_installed_vagrantfile_validates_and_vagrant_writes_nothing_into_the_package(venv, request):
    """`prepare` from the wheel writes into the user's state directory; Vagrant, pointed at the
    installed Vagrantfile (VAGRANT_CWD), finds provisioning/ beside it and leaves the package alone."""
    data = Path(json.loads(venv.run(venv.python, "-c", "import json; from tui.lab import resources; "
                                    "print(json.dumps(str(resources.data_root())))").stdout))
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    cp = venv.run(venv.python, "-m", "tui.backends.vagrant", "prepare", "--lab", "whlvg")
    assert f"wrote {venv.state / 'ipsec-lab' / 'vagrant' / 'whlvg'}" in cp.stdout
    env = venv.env()
    env.update(IPSEC_LAB="whlvg", IPSEC_LAB_SPEC=str(venv.state / "ipsec-lab" / "vagrant" / "whlvg" / "vagrant.json"),
               VAGRANT_CWD=str(data), VAGRANT_DOTFILE_PATH=str(venv.state / "ipsec-lab" / "vagrant" / "whlvg" / "vagrant"),
               VAGRANT_HOME=str(tempdir(request, "ilab-vagrant-home-")), VAGRANT_DEFAULT_PROVIDER="libvirt",
               VAGRANT_CHECKPOINT_DISABLE="1", PATH=f"{FIXTURES / 'bin'}:{env['PATH']}")
    assert f"VAGRANT_CWD={data}" in cp.stdout
    cp = venv.run("vagrant", "validate", timeout=300, env=env)
    assert "validated successfully" in cp.stdout
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
