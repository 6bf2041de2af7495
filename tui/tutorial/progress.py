"""Tutorial progress, saved per lab name so a learner resumes where they stopped.

It is the learner's data, not the lab's: it lives in the user's state directory
(~/.local/state/ipsec-lab/tutorial/<lab>.json), survives `down`, and `restart` clears it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path


def progress_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ipsec-lab" / "tutorial"


@dataclass
class Progress:
    lab: str
    current: int = 0
    passed: set[str] = field(default_factory=set)  # ids of steps whose checks passed

    @property
    def path(self) -> Path:
        return progress_dir() / f"{self.lab}.json"

    @classmethod
    def load(cls, lab: str) -> "Progress":
        p = cls(lab)
        try:
            data = json.loads(p.path.read_text())
            p.current = int(data.get("current", 0))
            p.passed = set(data.get("passed", []))
        except (OSError, ValueError):
            pass
        return p

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"current": self.current, "passed": sorted(self.passed)}))
        tmp.replace(self.path)

    def reset(self) -> None:
        self.current, self.passed = 0, set()
        self.save()
