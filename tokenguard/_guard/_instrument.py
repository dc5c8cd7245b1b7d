"""``tg.instrument(client)``: every ``chat.completions.create`` of a client (and the openai
SDK's ``parse``, its structured outputs) goes through the guard, with the server's
headers read from every response and every error.

The client's ``chat.completions`` resource gets a guarded ``create`` of its own (the
class is not touched, so other clients are not); ``with_raw_response`` and
``with_streaming_response`` are rebuilt on it, so they are guarded too, and so are the
clients its ``copy`` and ``with_options`` make. The guard sends
through a copy of the client with ``max_retries=0`` (made again when the client's
``api_key`` or ``base_url`` is set later) and asks for the raw response, so
it reads the ``x-ratelimit-*`` headers of each answer and owns every retry: 429s wait
as the server says (the SDK would retry after at most 60 s and hammer a TPD limit),
and 5xx, connection errors and timeouts are retried as often as the client's own
``max_retries`` says, with the SDK's backoff.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from .._drive import run_async, run_sync
from ..errors import ConfigurationError
from ..fitting import ClientSummarizer
from ._fallback import fallback_plan
from ._options import GuardOptions, InstrumentKwargs, make_options
from ._pipeline import call_plan
from ._registry import normalize_base_url
from ._request import capped_extra, format_as_sent, read_body
from ._site import Guard

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["instrument", "is_instrumented", "uninstrument"]

C = TypeVar("C")

_RAW_HEADER = "X-Stainless-Raw-Response"
_MARK = "_tokenguard_guard"
_CACHED = ("with_raw_response", "with_streaming_response")
#: The resource's methods that send a chat request, guarded when the SDK has them.
_METHODS = ("create", "parse")


def _completions(client: Any) -> Any:
    comp = getattr(getattr(client, "chat", None), "completions", None)
    if comp is None or not callable(getattr(type(comp), "create", None)):
        raise ConfigurationError(
            "tg.instrument needs an openai or groq client (OpenAI, AsyncOpenAI, Groq, "
            f"AsyncGroq) with chat.completions.create, got {type(client).__name__}"
        )
    return comp


def _base_url(client: Any) -> str:
    base = str(getattr(client, "base_url", "") or "")
    # The groq SDK's base URL is the host; its paths start with /openai/v1.
    if type(client).__module__.split(".")[0] == "groq":
        base = base.rstrip("/") + "/openai/v1"
    return normalize_base_url(base or None)


def _account(client: Any) -> str:
    """Which account the client's calls spend (a digest of its API key, never the key):
    limits are per organisation, so clients with different keys learn their own."""
    key = _key_of(client)
    if not isinstance(key, str) or not key:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _raw_mode(kwargs: Mapping[str, Any]) -> str | None:
    headers = kwargs.get("extra_headers")
    if headers is None or not isinstance(headers, Mapping):
        return None
    for name, value in headers.items():
        if isinstance(name, str) and name.lower() == _RAW_HEADER.lower():
            return str(value)
    return None


def _window_of(model: Any) -> int | None:
    value = getattr(model, "context_window", None)
    if value is None:
        extra = getattr(model, "model_extra", None)
        if isinstance(extra, Mapping):
            value = extra.get("context_window")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _ClientSender:
    """Sends one body through the quiet (no-retry) client's ``method`` (``create``, or
    ``parse`` for structured outputs), asking for the raw response."""

    __slots__ = ("_asked", "_body", "_method", "_mode", "_quiet", "raw_internal", "site")

    def __init__(
        self,
        quiet: Any,
        body: dict[str, Any],
        req_max: int | None,
        site: str,
        method: str = "create",
    ) -> None:
        self._quiet = quiet
        self._method = method
        self._body = body
        self._asked = req_max
        self.site = site
        # The caller asked for the raw response itself only with with_raw_response.
        mode = None if "extra_headers" not in body else _raw_mode(body)
        self.raw_internal = mode is None
        self._mode = mode

    def _prepared(self, messages: list[Any], max_tokens: int | None) -> dict[str, Any]:
        body = dict(self._body)
        body["messages"] = messages
        if max_tokens is not None and max_tokens != self._asked:
            name = "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
            body[name] = max_tokens
            if "extra_body" in body:  # merged over the body by the SDK: set there too
                body["extra_body"] = capped_extra(body["extra_body"], max_tokens)
        if self._mode is None:
            extra = body.get("extra_headers")
            body["extra_headers"] = {**extra, _RAW_HEADER: "raw"} if extra else {_RAW_HEADER: "raw"}
        return body

    def send(self, messages: list[Any], max_tokens: int | None) -> Any:
        send = getattr(self._quiet.chat.completions, self._method)
        return send(**self._prepared(messages, max_tokens))

    def send_async(self, messages: list[Any], max_tokens: int | None) -> Awaitable[Any]:
        # The SDK's own coroutine, awaited by the runner: no coroutine of ours around it.
        send = getattr(self._quiet.chat.completions, self._method)
        return send(**self._prepared(messages, max_tokens))  # type: ignore[no-any-return]

    def context_window(self, model: str) -> int | None:
        try:
            return _window_of(self._quiet.models.retrieve(model))
        except Exception:
            return None  # the error said too little and the endpoint did not answer

    async def context_window_async(self, model: str) -> int | None:
        try:
            return _window_of(await self._quiet.models.retrieve(model))
        except Exception:
            return None

    def for_model(self, model: str) -> _ClientSender:
        body = {**self._body, "model": model}
        return _ClientSender(self._quiet, body, self._asked, self.site, self._method)


def _as_sent(body: dict[str, Any]) -> dict[str, Any]:
    """A call's body as the SDK sends it, for counting (see :func:`format_as_sent`)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, type):
        return body
    return {**body, "response_format": format_as_sent(fmt)}


