"""``tokenguard count FILE``: what a request costs and whether it fits, before sending it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from ._common import EXIT_DOES_NOT_FIT, EXIT_OK, UsageError, json_kind, read_input

__all__ = ["CountResult", "count_command", "count_one"]

_DEFAULT_MODEL = "llama-3.1-8b-instant"


@dataclass(frozen=True)
class CountResult:
    """The count of one request, with how it compares to the model's limits.

    ``reserve`` is the completion reservation: ``max_tokens``, or what the server holds
    for a request without it (as the guard counts it). ``unseen_prompt_allowance`` is
    what the guard reserves on top of the count for prompt text the server adds that no
    client sees (a compound system's tools: docs/compound.md), 0 for other models;
    ``total`` is what the guard holds: prompt + allowance + reservation.
    ``tier`` is the account's tier the per-minute limit is of (``tpm_tier`` the tier
    whose published limit it is: the free tier's when ``tier`` has none published).
    ``over_context`` is how many tokens the prompt and reservation exceed the context
    window by (what the guard fits; the allowance is not in it), ``over_tpm`` how many
    ``total`` exceeds the per-minute token limit by (0: fits; ``None``: the limit is not
    known); ``refused`` the status the server would refuse it with (413), else ``None``.
    """

    source: str
    model: str
    prompt_tokens: int
    template_overhead: int
    tools_tokens: int
    messages: int
    exact: bool
    max_tokens: int | None
    reserve: int
    unseen_prompt_allowance: int
    total: int
    context_window: int
    tier: str
    tpm_tier: str
    tpm: int | None
    over_context: int
    over_tpm: int | None
    refused: int | None

    @property
    def fits(self) -> bool:
        """Whether the request fits the context window and the per-minute limit."""
        return self.over_context == 0 and not self.over_tpm


def count_one(
    data: Any, *, source: str, model: str | None, max_tokens: int | None, tier: str = "free"
) -> CountResult:
    """Count one messages list or request body (``data``, parsed JSON).

    Raises :class:`UsageError` naming ``source`` when ``data`` is neither, and lets a
    :class:`~tokenguard.TokenGuardError` (bad messages) through.

    Example::

        r = count_one([{"role": "user", "content": "Hi"}], source="-", model=None,
                      max_tokens=100)
        r.total == r.prompt_tokens + 100
    """
    from .. import count_prompt, count_request, get_model
    from ..counting._request_options import BUDGET_KEYWORDS
    from ..models import unseen_prompt_allowance

    messages, body = _split(data, source)
    # The file is checked whole, whatever --model/--max-tokens override: a wrong field is
    # a wrong file (exit 2), never silently counted as absent.
    body_model = _body_model(body.pop("model", None), source)
    asked = _body_max_tokens(body, source)
    info = get_model(model or body_model or _DEFAULT_MODEL)
    if max_tokens is None:
        max_tokens = asked
    # The whole body is read, as tg.count_request(**body) reads it: tools, response
    # formats and reasoning options change the prompt of some models, and an unknown
    # keyword is an error rather than silently ignored.
    extra = {k: v for k, v in body.items() if k not in BUDGET_KEYWORDS}
    counted = count_prompt(messages, model=info, **extra)
    request = count_request(messages, info, max_tokens=max_tokens, **extra)
    # The guard's own rule: what it adds to the count before holding the request.
    unseen = unseen_prompt_allowance(info, request.prompt_tokens, request.raw_prompt_tokens)
    total = request.total + unseen
    limits = info.starting_limits(tier)  # as the guard's limiter starts
    tpm = limits.tpm if limits is not None else None
    tpm_tier = tier if info.tier_limits(tier) is not None else "free"
    return CountResult(
        source=source,
        model=info.name,
        prompt_tokens=counted.total,
        template_overhead=counted.overhead,
        tools_tokens=counted.tools,
        messages=len(counted.messages),
        exact=counted.exact,
        max_tokens=max_tokens,
        reserve=request.completion_reserve,
        unseen_prompt_allowance=unseen,
        total=total,
        context_window=info.context_window,
        tier=tier,
        tpm_tier=tpm_tier,
        tpm=tpm,
        over_context=max(0, request.total - info.context_window),
        over_tpm=None if tpm is None else max(0, total - tpm),
        refused=request.refusal(tpm) if tpm is not None else None,
    )


def _split(data: Any, source: str) -> tuple[Any, dict[str, Any]]:
    """``(messages, the rest of the body)`` of a messages list or a request body."""
    if isinstance(data, list):
        return data, {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{source}: expected a list of messages or a request body "
            f'({{"model": ..., "messages": [...]}}), got {json_kind(data)}'
        )
    if "messages" not in data:
        raise UsageError(
            f"{source}: a request body needs a 'messages' list "
            f"(found keys: {', '.join(sorted(map(str, data))) or 'none'})"
        )
    body = dict(data)
    return body.pop("messages"), body


def _body_model(value: object, source: str) -> str | None:
    """The body's ``model`` checked by the guard's own rule; ``None`` when not given."""
    from .._guard._request import check_model
    from ..errors import ConfigurationError

    if value is None:
        return None
    try:
        return check_model(value, source)
    except ConfigurationError:
        # The guard's message tells a caller to pass model=...; a file needs its own words.
        raise UsageError(
            f"{source}: model must be a model name (a non-empty string), got {json_kind(value)}"
        ) from None


def _body_max_tokens(body: dict[str, Any], source: str) -> int | None:
    """The body's completion cap checked by the guard's own rule (an int >= 1;
    ``max_completion_tokens`` over ``max_tokens``), the error naming the field the file
    used; ``None`` when neither is given."""
    from .._guard._request import asked_max_tokens
    from ..errors import InvalidRequest

    try:
        return asked_max_tokens(body)
    except InvalidRequest as exc:
        raise UsageError(
            f"{source}: {exc.field} must be an integer >= 1 or null, "
            f"got {json_kind(body[exc.field])}"
        ) from None


def _describe(r: CountResult) -> list[str]:
    unseen = r.unseen_prompt_allowance
    if r.exact:
        kind = "exact"
    elif unseen:
        # Conservative for what is sent, far below what the server's tools add to it.
        kind = "estimate of what is sent"
    else:
        kind = "conservative estimate"
    lines = [
        f"{r.source}: {r.prompt_tokens:,} prompt tokens ({kind}) for {r.model}: "
        f"{r.messages} message{'s' * (r.messages != 1)}, template overhead {r.template_overhead}"
        + (f", tools {r.tools_tokens}" if r.tools_tokens else "")
    ]
    if unseen:
        lines.append(
            f"  + {unseen:,} tokens the guard reserves for prompt text the server's tools add "
            "unseen (ModelInfo.unseen_prompt_tokens; see docs/compound.md)"
        )
    requested = "tokens the guard reserves" if unseen else "tokens requested"
    if r.max_tokens is not None:
        lines.append(f"  with max_tokens={r.max_tokens}: {r.total:,} {requested}")
    else:
        lines.append(
            f"  no max_tokens given: the server reserves {r.reserve:,} completion tokens, "
            f"{r.total:,} {requested}"
        )
    lines.append(_context_line(r))
    lines.append(_tpm_line(r))
    return lines


def _context_line(r: CountResult) -> str:
    if r.over_context:
        return (
            f"  does NOT fit the context window of {r.context_window:,}: "
            f"{r.over_context:,} tokens too many"
        )
    spare = r.context_window - (r.total - r.unseen_prompt_allowance)
    tools = ", before the tools' text" if r.unseen_prompt_allowance else ""
    return f"  fits the context window of {r.context_window:,} ({spare:,} tokens to spare{tools})"


def _tpm_line(r: CountResult) -> str:
    if r.tpm is None or r.over_tpm is None:
        return "  per-minute token limit: not known for this model"
    if r.refused is not None:
        return (
            f"  refused: {r.refused}: does NOT fit the limit of {r.tpm:,} tokens per minute: "
            f"{r.over_tpm:,} too many (Groq answers {r.refused} whatever the wait)"
        )
    if r.over_tpm:
        # Within the limit for the server, but not with the allowance the guard holds.
        return (
            f"  does NOT fit the limit of {r.tpm:,} tokens per minute with the allowance: "
            f"{r.over_tpm:,} too many (the guard could never admit it)"
        )
    whose = (
        f"the {r.tier} tier"
        if r.tpm_tier == r.tier
        else (f"the {r.tpm_tier} tier's: the {r.tier} tier's is not published")
    )
    return f"  fits the limit of {r.tpm:,} tokens per minute ({whose})"


def _documents(text: str, name: str) -> list[tuple[str, Any]]:
    """The requests of a file: ``(source, parsed JSON)`` for one JSON document, else for
    each non-blank line of JSON Lines (``source`` then names the line)."""
    if not text.strip():
        found = "empty" if not text else "only blank lines"
        raise UsageError(
            f"{name} has no request: it is {found}; expected a JSON messages list, a "
            "request body, or JSON Lines of them"
        )
    try:
        return [(name, _loads(text, name))]
    except json.JSONDecodeError as whole:
        items: list[tuple[str, Any]] = []
        # Newlines only: read_input gives every line ending as "\n", and str.splitlines
        # would also split a JSON string at a U+2028 written into it.
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"{name}:{number}", _loads(line, f"{name}, line {number}")))
            except json.JSONDecodeError as exc:
                if not items:
                    # Not even the first line is JSON: the file is one broken document
                    # (a pretty-printed body, say), and the whole text's error is the one.
                    raise UsageError(f"{name} is not JSON: {_whole_error(whole, text)}") from None
                raise UsageError(
                    f"{name}, line {number}: not JSON ({exc.msg} at column {exc.colno})"
                ) from None
        return items


def _loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError(f"{where}: not JSON this program can read (nested too deeply)") from None


def _whole_error(exc: json.JSONDecodeError, text: str) -> str:
    """Where a document's JSON error is: at the end of its text, the last line that
    has any (not the line after a final newline, which the decoder counts)."""
    end = len(text.rstrip())
    if exc.pos >= end:
        return f"{exc.msg} at the end of the text (line {text.count(chr(10), 0, end) + 1})"
    return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"


def count_command(
    file: str,
    *,
    model: str | None,
    max_tokens: int | None,
    as_json: bool,
    out: TextIO,
    tier: str | None = None,
) -> int:
    """Run ``tokenguard count``; returns the exit status (1 when a request does not fit).
    ``tier``: the account's (``None``: ``$TOKENGUARD_TIER``, else ``"free"``)."""
    from .. import TokenGuardError
    from .._guard._options import read_tier

    try:
        tier_name = str(read_tier(tier))
    except TokenGuardError as exc:
        raise UsageError(str(exc)) from exc

    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be a positive integer, got {max_tokens}")
    name = "<stdin>" if file == "-" else file
    items = _documents(read_input(file), name)
    results: list[CountResult] = []
    for source, data in items:
        try:
            results.append(
                count_one(data, source=source, model=model, max_tokens=max_tokens, tier=tier_name)
            )
        except TokenGuardError as exc:
            raise UsageError(f"{source}: {exc}") from exc
    if as_json:
        docs = [dict(asdict(r), fits=r.fits) for r in results]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2), file=out)
    else:
        for r in results:
            print("\n".join(_describe(r)), file=out)
        if len(results) > 1:
            bad = sum(1 for r in results if not r.fits)
            print(f"{len(results)} requests, {bad} do not fit", file=out)
    return EXIT_OK if all(r.fits for r in results) else EXIT_DOES_NOT_FIT
