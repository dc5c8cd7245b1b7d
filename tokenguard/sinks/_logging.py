"""The stdlib :mod:`logging` sink: each event at its record's level on a logger the
application names. It adds no handler: the application's configuration decides where
the lines go."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events import Event

__all__ = ["LEVELS", "LoggingSink"]

#: A record's ``level`` as a stdlib logging level.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LoggingSink:
    """Log each event to a stdlib logger at the record's level, with the message
    ``"<event name> <fields>"`` and the fields in ``extra={"tokenguard": fields}``.
    The fields are only built when the logger is enabled for that level.

    Example::

        tg.events.add_sink(tg.sinks.LoggingSink("myapp.tokens"))
    """

    def __init__(self, logger: logging.Logger | str = "tokenguard") -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger

    def __call__(self, event: Event) -> None:
        level = LEVELS[event.level]
        if self.logger.isEnabledFor(level):
            fields = event.fields()
            self.logger.log(level, "%s %s", event.name, fields, extra={"tokenguard": fields})

    def __repr__(self) -> str:
        return f"LoggingSink({self.logger.name!r})"
