"""What the commands share: exit codes, usage errors, reading a file or stdin."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = [
    "EXIT_DOES_NOT_FIT",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "json_kind",
    "open_input",
    "read_input",
]

#: Everything went as asked.
EXIT_OK = 0
#: The request does not fit, or the demo saw a refusal reach its caller.
EXIT_DOES_NOT_FIT = 1
#: The command line or an input file is wrong (argparse uses 2 as well).
EXIT_USAGE = 2


class UsageError(Exception):
    """A wrong command line or input file: printed as one line, exit status 2."""


def json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words (a file's author wrote JSON, not
    Python): ``null``, ``true``, ``false``, ``a number (42)``, ``a string ("100")``,
    ``an array``, ``an object``.

    Example::

        json_kind(json.loads("1e3"))  # 'a number with a fraction or exponent (1000.0)'
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"a number ({value})"
    if isinstance(value, float):
        # json.loads makes a float of any number written with "." or "e", 1e3 included.
        return f"a number with a fraction or exponent ({value!r})"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > 40:
            text = text[:36] + '..."'
        return f"a string ({text})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__  # not from json.loads


def read_input(file: str) -> str:
    """The text of ``file`` (``-``: standard input), or a :class:`UsageError` naming it."""
    with open_input(file) as stream:
        return stream.read()


@contextmanager
def open_input(file: str) -> Iterator[TextIO]:
    """``file`` (``-``: standard input) open as UTF-8 text, to read line by line without
    holding it all; a file that cannot be opened or read is a :class:`UsageError` naming
    it, raised where it happens."""
    try:
        if file == "-":
            yield sys.stdin
            return
        with Path(file).open(encoding="utf-8") as stream:
            yield stream
    except FileNotFoundError:
        raise UsageError(f"cannot read {file}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"cannot read {file}: it is a directory") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {file}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
