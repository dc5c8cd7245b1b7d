"""A guarded call site, and what it works out once per model and ``max_tokens``.

Invariant: a :class:`Site` is used only while the registry's generation and the model
table's entry are the ones it was worked out from, and the lessons it applied have
not lapsed; any prompt of at most ``fits``
tokens is one that fitting would send as it is (see :func:`fits_as_asked`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

from .._discovery import model_info
from ..errors import ConfigurationError, ContextOverflow
from ..fitting import Summarizer, room_for
from ..limiter import Limiter, WindowLimits
from ..limiter._window import DAY_WINDOWS
from ..models import ModelInfo, table_entry
from . import _registry
from ._options import GuardOptions
from ._request import ChatRequest

__all__ = ["Guard", "Site", "fits_as_asked"]

#: A site that sees many models or sizes forgets them all past this many.
_MAX_SITES = 64


@dataclass(frozen=True)
class Site:
    """What one call site's calls to one model with one ``max_tokens`` share: the model's
    entry, its limiter, the limits fitting works within, and the largest prompt that is
    sent as it is (``fits``; ``None``: every call is fitted)."""

    info: ModelInfo
    limiter: Limiter | None
    context_window: int
    tpm: int | None
    #: ``max_tokens`` as asked, capped by ``cap_max_tokens``.
    asked: int | None
    generation: int
    fits: int | None = None
    #: The limiter's limits this was worked out with (see Guard.site_for).
    limits: WindowLimits | None = None
    #: When the learned limits applied here lapse (the guard's clock; ``inf``: none applied).
    until: float = math.inf
    #: Whether ``info`` is the model table's entry (else the server's answer, or defaults).
    known: bool = True


@dataclass
class Guard:
    """One guarded call site: its options, endpoint, summarizer and what it learned."""

    opts: GuardOptions
    base_url: str
    site: str
    #: The account the calls spend (a digest of an instrumented client's API key; ""
    #: for a decorated function): default limiters are per base URL, model and account.
    account: str = ""
    summarizer: Summarizer | None = None
    #: 5xx / connection / timeout retries (an instrumented client's own ``max_retries``,
    #: taken over from the SDK; 0 for a decorated function, whose SDK retries itself).
    transient_retries: int = 0
    #: The largest completion seen at this site (reported in events).
    completion_max: int | None = None
    #: The instrumented client (its retry-less copy), asked about models the table lacks.
    client: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sites: dict[tuple[str, int | None], Site] = field(default_factory=dict, repr=False)

    def site_for(self, req: ChatRequest) -> Site:
        """The site's values for ``req``'s model and ``max_tokens``: worked out by an
        earlier call while still good, else now."""
        return self.kept_site(req) or self._work_out(req)

    def kept_site(self, req: ChatRequest) -> Site | None:
        """The site an earlier call worked out for ``req``'s model and ``max_tokens``,
        while the registry, the model's entry and the limits are the ones it read."""
        site = self._sites.get((req.model, req.max_tokens))
        if (
            site is not None
            and site.generation == _registry.generation
            and site.info
            is (table_entry(req.model) if site.known else model_info(self.base_url, req.model))
            and (site.limiter is None or site.limiter.limits is site.limits)
            and (site.until == math.inf or self.opts.clock() < site.until)
        ):
            return site
        return None

    def _work_out(self, req: ChatRequest) -> Site:
        opts = self.opts
        generation = _registry.generation
        info = model_info(self.base_url, req.model)
        limiter = _registry.limiter_for(opts, self.base_url, req.model, self.account)
        # The limits a server's headers may change: the site is worked out again then.
        limits = limiter.limits if limiter is not None else None
        learned = _registry.learned(self.base_url, req.model)
        if learned.until <= opts.clock():
            learned = _registry.Learned()  # lapsed: the table's limits until taught again
        window = opts.context_window or info.context_window
        if learned.context_window is not None:
            window = min(window, learned.context_window)
        tpm = limits.tpm if limits is not None else None
        if learned.tpm is not None:
            tpm = learned.tpm if tpm is None else min(tpm, learned.tpm)
        asked = req.max_tokens
        if opts.cap_max_tokens is not None:
            asked = opts.cap_max_tokens if asked is None else min(asked, opts.cap_max_tokens)
        fits = fits_as_asked(
            context_window=window,
            tpm=tpm,
            max_tokens=asked,
            max_completion_tokens=info.max_completion_tokens,
            default_reserve=opts.default_reserve,
        )
        known = info is table_entry(req.model)
        site = Site(
            info, limiter, window, tpm, asked, generation, fits, limits, learned.until, known
        )
        if len(self._sites) >= _MAX_SITES:
            self._sites.clear()
        self._sites[(req.model, req.max_tokens)] = site
        return site

    def longest_wait(self, model: str, limit_name: str | None) -> tuple[float, float, str]:
        """(the minute's window, the longest wait a 429 can justify, whose limits): a
        minute's limits justify one window, a day's one day; a 429 naming no limit, a
        day when ``model`` has day limits, else a window."""
        limiter = _registry.limiter_for(self.opts, self.base_url, model)
        window = limiter.limits.window if limiter is not None else (self.opts.window or 60.0)
        if limit_name in ("tpd", "rpd"):
            return window, window * DAY_WINDOWS, "a day's"
        if limit_name is None and limiter is not None and limiter.limits.has_day:
            return window, window * DAY_WINDOWS, "the model's"
        return window, window, "a minute's" if limit_name else "the model's"

    def saw_completion(self, tokens: int) -> int:
        """Learn a completion's size; the largest seen so far."""
        known = self.completion_max
        if known is not None and tokens <= known:
            return known  # it only grows: no lock needed to see that it is not larger
        with self._lock:
            if self.completion_max is None or tokens > self.completion_max:
                self.completion_max = tokens
            return self.completion_max


def fits_as_asked(
    *,
    context_window: int,
    tpm: int | None,
    max_tokens: int | None,
    max_completion_tokens: int | None,
    default_reserve: int,
) -> int | None:
    """The largest prompt that fits as asked outside any budget: every prompt of at
    most that many tokens has the room :func:`~tokenguard.fitting.room_for` gives an empty
    prompt (the same ceiling and reservation, ``max_tokens`` not lowered), so fitting
    would send it unchanged. ``None`` when even an empty prompt does not fit as asked.

    With ``max_tokens`` the reservation does not depend on the prompt. Without it the
    server holds ``min(default, context window - prompt)``, which is the whole default
    for every prompt up to ``ceiling - default`` (the ceiling is at most the window):
    that is the room an empty prompt has, and so the answer too.
    """
    try:
        r = room_for(
            0,
            context_window=context_window,
            tpm=tpm,
            max_tokens=max_tokens,
            max_completion_tokens=max_completion_tokens,
            default_reserve=default_reserve,
        )
    except (ContextOverflow, ConfigurationError):
        return None  # every call goes through fitting, which says what is wrong
    return None if r.lowered else r.allowed
