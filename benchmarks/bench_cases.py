"""Counts against Groq's bills: every recorded request in ``tests/*cases*.json`` (real
requests with the ``prompt_tokens`` Groq billed), per model family, for tokenguard and
for the counters people use instead.

Run: ``.venv/bin/python benchmarks/bench_cases.py`` (a few seconds). Columns:

* ``tokenguard``: ``tg.count_tokens`` of the request (tools and options included);
* ``tiktoken``: the OpenAI cookbook's ``num_tokens_from_messages`` with ``o200k_base``
  (3 tokens per message, 1 per name, 3 to prime the reply; tools not counted), the
  usual hand-written counter;
* ``litellm``: ``litellm.token_counter(model="groq/<model>", messages=, tools=)`` when
  LiteLLM is installed (``benchmarks/requirements-compare.txt``), else left out.

Each cell: cases, exact, under, over, and the worst error (the largest in size, signed,
in percent of the bill). An under-count is the failure that matters: a limiter admits
what the server refuses. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tokenguard as tg
from tokenguard._tokenizer_data import get_encoding

ROOT = Path(__file__).resolve().parent.parent
#: Keywords that set the completion, not the prompt.
NOT_PROMPT = ("stream", "n", "stream_options", "max_tokens", "max_completion_tokens")


def load_cases() -> list[dict[str, Any]]:
    """Every recorded case once (the files overlap), in file order."""
    seen: set[str] = set()
    cases = []
    for path in sorted((ROOT / "tests").glob("*cases*.json")):
        for case in json.loads(path.read_text(encoding="utf-8")):
            key = json.dumps(case["request"], sort_keys=True)
            if key not in seen:
                seen.add(key)
                cases.append(case)
    return cases


def family(model: str, tools: bool) -> str:
    name = model.split("/")[-1]
    for prefix, label in (
        ("llama-4", "Llama 4"),
        ("llama-3", "Llama 3.x"),
        ("qwen", "Qwen3"),
        ("kimi", "Kimi K2"),
        ("gpt-oss", "gpt-oss"),
        ("compound", "compound"),
    ):
        if name.startswith(prefix):
            return f"{label} + tools" if tools else label
    return name


def ours(body: dict[str, Any]) -> int:
    body = dict(body)
    messages, model = body.pop("messages"), body.pop("model")
    for key in NOT_PROMPT:
        body.pop(key, None)
    return tg.count_tokens(messages, model=model, **body)


def cookbook() -> Callable[[dict[str, Any]], int]:
    enc = get_encoding("o200k_base")

    def count(body: dict[str, Any]) -> int:
        n = 3
        for m in body["messages"]:
            n += 3
            for key, value in m.items():
                if isinstance(value, str):
                    n += len(enc.encode_ordinary(value))
                if key == "name":
                    n += 1
        return n

    return count


def litellm_counter() -> Callable[[dict[str, Any]], int] | None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    try:
        import litellm
    except ImportError:
        return None

    def count(body: dict[str, Any]) -> int:
        return int(
            litellm.token_counter(
                model="groq/" + body["model"], messages=body["messages"], tools=body.get("tools")
            )
        )

    return count


Counter = Callable[[dict[str, Any]], int]


def table(cases: list[dict[str, Any]], counters: dict[str, Counter]) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for case in cases:
        body, billed = case["request"], case["prompt_tokens"]
        fam = family(body["model"], bool(body.get("tools")))
        for name, count in counters.items():
            try:
                error = (count(body) - billed) / billed * 100
            except Exception as exc:  # a counter that cannot read the request at all
                print(f"  {name} failed on a {fam} case: {type(exc).__name__}: {exc}")
                error = float("nan")
            rows.setdefault(fam, {}).setdefault(name, []).append(error)
    names = list(counters)
    print("family".ljust(18) + "".join(f"{n:>36s}" for n in names))
    print(" " * 18 + "".join(f"{'cases exact under over worst':>36s}" for _ in names))
    for fam in sorted(rows):
        line = fam.ljust(18)
        for name in names:
            errs = rows[fam][name]
            failed = sum(1 for e in errs if e != e)
            ok = [e for e in errs if e == e]
            exact = sum(1 for e in ok if e == 0)
            under = sum(1 for e in ok if e < 0)
            over = sum(1 for e in ok if e > 0)
            worst = max(ok, key=abs) if ok else float("nan")
            cell = f"{len(errs)} {exact} {under} {over} {worst:+.1f}%"
            line += f"{cell + (f' ({failed} failed)' if failed else ''):>36s}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only-tokenguard", action="store_true", help="leave the other counters out")
    args = p.parse_args(argv)
    counters: dict[str, Counter] = {"tokenguard": ours}
    if not args.only_tokenguard:
        counters["tiktoken (cookbook, o200k)"] = cookbook()
        lite = litellm_counter()
        if lite is not None:
            counters["litellm"] = lite
    cases = load_cases()
    print(f"{len(cases)} billed requests (tests/*cases*.json)")
    table(cases, counters)


if __name__ == "__main__":
    main()
