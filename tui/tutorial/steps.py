"""Tutorial steps: Markdown files in assets/tutorial/, each with a TOML front matter block.

    +++
    title = "Bring the lab up"
    commands = ["ipsec-lab up", "kubectl get nodes"]   # what the step runs and shows
    action = "lab-up"                                  # the "do it" action (tui.tutorial.actions)
    checks = ["nodes-ready"]                           # must pass before "next" is offered
    netns_note = "..."                                 # optional: what differs without a kubelet
    +++
    The lesson, in Markdown.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..lab import resources
from ..lab.errors import LabError

TUTORIAL_DIR = resources.tutorial_dir()


@dataclass(frozen=True)
class Step:
    id: str  # the file name without .md, e.g. "03-deploy"
    title: str
    text: str  # Markdown
    commands: tuple[str, ...]
    action: str
    checks: tuple[str, ...]
    netns_note: str = ""


def parse_step(step_id: str, raw: str) -> Step:
    if not raw.startswith("+++\n"):
        raise LabError(f"tutorial step {step_id}: no +++ front matter")
    head, sep, body = raw[4:].partition("\n+++\n")
    if not sep:
        raise LabError(f"tutorial step {step_id}: front matter is not closed with +++")
    try:
        meta = tomllib.loads(head)
    except tomllib.TOMLDecodeError as exc:
        raise LabError(f"tutorial step {step_id}: bad front matter: {exc}") from None
    missing = [k for k in ("title", "commands", "action", "checks") if k not in meta]
    if missing:
        raise LabError(f"tutorial step {step_id}: front matter lacks {', '.join(missing)}")
    return Step(step_id, meta["title"], body.strip() + "\n", tuple(meta["commands"]), meta["action"],
                tuple(meta["checks"]), meta.get("netns_note", ""))


def load_steps(directory: Path = TUTORIAL_DIR) -> list[Step]:
    steps = [parse_step(p.stem, p.read_text()) for p in sorted(directory.glob("*.md"))]
    if not steps:
        raise LabError(f"no tutorial steps in {directory}")
    return steps
