"""The one exception a user is meant to see.

Anything that is the user's fault (a bad file, a bad option, a bad space) is raised
as `NcfError` with one line that names the file, key or line and says what would fix
it. The CLIs print that line to stderr and exit with code 2; every other exception
is a bug in ncf_tune and keeps its traceback.
"""

from __future__ import annotations


class NcfError(Exception):
    """A user-facing error: one line, what is wrong and how to fix it."""


EXIT_USAGE = 2  # argparse uses 2 for bad command lines; we use it for every bad input


class Interrupted(Exception):
    """A long job (a search) stopped before it finished: Ctrl-C, SIGTERM, or a stage that
    ended early. Not a KeyboardInterrupt, so `except Exception` in a caller sees it; the
    CLIs print its line and exit with code 130, like Ctrl-C."""
