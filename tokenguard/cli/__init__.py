"""The ``tokenguard`` command: ``demo`` (the main job), ``count`` and ``report``.

Exit status: 0 when all went as asked; 1 when a request does not fit (``count``), a
refusal reached a caller or the server could not be used (``demo``); 2 for a wrong
command line or an unreadable input file; 130 after Ctrl-C.

Example::

    tokenguard demo
    tokenguard count request.json --model llama3-8b-8192 --max-tokens 512
    tokenguard report events.jsonl --plot tokens.png
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._common import EXIT_USAGE, UsageError

__all__ = ["main"]

_DEMO_EXAMPLES = """\
examples:
  tokenguard demo                      # the embedded emulator, a 5 s "minute" (~1 minute)
  tokenguard demo --window 60          # real time (about 12 minutes)
  tokenguard demo --plain > demo.txt   # plain lines instead of the live display
  GROQ_API_KEY=gsk_... tokenguard demo # the same script against Groq itself
"""

_COUNT_EXAMPLES = """\
examples:
  tokenguard count request.json --model llama3-8b-8192 --max-tokens 512
  echo '[{"role": "user", "content": "Hi"}]' | tokenguard count - --json
  tokenguard count requests.jsonl      # one messages list or request body per line

exit status: 0 every request fits, 1 one does not, 2 the file is wrong.
"""

_REPORT_EXAMPLES = """\
examples:
  tokenguard report /tmp/tokenguard-demo-....jsonl
  tokenguard report events.jsonl --plot tokens.png   # needs: pip install 'groq-tokenguard[plot]'
  tokenguard report events.jsonl --plot tokens.svg   # or .pdf, .jpg, ...: as the extension says
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text!r}")
    return value


_RAW = argparse.RawDescriptionHelpFormatter


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokenguard`` command."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="tokenguard",
        description="Count, fit, rate-limit and log chat requests sent to Groq.",
        epilog="examples:\n  tokenguard demo\n  tokenguard count request.json\n"
        "  tokenguard report events.jsonl --plot tokens.png",
        formatter_class=_RAW,
    )
    parser.add_argument("--version", action="version", version=f"tokenguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_count(sub)
    _add_report(sub)
    return parser


# argparse has no public name for the object add_subparsers returns.
_Subparsers = argparse._SubParsersAction


def _add_demo(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="watch the guard at work on one shared limit (emulator, or Groq with GROQ_API_KEY)",
        description="A scripted conversation that outgrows its room (truncated, then "
        "summarized) and a burst of parallel requests beside an unguarded client, all "
        "through @tg.guard and tg.instrument on one limit. Runs on the embedded Groq "
        "emulator, or against Groq when GROQ_API_KEY is set.",
        epilog=_DEMO_EXAMPLES,
        formatter_class=_RAW,
    )
    demo.add_argument(
        "--model",
        default=None,
        help="model (default: llama3-8b-8192 on the emulator, llama-3.1-8b-instant on Groq)",
    )
    demo.add_argument(
        "--window",
        type=_positive_float,
        default=None,
        help="length of the rate 'minute' in seconds (default: 5 on the emulator, 60 on Groq)",
    )
    _add_demo_limits(demo)
    demo.add_argument(
        "--burst", type=_positive_int, default=12, help="parallel requests in act 3 (default 12)"
    )
    demo.add_argument(
        "--port", type=_port, default=0, help="the emulator's port (default 0: a free one)"
    )
    demo.add_argument(
        "--events",
        default=None,
        metavar="PATH",
        help="where to write the JSONL event log (default: a new temp file)",
    )
    demo.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="another OpenAI-compatible server instead of the embedded emulator (e.g. "
        "`python -m tokenguard.emulator` run elsewhere); the key is GROQ_API_KEY's, if set",
    )
    demo.add_argument(
        "--plain",
        action="store_true",
        help="plain lines, no live display (also when not on a terminal, or CI)",
    )


def _add_demo_limits(demo: argparse.ArgumentParser) -> None:
    """The demo's limits: the emulator's, or the model table's on Groq."""
    demo.add_argument(
        "--tpm",
        type=_positive_int,
        default=None,
        help="tokens per window (emulator default 6000; Groq: the model table's)",
    )
    demo.add_argument(
        "--rpm",
        type=_positive_int,
        default=None,
        help="requests per window (emulator default 30; Groq: the model table's)",
    )
    demo.add_argument(
        "--context-window",
        type=_positive_int,
        default=None,
        help="the emulator's context window (default: the model's, 8192 for llama3-8b-8192)",
    )


