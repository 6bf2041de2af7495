"""Entry point of the `ipsec-lab` command: the headless CLI, and the TUI when no command is given.

The only module that links the two faces: the core (tui.cli included) never imports Textual.
"""

import argparse
import sys

from .cli import main as cli_main


def run_tui(args: argparse.Namespace) -> int:
    from .app_entry import run_tui as run  # Textual is imported here and only here

    return run(args)


def main() -> None:
    sys.exit(cli_main(run_tui=run_tui))


if __name__ == "__main__":
    main()
