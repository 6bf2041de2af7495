"""The event stream printed to a terminal with rich: what the CLI and --run-checks show while they work."""

from __future__ import annotations

from rich.console import Console

from ..lab.events import Event, OutputLine, StepFinished, StepStarted


class ConsoleSink:
    """Prints the event stream: steps always, output lines unless quiet."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet

    def __call__(self, event: Event) -> None:
        c = self.console
        if isinstance(event, StepStarted):
            if not self.quiet:
                c.print(f"[bold cyan]▶[/] {event.step}")
        elif isinstance(event, StepFinished):
            mark = "[green]✓[/]" if event.ok else "[red]✗[/]"
            detail = f" — {event.detail}" if event.detail else ""
            c.print(f"{mark} {event.step} [dim]({event.seconds:.2f} s){detail}[/]", markup=True)
        elif isinstance(event, OutputLine) and not self.quiet:
            prefix = f"[{event.node}] " if event.node else ""
            style = "red" if event.stream == "stderr" else "dim"
            c.print(f"  {prefix}{event.text}", style=style, markup=False)
