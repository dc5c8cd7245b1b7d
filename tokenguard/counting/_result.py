"""The values counting returns: a request's prompt broken down, and a request's total cost."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CalibrationBasis", "PromptCount", "RequestCount"]


@dataclass(frozen=True)
class PromptCount:
    """A request's prompt tokens broken down into what each part costs.

    ``messages[i]`` is what ``messages[i]`` of the request costs (its framing, text and
    images), ``overhead`` what the request costs beyond its messages and tools (the chat
    template's fixed text), ``tools`` what the ``tools``/``functions`` definitions cost,
    and ``total`` the prompt tokens: always ``count_tokens`` of the same request.

    The costs are made for dropping messages (fitting). For a kept subset ``kept`` of the
    messages, in their order::

        count_tokens(kept) <= overhead + tools + sum(messages[i] for i in kept)

    and for the Llama models (Groq's templates) the two are *equal* for the kept
    subsets fitting makes (system messages kept, a tool-call turn kept with its results,
    the newest user message kept), with these exceptions (all but the last on the safe
    side):

    * several system messages are joined into one block, so each one after the first is
      charged its text plus a margin (and, where the block could vanish, its frame);
    * an assistant message that becomes the last one is left open (no end of turn, no
      generation prompt): the count is then 5 tokens below the sum;
    * Llama 4 groups the tool results that follow a call into one turn: each result is
      charged the larger of its two spellings (the last one has no comma);
    * Llama 3 (retired) puts an empty turn between two messages of one role: it is
      charged to the second of them, so a subset that makes two such messages meet
      needs 5 more tokens than the sum (the one under-count; fitting counts its result
      again before sending).

    ``total`` itself is exact (when ``exact``) and may be below ``overhead + tools +
    sum(messages)`` where the first exception applies.

    Qwen3 is exact in the same way for kept subsets in which user and assistant turns
    still alternate and the newest user query stays; elsewhere Groq's gateway inserts an
    empty turn (5 tokens), or an earlier reasoning turn becomes the last and gets its
    ``<think>`` text back, and the count may exceed the sum (docs/qwen-kimi.md).

    For estimated models the sum bounds the estimate ``count_tokens(kept)`` gives from
    above, calibration included, for every kept subset; ``total`` may then be below
    ``overhead + tools + sum(messages)``. The costs are the raw estimate's parts priced
    at rates that bound the calibrated estimate linearly, tight for the whole request
    (within a few percent once calibration has seen the conversation's earlier turns).
    The bound holds for the calibration as it was when counted: a later
    :meth:`Counter.observe` may move it.

    Example::

        >>> pc = count_prompt([{"role": "system", "content": "Be brief."},
        ...                    {"role": "user", "content": "Hello"}], model="llama3-8b-8192")
        >>> pc.messages, pc.overhead, pc.tools, pc.total
        ((8, 6), 5, 0, 19)
        >>> pc.total == pc.overhead + pc.tools + sum(pc.messages)
        True
    """

    #: What each message costs, in the order of the request.
    messages: tuple[int, ...]
    #: The fixed template cost: what the request costs beyond its messages and tools.
    overhead: int
    #: What the tools/functions definitions cost.
    tools: int
    #: The prompt tokens (``== count_tokens`` of the same request).
    total: int
    #: Whether ``total`` is exact (see :class:`RequestCount`).
    exact: bool
    #: The model's name in the model table.
    model: str


@dataclass(frozen=True, slots=True)
class CalibrationBasis:
    """The raw estimate of one request in the terms calibration learns from.

    ``content`` and ``overhead`` are the two parts of the raw estimate (see
    :class:`~tokenguard.Calibration`), ``bucket`` the script bucket of the request's
    text, and ``key`` names the request's messages so that the server's count of it can
    anchor a later request that extends it.
    """

    content: int
    overhead: int
    bucket: int
    key: int


@dataclass(frozen=True)
class RequestCount:
    """What one request costs before it is sent.

    ``prompt_tokens`` is what the server will report as ``usage.prompt_tokens`` (exact
    when ``exact``, otherwise a conservative estimate); ``total`` adds the completion
    reservation. Pass it back with the server's count to :meth:`Counter.observe`.

    Example::

        rc = tg.count_request(messages, model="llama-3.1-8b-instant", max_tokens=256)
        rc.total == rc.prompt_tokens + 256
    """

    prompt_tokens: int
    completion_reserve: int
    total: int
    exact: bool
    model: str = ""
    #: The estimate before calibration (equal to ``prompt_tokens`` when exact).
    raw_prompt_tokens: int = field(default=0, repr=False)
    #: What calibration learns from when the server's count comes back (estimates only).
    basis: CalibrationBasis | None = field(default=None, repr=False)

    def refusal(self, tpm: int | None = None) -> int | None:
        """The status the server would refuse this request with before serving it: 413
        when ``total`` (prompt and reserve: what Groq reserves) exceeds the per-minute
        token limit ``tpm`` itself, whatever the wait; ``None`` when it would not.
        ``tpm`` defaults to the model table's free-tier limit.

        Example::

            rc = tg.count_request(messages, model="llama-3.1-8b-instant")
            rc.refusal()             # 413 for a prompt over 6,000 - 1,024 tokens
            rc.refusal(tpm=250_000)  # None on a paid account
        """
        if tpm is None:
            from ..models import get_model

            limits = get_model(self.model).tier_limits("free")
            tpm = limits.tpm if limits is not None else None
        return 413 if tpm is not None and self.total > tpm else None
