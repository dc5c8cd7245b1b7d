"""``python -m tokenguard.emulator``: serve the Groq emulator until SIGINT/SIGTERM.

Prints the base URL (``http://127.0.0.1:PORT/openai/v1``) on one flushed line, then serves.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from ._config import DEFAULT_MAX_TOKENS, EmulatorConfig, build_models
from ._server import Emulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tokenguard.emulator",
        description="A local Groq server (OpenAI-compatible) with Groq's limits and errors.",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free port)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="model to serve (repeatable; default llama3-8b-8192)",
    )
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute (0: no limit)")
    p.add_argument("--rpm", type=int, default=None, help="requests per minute (0: no limit)")
    p.add_argument("--tpd", type=int, default=None, help="tokens per day (0: no limit)")
    p.add_argument("--rpd", type=int, default=None, help="requests per day (0: no limit)")
    p.add_argument("--window", type=float, default=60.0, help="seconds in a rate minute")
    p.add_argument("--context-window", type=int, default=None, help="override context window")
    p.add_argument("--completion-tokens", type=int, default=16, help="tokens per completion")
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help="completion reservation when a request gives no max_tokens",
    )
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    p.add_argument("--refund-unused", action="store_true", help="refund unused reservations")
    p.add_argument("--log", default=None, help="append one JSON line per request to this file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = EmulatorConfig(
            models=build_models(
                args.model,
                None,
                tpm=args.tpm,
                rpm=args.rpm,
                tpd=args.tpd,
                rpd=args.rpd,
                context_window=args.context_window,
            ),
            window=args.window,
            completion_tokens=args.completion_tokens,
            latency=args.latency,
            refund_unused=args.refund_unused,
            default_max_tokens=args.default_max_tokens,
            log_path=args.log,
            # A long-running server keeps a bounded log in memory; the file has everything.
            log_limit=100_000,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        em = Emulator(config).start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(em.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        em.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
