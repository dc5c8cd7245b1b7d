"""``@tg.guard``: the pipeline around a function that sends one chat request.

The function's arguments are bound to its signature to find the messages, the model
and ``max_tokens``/``max_completion_tokens``; the fitted messages (and an opted-in
``max_tokens``) replace them in the call. Whether the function is a coroutine function
is decided once, when it is decorated (wrapt serves functions, methods, classmethods
and staticmethods with one wrapper); the pipeline itself is one plan for both.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import wrapt

from .._drive import run_async, run_sync
from ..counting._request_options import BUDGET_KEYWORDS, PROMPT_KEYWORDS
from ..counting._sendable import check_text_field
from ..errors import ConfigurationError, InvalidMessages
from ._fallback import fallback_plan
from ._options import GuardKwargs, GuardOptions, make_options
from ._pipeline import call_plan
from ._registry import normalize_base_url
from ._request import (
    ChatRequest,
    asked_max_tokens,
    capped_extra,
    format_as_sent,
    given,
    plain_request,
)
from ._site import Guard

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["guard"]

F = TypeVar("F", bound=Callable[..., Any])

#: The keywords that change the prompt the server bills, as counting defines them.
_COUNTED = tuple(sorted(PROMPT_KEYWORDS))


class _Binding:
    """Where a function keeps its messages, model and completion budget."""

    def __init__(self, fn: Callable[..., Any], opts: GuardOptions, where: str) -> None:
        self.signature = inspect.signature(fn)
        params = self.signature.parameters
        self.var_kw = next(
            (p.name for p in params.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
        )
        self.opts = opts
        self.where = where
        if opts.messages_arg not in params and self.var_kw is None:
            raise ConfigurationError(
                f"{where} has no parameter {opts.messages_arg!r} (nor **kwargs) to take the "
                f"messages; name it with @tg.guard(messages_arg=...). Parameters: "
                f"{list(params)}"
            )
        if (
            opts.cap_max_tokens is not None
            and self.var_kw is None
            and not any(n in params for n in BUDGET_KEYWORDS)
        ):
            raise ConfigurationError(
                f"{where} takes no max_tokens (nor **kwargs): cap_max_tokens cannot pass one"
            )
        if opts.fallback and opts.model_arg not in params and self.var_kw is None:
            raise ConfigurationError(
                f"{where} has no parameter {opts.model_arg!r} (nor **kwargs): fallback= "
                f"cannot send its calls to {list(opts.fallback)}; name the parameter that "
                "takes the model with @tg.guard(model_arg=...)"
            )
        self._prepare()

    def _prepare(self) -> None:
        params = self.signature.parameters.values()
        kinds = inspect.Parameter
        self.positional = [
            p.name for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ]
        self.index = {name: i for i, name in enumerate(self.positional)}
        self.named = {
            p.name for p in params if p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        }
        self.var_pos = any(p.kind is kinds.VAR_POSITIONAL for p in params)
        self.defaults = {p.name: p.default for p in params if p.default is not p.empty}
        # The prompt keywords this function can receive at all: usually none, and then
        # no call looks for them.
        self.counted = tuple(n for n in _COUNTED if n in self.named or self.var_kw is not None)

    def _view(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Each argument by name, defaults applied, ``**kwargs`` entries flattened in: what
        ``Signature.bind`` gives, at a fraction of its cost on every call."""
        odd = len(args) > len(self.positional) and not self.var_pos
        for name in kwargs:
            at = self.index.get(name)
            if (at is not None and at < len(args)) or (
                name not in self.named and self.var_kw is None
            ):
                odd = True
        if odd:
            try:
                self.signature.bind(*args, **kwargs)
            except TypeError as exc:  # what the function itself would raise
                raise TypeError(f"{self.where}: {exc}") from None
        view = dict(self.defaults)
        view.update(zip(self.positional, args, strict=False))  # extra args: *args
        view.update(kwargs)
        return view

    def read(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ChatRequest:
        a = self._view(args, kwargs)
        messages = a.get(self.opts.messages_arg)
        if type(messages) is not list:  # a plain list needs none of these checks
            messages = self._messages(messages)
        elif not messages:
            raise InvalidMessages(f"{self.where}: {self.opts.messages_arg!r} is empty")
        model = a.get(self.opts.model_arg)
        if type(model) is not str or not model or not model.isascii():
            model = given(model) or self.opts.model
            if not isinstance(model, str) or not model:
                raise ConfigurationError(
                    f"{self.where}: no model: the call gives no {self.opts.model_arg!r} and "
                    f"the guard none (@tg.guard(model=...)); got {model!r}"
                )
            check_text_field(model, self.opts.model_arg)
        asked = a.get("max_tokens")
        if not (
            (asked is None or (type(asked) is int and asked >= 1))
            and a.get("max_completion_tokens") is None
            and a.get("extra_body") is None
        ):  # anything but a plain max_tokens (or none): read and checked in full
            asked = asked_max_tokens(a)
        stream = a.get("stream")
        if not self.counted:  # the usual function: no prompt keywords to look for
            return plain_request(messages, model, asked, stream)
        options = {n: v for n in self.counted if n in a and (v := given(a[n])) is not None}
        if isinstance(options.get("response_format"), type):  # a model for parse
            options["response_format"] = format_as_sent(options["response_format"])
        return ChatRequest(
            messages=messages,
            model=model,
            max_tokens=asked,
            stream=given(stream) is True,
            tools=options.pop("tools", None),
            functions=options.pop("functions", None),
            options=options,
        )

    def _messages(self, messages: Any) -> Any:
        """The checks of messages that are not a plain list (an error, or a tuple)."""
        messages = given(messages)
        if messages is None:
            raise InvalidMessages(
                f"{self.where} was called without {self.opts.messages_arg!r}: the guard needs "
                "the chat messages to count and fit them"
            )
        if isinstance(messages, (str, bytes)) or not isinstance(messages, (list, tuple)):
            raise InvalidMessages(
                f"{self.where}: {self.opts.messages_arg!r} must be a list of chat messages, got "
                f"{type(messages).__name__}"
            )
        if not messages:
            raise InvalidMessages(f"{self.where}: {self.opts.messages_arg!r} is empty")
        return messages

    def call_args(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        messages: list[Any],
        max_tokens: int | None,
        asked: int | None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with the fitted messages (and a changed max_tokens)."""
        out_args = list(args)
        out_kwargs = dict(kwargs)
        self.place(out_args, out_kwargs, self.opts.messages_arg, messages)
        if max_tokens is not None and max_tokens != asked:
            view = self._view(args, kwargs)
            name = next((n for n in BUDGET_KEYWORDS if given(view.get(n)) is not None), None)
            extra = view.get("extra_body")
            capped = capped_extra(extra, max_tokens)
            if capped is not extra:  # merged over the body by the SDK: set there
                self.place(out_args, out_kwargs, "extra_body", capped)
            if name is not None or capped is extra:
                if name is None:
                    name = (
                        "max_tokens"
                        if "max_tokens" in self.named or self.var_kw
                        else "max_completion_tokens"
                    )
                self.place(out_args, out_kwargs, name, max_tokens)
        return tuple(out_args), out_kwargs

    def place(self, args: list[Any], kwargs: dict[str, Any], name: str, value: Any) -> None:
        at = self.index.get(name)
        if at is not None and at < len(args):
            args[at] = value
        else:
            kwargs[name] = value


class _CallSender:
    """Sends by calling the decorated function with the fitted arguments."""

    raw_internal = False

    __slots__ = ("_args", "_asked", "_binding", "_kwargs", "_messages", "_wrapped", "site")

    def __init__(
        self,
        wrapped: Callable[..., Any],
        binding: _Binding,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        req: ChatRequest,
    ) -> None:
        self.site = binding.where
        self._wrapped = wrapped
        self._binding = binding
        self._args = args
        self._kwargs = kwargs
        self._asked = req.max_tokens
        self._messages = req.messages

    def _call_args(
        self, messages: list[Any], max_tokens: int | None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return self._binding.call_args(self._args, self._kwargs, messages, max_tokens, self._asked)

    def send(self, messages: list[Any], max_tokens: int | None) -> Any:
        if messages is self._messages and (max_tokens is None or max_tokens == self._asked):
            return self._wrapped(*self._args, **self._kwargs)  # sent as asked (the usual call)
        args, kwargs = self._call_args(messages, max_tokens)
        return self._wrapped(*args, **kwargs)

    def send_async(self, messages: list[Any], max_tokens: int | None) -> Awaitable[Any]:
        # The function's own coroutine, awaited by the runner: no coroutine of ours around it.
        if messages is self._messages and (max_tokens is None or max_tokens == self._asked):
            return self._wrapped(*self._args, **self._kwargs)  # type: ignore[no-any-return]
        args, kwargs = self._call_args(messages, max_tokens)
        return self._wrapped(*args, **kwargs)  # type: ignore[no-any-return]

    def context_window(self, model: str) -> int | None:
        return None  # a decorated function has no client to ask

    def for_model(self, model: str) -> _CallSender:
        args, kwargs = list(self._args), dict(self._kwargs)
        self._binding.place(args, kwargs, self._binding.opts.model_arg, model)
        other = copy.copy(self)
        other._args, other._kwargs = tuple(args), kwargs
        return other

    async def context_window_async(self, model: str) -> int | None:
        return None


def _target(fn: Any) -> Any:
    return fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn


def _decorate(fn: F, opts: GuardOptions) -> F:
    target = _target(fn)
    where = f"{getattr(target, '__qualname__', repr(target))}()"
    if opts.on_overflow == "summarize" and opts.summarizer is None:
        raise ConfigurationError(
            f"{where}: on_overflow='summarize' needs summarizer= (e.g. "
            "tg.ClientSummarizer(tg.instrument(client))) so that summaries are guarded too"
        )
    plan = call_plan if opts.fallback is None else fallback_plan  # decided once
    bindings: dict[bool, _Binding] = {}
    g = Guard(
        opts=opts,
        base_url=normalize_base_url(opts.base_url),
        site=where,
        summarizer=opts.summarizer,
    )

    def binding_for(wrapped: Any) -> _Binding:
        # A method is bound by the time it is called: its signature lacks ``self``.
        bound_method = hasattr(wrapped, "__self__")
        found = bindings.get(bound_method)
        if found is None:
            found = bindings[bound_method] = _Binding(wrapped, opts, where)
        return found

    # A function that cannot take messages fails here, not at its first call. A plain
    # function is called as decorated (``wrapped is target``): its binding without a lookup.
    plain = bindings[hasattr(target, "__self__")] = _Binding(target, opts, where)

    if inspect.iscoroutinefunction(target):

        @wrapt.decorator
        async def guarded_async(
            wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            binding = plain if wrapped is target else binding_for(wrapped)
            req = binding.read(args, kwargs)
            sender = _CallSender(wrapped, binding, args, kwargs, req)
            return await run_async(plan(g, req, sender))

        return cast(F, guarded_async(fn))

    @wrapt.decorator
    def guarded(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        binding = plain if wrapped is target else binding_for(wrapped)
        req = binding.read(args, kwargs)
        sender = _CallSender(wrapped, binding, args, kwargs, req)
        return run_sync(plan(g, req, sender))

    return cast(F, guarded(fn))


@overload
def guard(fn: F, /) -> F: ...


@overload
def guard(fn: None = None, /, **options: Unpack[GuardKwargs]) -> Callable[[F], F]: ...


def guard(fn: F | None = None, /, **options: Unpack[GuardKwargs]) -> F | Callable[[F], F]:
    """Guard a function that sends one chat request: count, fit, budget, rate-limit,
    retry and log every call. Bare (``@tg.guard``) or with options.

    The function's ``messages`` (``messages_arg=``), ``model`` (``model_arg=``, or fixed
    with ``model=``) and ``max_tokens``/``max_completion_tokens`` are found by binding
    each call's arguments; the fitted messages replace the originals. Sync and async
    functions, methods, classmethods and staticmethods keep their signature, docstring
    and coroutine-ness; a function returning a stream gets a stream that settles when
    it ends.

    Options (keyword-only, typed by :class:`~tokenguard.GuardKwargs`, so a misspelt one
    is a type error): ``limiter`` (a shared :class:`~tokenguard.Limiter`, e.g. on Redis)
    or ``tpm``/``rpm``/``tpd``/``rpd``/``window`` (else the model table's limits, shared
    process-wide per base URL and model; ``base_url`` says which endpoint the function
    talks to, Groq's by default), ``tier``, ``context_window``,
    ``on_overflow`` (``"truncate"``, ``"summarize"`` with ``summarizer=``, ``"error"`` or
    a callable), ``max_wait`` (seconds a call may wait for the rate window and for the
    server's 429s; ``None``: as long as the minute limits take, but a day limit that
    would hold the call longer than the limiter's ``max_day_wait``, 5 minutes, raises
    :class:`~tokenguard.RateLimitTimeout` at once; ``math.inf``: as long as any limit
    takes), ``fallback`` (models to send a call to, in order, when its own would hold it
    past ``max_wait`` or its day limit is spent: refitted for each, with a
    ``tokenguard.guard.fallback`` event; the function needs a model parameter),
    ``retries`` (429 retries, 6 by default; ``None``: until ``max_wait``),
    ``priority`` (``"interactive"``, the default, or ``"batch"``: the calls' class in the
    limiter's queue; a :func:`tokenguard.priority` block wins), ``default_reserve``
    (completion tokens held for a call without ``max_tokens``: 1,024, what the server
    is assumed to hold), ``cap_max_tokens``
    (opt-in: send an explicit ``max_tokens`` of at most that many), ``log_content``,
    ``wait_event_s``, ``clock``/``sleep`` (tests), ``rate_limit=False`` (count, fit and
    budget only).

    Example::

        @tg.guard
        def ask(messages, model="llama-3.1-8b-instant", max_tokens=256):
            return client.chat.completions.create(messages=messages, model=model,
                                                  max_tokens=max_tokens)

        @tg.guard(max_wait=30, on_overflow="error")
        async def ask_async(messages, model="llama-3.1-8b-instant"):
            return await aclient.chat.completions.create(messages=messages, model=model)
    """
    opts = make_options(**options)
    if fn is None:
        return lambda f: _decorate(f, opts)
    if not callable(fn) and not isinstance(fn, (classmethod, staticmethod)):
        raise ConfigurationError(f"@tg.guard decorates a function, got {fn!r}")
    return _decorate(fn, opts)
