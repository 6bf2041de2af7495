"""Where ipsec-lab's data files are: the node templates, the TUI's styles, the tutorial text, and
the Vagrantfile with its provisioning scripts. The one module that knows; everything else asks it.

- From a checkout (and the editable install scripts/setup.sh makes) they are the repository's
  top-level provisioning/, assets/ and Vagrantfile.
- A wheel carries the same tree as the package data directory tui/_data: pyproject.toml maps the
  package tui._data to the repository's top level and lists the files. The Vagrantfile finds
  provisioning/ beside it in both places.

Headless: no Textual here (the import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import functools
import os
from importlib.resources import files
from pathlib import Path

DATA_DIR = "_data"  # tui/_data in an installed wheel (tool.setuptools.package-dir in pyproject.toml)


@functools.cache
def package_dir() -> Path:
    """The installed (or checked-out) `tui` package: a regular package, so a real directory."""
    return Path(str(files("tui")))


@functools.cache
def checkout_root() -> Path | None:
    """The repository's top level when ipsec-lab runs from a checkout or an editable install;
    None when it runs from an installed wheel."""
    pkg = package_dir()
    if (pkg / DATA_DIR).is_dir():
        return None
    top = pkg.parent
    return top if (top / "pyproject.toml").is_file() and (top / "provisioning").is_dir() else None


@functools.cache
def data_root() -> Path:
    """The directory that holds provisioning/, assets/ and the Vagrantfile."""
    return checkout_root() or package_dir() / DATA_DIR


def provisioning_dir() -> Path:
    return data_root() / "provisioning"


def templates_dir() -> Path:
    return provisioning_dir() / "templates"


def assets_dir() -> Path:
    return data_root() / "assets"


def app_css() -> Path:
    return assets_dir() / "app.tcss"


def tutorial_dir() -> Path:
    return assets_dir() / "tutorial"


def vagrantfile() -> Path:
    return data_root() / "Vagrantfile"


def vagrant_workdir() -> Path:
    """The default home of Vagrant labs' spec, secrets, rendered files and machine records (the
    caller honours IPSEC_LAB_VAGRANT_DIR first): .ipsec-lab beside the Vagrantfile in a checkout,
    as the seed had it; from a wheel, never the installed package but the user's state directory."""
    top = checkout_root()
    if top is not None:
        return top / ".ipsec-lab"
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ipsec-lab" / "vagrant"
