"""The type checker runs in the suite: mypy, strict (pyproject.toml's [tool.mypy]) on these packages."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Strict packages; each is listed in pyproject.toml's strict override too.
STRICT = ["tui/lab", "tui/backends", "tui/vm", "tui/checks", "tui/exitcodes.py", "tui/web.py"]


def test_mypy_strict_passes():
    cp = subprocess.run([str(Path(sys.executable).parent / "mypy"), "--no-incremental", *STRICT], cwd=ROOT,
                        capture_output=True, text=True, timeout=240)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_type_ignores_are_rare_and_say_why():
    """Each `type: ignore` in the strict packages names its error code and gives its reason after it."""
    bare = []
    for pkg in STRICT:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if "type: ignore" in line:
                    after = line.split("type: ignore", 1)[1]
                    if not after.startswith("[") or "#" not in after:
                        bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "a type: ignore without [code] and a reason:\n" + "\n".join(bare)
