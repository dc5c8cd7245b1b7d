"""The console sink: one readable line per event on a stream (standard error by
default), for seeing everything while developing (``tg.events.to_console()``)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from ..errors import ConfigurationError
from ._logging import LEVELS

if TYPE_CHECKING:
    from ..events import Event

__all__ = ["ConsoleSink"]


class ConsoleSink:
    """Print each event at ``level`` or above as one line,
    ``HH:MM:SS.mmm level     name key=value ...``, to ``stream`` (default: whatever
    ``sys.stderr`` is when the event comes).

    Example::

        tg.events.add_sink(tg.sinks.ConsoleSink(level="warning"))
    """

    def __init__(self, stream: TextIO | None = None, *, level: str = "debug") -> None:
        if level not in LEVELS:
            raise ConfigurationError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.stream = stream
        self._least = LEVELS[level]
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if LEVELS[event.level] < self._least:
            return
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        pairs = " ".join(f"{k}={v}" for k, v in event.fields().items())
        line = f"{stamp} {event.level:<8} {event.name} {pairs}\n"
        stream = self.stream if self.stream is not None else sys.stderr
        with self._lock:
            stream.write(line)
            stream.flush()