def _is_async(comp: Any) -> bool:
    # The SDKs wrap ``create`` in decorators that hide that it is a coroutine function.
    create = type(comp).create
    return inspect.iscoroutinefunction(inspect.unwrap(create)) or type(comp).__name__.startswith(
        "Async"
    )


def _key_of(client: Any) -> Any:
    return getattr(client, "api_key", None)


def _endpoint_of(client: Any) -> Any:
    return getattr(client, "base_url", None)


class _Bound(NamedTuple):
    """What a guarded create sends with: the client's retry-less copy and the guard, for
    the ``api_key`` and ``base_url`` the client had when they were made."""

    key: Any
    base: Any
    quiet: Any
    guard: Guard


def _bind(client: Any, comp: Any, opts: GuardOptions, site: str) -> _Bound:
    quiet = type(client).copy(client, max_retries=0)  # the SDK's own copy: not guarded
    retries = getattr(client, "max_retries", 0)
    g = Guard(
        opts=opts,
        base_url=_base_url(client),
        account=_account(client),
        site=site,
        summarizer=opts.summarizer,
        transient_retries=retries if isinstance(retries, int) and retries > 0 else 0,
        client=quiet,
    )
    if opts.on_overflow == "summarize" and opts.summarizer is None:
        # The summary request goes through the client's create as it is when summarizing
        # (guarded, and wrapped by whatever wraps it): counted, limited, logged.
        g.summarizer = ClientSummarizer(create=lambda **request: comp.create(**request))
    return _Bound(_key_of(client), _endpoint_of(client), quiet, g)


