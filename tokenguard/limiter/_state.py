"""What the in-memory backend needs of a limiter model: the window or the buckets.

Both :class:`~._window.Window` and :class:`~._bucket.Buckets` are the limiter's
*state*: pure arithmetic with ``now`` passed in. Invariant: a backend drives either
through this protocol alone, and never looks at which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, TypeVar

from ._headers import ServerView

__all__ = ["Lesson", "LimitChange", "Soonest", "State"]

C = TypeVar("C")


class Lesson(NamedTuple):
    """Evidence that the server does not refund (or, for the bucket, that it does):
    what taught it (``"headers"`` or ``"429"``), the tokens the server had in use, and
    those the model had."""

    evidence: str
    server_used: int
    ledger_used: int


#: A limit the server's headers changed: its name ("tpm", "rpd", or "tpd" when a day
#: limit the account does not have is dropped; any of the four named in a refusal's
#: body), the old value (``None``: not counted before) and the new (``None``: no such
#: limit any more).
LimitChange = tuple[str, int | None, int | None]


@dataclass(frozen=True)
class Soonest:
    """The soonest a waiting request could go, in the most favourable course of the
    queue: ``at`` (the backend's clock), ``limit`` that binds it (``"tpm"``, ``"rpm"``,
    ``"tpd"``, ``"rpd"``, ``"retry-after"``; ``""`` when none does: only the queue
    ahead holds it back) and ``resets``, when that limit is whole again."""

    at: float
    limit: str
    resets: float


class State(Protocol[C]):
    """A limiter model whose admissions are charges of type ``C``."""

    #: What the model learned about refunds (``None``: nothing yet).
    learned: bool | None
    #: A lesson learned and not reported yet.
    lesson: Lesson | None
    #: Limit changes not reported yet (``pop_limit_changes`` takes them).
    limit_changes: list[LimitChange]

    @property
    def policy(self) -> bool | None:
        """Whether a commit for less frees the difference (see docs/limiter-algorithms.md)."""
        ...

    def expire(self, now: float) -> None: ...

    def earliest(self, tokens: int, now: float) -> float:
        """Earliest time >= ``now`` at which ``tokens`` may go."""
        ...

    def soonest(self, tokens: int, now: float) -> Soonest:
        """The soonest ``tokens`` could go with nobody ahead, the limit that binds it
        and when that limit is whole again (call ``expire(now)`` first)."""
        ...

    def delay(self, tokens: int, behind: int) -> float:
        """At most how much later the :meth:`earliest` of a waiter of ``behind`` tokens
        becomes once ``tokens`` more are admitted now, however long they stay in
        flight (``math.inf``: no bound). What bounded-delay backfill weighs."""
        ...

    def token_cap(self) -> float:
        """The smallest capacity of a token limit (``math.inf``: no token limit): the
        most one admission can ever find free, what caps the interactive reserve."""
        ...

    def try_admit(self, tokens: int, now: float) -> C | None: ...

    def admit(self, tokens: int, now: float) -> C: ...

    def settle(self, charge: C, actual: int | None, now: float, *, headers: bool = False) -> None:
        """Commit (``actual`` tokens) or cancel (``None``) an admitted charge."""
        ...

    def settle_answered(self, charge: C, actual: int | None, view: ServerView, now: float) -> None:
        """:meth:`settle` with the headers of the request's own answer (or error), then
        adopt what they say."""
        ...

    def adopt(self, now: float, view: ServerView) -> bool:
        """Adopt a header given on its own; True if anything changed."""
        ...

    def adopt_answer(self, charge: C, view: ServerView, now: float) -> bool:
        """Adopt the headers of ``charge``'s own response, given apart from its settle."""
        ...

    def pop_lesson(self) -> Lesson | None: ...
    def pop_limit_changes(self) -> list[LimitChange]:
        """The limits headers changed since the last call."""
        ...

    def set_limit(self, name: str, value: int | None) -> None:
        """Set a limit no header reports (``rpm``, ``tpd``; ``None``: none), recorded
        as a limit change."""
        ...