def _add_count(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    count = sub.add_parser(
        "count",
        help="count a request's tokens and check it fits the model's limits",
        description="FILE (or - for stdin) holds a JSON messages list, a chat.completions "
        "request body, or JSON Lines of either. Prints the prompt tokens, the template "
        "overhead, whether the count is exact, and whether the request fits the model's "
        "context window and per-minute token limit (and by how much it does not).",
        epilog=_COUNT_EXAMPLES,
        formatter_class=_RAW,
    )
    count.add_argument("file", metavar="FILE", help="JSON or JSONL file; - for stdin")
    count.add_argument(
        "--model", default=None, help="model (default: the body's model, else llama-3.1-8b-instant)"
    )
    count.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=None,
        help="completion tokens to reserve (default: the body's max_tokens)",
    )
    count.add_argument(
        "--tier",
        choices=("free", "developer"),
        default=None,
        help="the account's tier, whose per-minute limit is checked (default: "
        "$TOKENGUARD_TIER, else free)",
    )
    count.add_argument("--json", action="store_true", help="machine-readable output")


def _add_report(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report",
        help="per-model totals from a JSONL log of tokenguard events, and a plot",
        description="Reads tokenguard's events (one JSON object per line, as `tokenguard "
        "demo` and tg.sinks.JsonlSink write them) and prints per-model totals: calls, "
        "tokens in and out, pre-flight count against the server's, time waited (p50/p99), "
        "fits, summaries, retries and refusals. Lines that are not tokenguard events are "
        "skipped and counted; malformed lines are reported with their line numbers.",
        epilog=_REPORT_EXAMPLES,
        formatter_class=_RAW,
    )
    report.add_argument("log", metavar="LOG", help="JSONL file of events; - for stdin")
    report.add_argument(
        "--plot",
        metavar="OUT.png",
        default=None,
        help="draw the rate-limit bucket through the calls (as the server enforces it), "
        "waits and 429s, in the format the extension names (.png, .svg, .pdf, ...)",
    )
    report.add_argument(
        "--window",
        type=_positive_float,
        default=None,
        help="the bucket's refill period in seconds (default: the log's limits line, else 60)",
    )
    report.add_argument(
        "--tpm",
        type=_positive_int,
        default=None,
        help="the bucket's size in tokens (default: the log's limits line, else the model table's)",
    )
    report.add_argument("--json", action="store_true", help="machine-readable output")


def _plain_output() -> bool:
    stream = sys.stdout
    return not stream.isatty() or bool(os.environ.get("CI")) or os.environ.get("TERM") == "dumb"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tokenguard`` command; returns the exit status.

    Example::

        raise SystemExit(main(["count", "request.json"]))
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "count":
            from ._count import count_command

            return count_command(
                args.file,
                model=args.model,
                max_tokens=args.max_tokens,
                as_json=args.json,
                out=sys.stdout,
                tier=args.tier,
            )
        from ._report import report_command

        return report_command(
            args.log,
            plot=args.plot,
            window=args.window,
            tpm=args.tpm,
            as_json=args.json,
            out=sys.stdout,
        )
    except UsageError as exc:
        print(f"tokenguard {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tokenguard {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tokenguard report ... | head`: the reader left; nothing to say.
        return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import (
        EMULATOR_MODEL,
        GROQ_BASE_URL,
        GROQ_MODEL,
        DemoSettings,
        default_events_path,
        demo_command,
    )

    key = os.environ.get("GROQ_API_KEY", "").strip()
    remote = bool(key)
    if args.base_url is not None:
        remote = False
    if remote:
        if args.context_window is not None or args.port != 0:
            raise UsageError("--context-window and --port are for the emulator; unset GROQ_API_KEY")
        model = args.model or GROQ_MODEL
        window = args.window or 60.0
        tpm, rpm = args.tpm, args.rpm
    else:
        model = args.model or EMULATOR_MODEL
        window = args.window or 5.0
        tpm = args.tpm or 6000
        rpm = args.rpm or 30
    settings = DemoSettings(
        model=model,
        base_url=GROQ_BASE_URL if remote else args.base_url,
        api_key=key or "emulator",
        remote=remote,
        window=window,
        tpm=tpm,
        rpm=rpm,
        context_window=args.context_window,
        port=args.port,
        burst=args.burst,
        plain=args.plain or _plain_output(),
        events_path=args.events or default_events_path(),
    )
    return demo_command(settings, sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
