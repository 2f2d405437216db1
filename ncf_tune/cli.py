"""What the command-line tools share: argument types that fail at parse time, a parser
whose errors are one line, the wrapper that turns NcfError into exit code 2, and
`ncf-tune`, the one command in front of the three tools."""

from __future__ import annotations

import argparse
import importlib
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


COMMANDS = {  # `ncf-tune NAME ...` runs `python -m ncf_tune.NAME ...`
    "search": "tune GMF -> MLP -> NeuMF with Ray Tune, Optuna and ASHA",
    "train": "train one config",
    "recommend": "top-k unseen items per user from a checkpoint",
}


def main(argv: list[str] | None = None) -> int:
    """`ncf-tune search|train|recommend [options]`: the tool's own main with the rest of
    the command line; its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    usage = "usage: ncf-tune {" + "|".join(COMMANDS) + "} [options] (ncf-tune COMMAND --help)"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n" + "\n".join(f"  {k:<10} {v}" for k, v in COMMANDS.items()))
        return 0 if argv else EXIT_USAGE
    if argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[0]!r}; {usage}", file=sys.stderr)
        return EXIT_USAGE
    return importlib.import_module(f"ncf_tune.{argv[0]}").main(argv[1:])
