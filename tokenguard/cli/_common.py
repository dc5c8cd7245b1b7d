"""What the commands share: exit codes, usage errors, reading a file or stdin."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["EXIT_DOES_NOT_FIT", "EXIT_OK", "EXIT_USAGE", "UsageError", "read_input"]

#: Everything went as asked.
EXIT_OK = 0
#: The request does not fit, or the demo saw a refusal reach its caller.
EXIT_DOES_NOT_FIT = 1
#: The command line or an input file is wrong (argparse uses 2 as well).
EXIT_USAGE = 2


class UsageError(Exception):
    """A wrong command line or input file: printed as one line, exit status 2."""


def read_input(file: str) -> str:
    """The text of ``file`` (``-``: standard input), or a :class:`UsageError` naming it."""
    if file == "-":
        return sys.stdin.read()
    path = Path(file)
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"cannot read {file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read {file}: it is a directory") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
