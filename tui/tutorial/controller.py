"""Tutorial control without Textual: what F5 (do it), F6 (check) and F7-F9 (back, next, skip) do.

The app keeps only "busy" (a reactive set on its UI thread); the worker body here reports through
callbacks: `log(text, stream)` for the Logs screen and `on_busy(text)` when the step moves from
doing to checking or ends ("" = idle). The app turns on_busy into a message.
"""

from __future__ import annotations

from typing import Callable

from ..lab.events import Reporter
from .session import TutorialSession

MOVES = ("next", "back", "skip", "restart")


def busy_text(session: TutorialSession, do_it: bool) -> str:
    return f"{'doing' if do_it else 'checking'} step {session.index + 1}"


def move(session: TutorialSession, how: str) -> str | None:
    """Move through the steps; a sentence saying why not when the move is refused."""
    if how not in MOVES:
        raise ValueError(f"unknown tutorial move {how!r}")
    if how == "next" and not session.can_next:
        why = "this is the last step" if session.index == len(session.steps) - 1 else "its checks have not passed yet"
        return f"Next is offered once the step is done: {why} (F5 does it)"
    getattr(session, how)()
    return None


def run_step(session: TutorialSession, do_it: bool, reporter: Reporter, log: Callable[[str, str], None],
             on_busy: Callable[[str], None]) -> bool:
    """Do the step (if `do_it`) then run its checks; True when they all passed. Runs on a worker
    thread; `on_busy` is told each change of what it is doing and "" at the end, whatever happens."""
    try:
        if do_it:
            log(f"▶ step {session.index + 1}: {session.step.title}", "stdout")
            try:
                session.do_it(reporter)
            except Exception as exc:
                session.step_state().error = str(exc)
                log(f"✗ {exc}", "stderr")
                return False
            on_busy(busy_text(session, False))
        results = session.check(reporter)
        failed = [r.name for r in results if not r.passed]
        log(f"{'✓' if not failed else '✗'} step {session.index + 1} checks: "
            + (", ".join(failed) + " failed" if failed else "passed"), "stdout")
        return not failed
    finally:
        on_busy("")