def _install(client: Any, comp: Any, opts: GuardOptions) -> None:
    site = f"{type(client).__name__}.chat.completions.create"
    bound = _bind(client, comp, opts, site)
    model = opts.model
    plan = call_plan if opts.fallback is None else fallback_plan  # decided once

    def current() -> _Bound:
        """The copy and guard for the client's key and endpoint: made again when one was
        set since (a key rotated), in place, so a create another layer wrapped keeps
        its wrapper."""
        nonlocal bound
        if _key_of(client) is not bound.key or _endpoint_of(client) is not bound.base:
            bound = _bind(client, comp, opts, site)
            setattr(comp, _MARK, bound.guard)
        return bound

    def read(quiet: Any, kwargs: dict[str, Any], method: str) -> tuple[Any, _ClientSender]:
        req = read_body(_as_sent(kwargs), default_model=model, where=site)
        if model is not None and "model" not in kwargs:  # the guard's model= in the body
            kwargs = {**kwargs, "model": model}
        return req, _ClientSender(quiet, kwargs, req.max_tokens, site, method)

    def guarded(method: str) -> Any:
        """``method`` of the resource, through the guard."""
        if _is_async(comp):

            async def call_async(**kwargs: Any) -> Any:
                b = current()
                req, sender = read(b.quiet, kwargs, method)
                return await run_async(plan(b.guard, req, sender))

            return call_async

        def call(**kwargs: Any) -> Any:
            b = current()
            req, sender = read(b.quiet, kwargs, method)
            return run_sync(plan(b.guard, req, sender))

        return call

    for name in _CACHED:
        comp.__dict__.pop(name, None)  # rebuilt on the guarded methods when next used
    for method in _METHODS:
        sdk = getattr(type(comp), method, None)
        if callable(sdk):  # parse: the openai SDK's structured outputs (not groq's)
            fn = guarded(method)
            fn.__doc__ = sdk.__doc__
            fn.__wrapped__ = sdk.__get__(comp)
            setattr(comp, method, fn)
    setattr(comp, _MARK, bound.guard)
    _guard_copies(client, opts)


def _guard_copies(client: Any, opts: GuardOptions) -> None:
    """The client's ``copy`` and ``with_options`` (how a call sets its own timeout or
    retries) give clients guarded with the same options, as this one is."""

    def copy(*args: Any, **kwargs: Any) -> Any:
        other = type(client).copy(client, *args, **kwargs)
        _install(other, _completions(other), opts)
        return other

    copy.__doc__ = type(client).copy.__doc__
    client.copy = client.with_options = copy


def instrument(client: C, /, **options: Unpack[InstrumentKwargs]) -> C:
    """Guard every ``chat.completions.create`` of ``client`` (``openai.OpenAI``,
    ``openai.AsyncOpenAI``, ``groq.Groq``, ``groq.AsyncGroq``); returns the same client.

    Plain calls, ``with_raw_response``, ``stream=True`` and the openai SDK's
    ``chat.completions.parse`` (a ``response_format`` model counted as the JSON schema the
    SDK sends) all go through the pipeline,
    and the ``x-ratelimit-*`` headers of every response and every error are given to the
    limiter. The options (keyword-only, typed by :class:`~tokenguard.InstrumentKwargs`)
    are those of :func:`~tokenguard.guard` but ``messages_arg`` and ``model_arg``; without
    ``on_overflow="summarize"``'s ``summarizer=`` the summaries are written by this
    client, through this guard. Instrumenting again replaces the options;
    :func:`uninstrument` undoes it.

    The guard takes over the SDK's retries (see the module): set ``max_retries`` on the
    client as before; it now counts the guard's retries of 5xx, connection errors and
    timeouts, while 429s are always waited out as the server says (``max_wait``,
    ``retries`` bound them).

    Example::

        client = tg.instrument(OpenAI(base_url="https://api.groq.com/openai/v1",
                                      api_key=os.environ["GROQ_API_KEY"]), max_wait=60)
        client.chat.completions.create(model="llama-3.1-8b-instant", messages=history)
    """
    comp = _completions(client)
    opts = make_options(**options)
    if getattr(comp, _MARK, None) is not None:
        uninstrument(client)
    _install(client, comp, opts)
    return client


def uninstrument(client: C, /) -> C:
    """Undo :func:`instrument` (nothing happens to a client that is not instrumented).

    Example::

        tg.uninstrument(client)
    """
    comp = _completions(client)
    if getattr(comp, _MARK, None) is None:
        return client
    for name in (*_METHODS, _MARK, *_CACHED):
        comp.__dict__.pop(name, None)
    for name in ("copy", "with_options"):
        client.__dict__.pop(name, None)
    return client


def is_instrumented(client: Any) -> bool:
    """Whether ``client``'s chat completions go through the guard.

    Example::

        from tokenguard import is_instrumented
        assert is_instrumented(tg.instrument(client))
    """
    return getattr(_completions(client), _MARK, None) is not None
