"""The JSONL sink: one JSON object per event, with its time, in a file or stream; the
format ``tokenguard report`` reads.

A line is ``{"ts": <Unix seconds>, "event": <name>, "level": <level>, **fields}`` with
the fields under the names :meth:`tokenguard.events.Event.fields` gives. A
``tokenguard.limiter.limits`` line records a limiter's limits and window, so that a
report or plot of the log uses the window the calls were limited by.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..events import Event
    from ..limiter import Limiter

__all__ = ["LIMITS_EVENT", "JsonlSink"]

#: The name of the line that records a limiter's limits (not an emitted event: the sink
#: writes it when asked).
LIMITS_EVENT = "tokenguard.limiter.limits"


class JsonlSink:
    """Append each event to ``target`` (a path, opened for appending, or a text stream)
    as one JSON line with a ``ts`` in Unix seconds; each line is flushed as written.

    ``limiter`` (or :meth:`write_limits` later) records that limiter's limits and
    window first, which ``tokenguard report`` and its plot read. Close the sink (or use
    it as a context manager) to close a file it opened; a stream given is left open.

    Example::

        with tg.sinks.JsonlSink("usage.jsonl", limiter=lim) as sink:
            undo = tg.events.add_sink(sink)
            ...
            undo()
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | IO[str],
        *,
        limiter: Limiter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._own = isinstance(target, (str, os.PathLike))
        if isinstance(target, (str, os.PathLike)):
            try:
                self._stream: IO[str] = open(target, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot open the event log {os.fspath(target)!r} for appending: {exc.strerror}"
                ) from None
            self.path: str | None = os.fspath(target)
        elif callable(getattr(target, "write", None)):
            self._stream = target
            self.path = getattr(target, "name", None)
        else:
            raise ConfigurationError(
                f"JsonlSink needs a path or a text stream, got {type(target).__name__}"
            )
        self._clock = clock
        self._lock = threading.Lock()
        #: Lines written so far.
        self.lines = 0
        if limiter is not None:
            self.write_limits(limiter)

    def __call__(self, event: Event) -> None:
        doc: dict[str, Any] = {
            "ts": round(self._clock(), 6),
            "event": event.name,
            "level": event.level,
        }
        doc.update(event.fields())
        self._write(doc)

    def write_limits(self, limiter: Limiter) -> None:
        """Record ``limiter``'s limits (tokens and requests per window and per day), its
        window in seconds and its algorithm, as one ``tokenguard.limiter.limits`` line."""
        lim = limiter.limits
        doc: dict[str, Any] = {
            "ts": round(self._clock(), 6),
            "event": LIMITS_EVENT,
            "level": "info",
            "window_s": lim.window,
            "algorithm": limiter.algorithm,
        }
        for name in ("tpm", "rpm", "tpd", "rpd"):
            value = getattr(lim, name)
            if value is not None:
                doc[name] = value
        self._write(doc)

    def _write(self, doc: dict[str, Any]) -> None:
        line = json.dumps(doc, default=str, separators=(",", ":")) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()
            self.lines += 1

    def close(self) -> None:
        """Close the file this sink opened (a stream it was given stays open)."""
        if self._own:
            with self._lock:
                self._stream.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JsonlSink({self.path!r}, lines={self.lines})"
