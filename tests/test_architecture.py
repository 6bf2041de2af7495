"""The headless core never imports Textual: `--run-checks`, the CLI and the backends run without it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contract_holds():
    cp = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_headless_modules_load_without_textual():
    code = (
        "import sys, importlib\n"
        "for m in ('tui.cli', 'tui.lab.model', 'tui.lab.render', 'tui.backends.netns', 'tui.lab.probes'):\n"
        "    importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m == 'textual' or m.startswith('textual.')]\n"
        "assert not bad, bad\n"
    )
    cp = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr


def test_no_unused_imports_or_undefined_names():
    cp = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "tui", "tests", "bench"], cwd=ROOT,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr
