"""What the command-line tools share: argument types that fail at parse time, a parser
whose errors are one line, and the wrapper that turns NcfError into exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ncf_tune.errors import EXIT_USAGE, Interrupted, NcfError


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line prints one line (not the whole usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def guarded(main: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a CLI body: an NcfError becomes 'error: ...' on stderr and exit code 2,
    Ctrl-C one line (the exception's own text, else `interrupted`) and exit code 130;
    anything else is a bug and keeps its traceback."""
    try:
        return main()
    except NcfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"stopped: {exc}" if str(exc) else interrupted, file=sys.stderr)
        return 130
