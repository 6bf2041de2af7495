"""Entry point of the `ipsec-lab` command. Parses arguments; the TUI is imported only when needed."""

import sys

from .cli import main as _main


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
