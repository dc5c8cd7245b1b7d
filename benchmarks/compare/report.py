"""docs/benchmarks.md and docs/benchmarks-goodput.png from results.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .compaction import CONFIG as COMPACTION
from .tools import ORDER, load
from .workload import (
    COMPLETION,
    CONTEXT,
    LATENCY,
    MAX_TOKENS,
    MODEL,
    RPM,
    TPM,
    conversation_mix,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
PLOT = ROOT / "docs" / "benchmarks-goodput.png"
PLOTTED: list[tuple[str, str | None]] = [  # (module, limiter variant), in panel order
    ("bare", None),
    ("cookbook", None),
    ("litellm_router", None),
    ("langchain_tool", None),
    ("plsno429_tool", None),
    ("tokenguard_guard", None),
    ("tokenguard_instrument", None),
    ("tokenguard_redis", None),
]
FALLBACK = [("openlimit_tool", None), ("llmratelimiter_tool", None)]


def line(row: dict[str, Any]) -> str:
    if "failed" in row:
        return f"{row['tool']:<30} {row['mode']:<9} FAILED {row['failed']}"
    return (
        f"{row['tool']:<30} {row['workers']:<16} refund={'yes' if row['refund'] else 'no ':<3} "
        f"goodput {row['goodput']:.2f} (min {row['goodput_min']:.2f}) 429s {row['s429']:>4} "
        f"413s {row['s413']:>3} errors {sum(row['errors'].values()):>4} "
        f"unfinished {row['unfinished']:>3} ok {row['ok']:>4} "
        f"p50 {row['lat_p50'] * 1e3:7.0f} ms p99 {row['lat_p99'] * 1e3:7.0f} ms"
    )


def _ms(x: float, base: float) -> str:
    return "-" if math.isnan(x) else f"{(x - base) * 1e3:,.0f}"


def _count_cell(counts: list[dict[str, Any]], tool: str) -> str:
    via = ""
    if tool.startswith("tokenguard"):
        tool = "tokenguard @guard"  # one counter, tg.count_tokens, in every mode
    elif tool.startswith("llmratelimiter"):
        tool, via = "cookbook parallel processor", "the caller's count (cl100k here): "
    for c in counts:
        if c["tool"] == tool and c["model"] == MODEL and c.get("median") is not None:
            return f"{via}{c['median']:+.1%}"
    return "does not count"


def _errors(row: dict[str, Any]) -> str:
    n = sum(row["errors"].values())
    if not n:
        return "0"
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(row["errors"].items(), key=lambda kv: -kv[1]))
    return f"{n} ({kinds})"


def rate_table(res: dict[str, Any], refund: bool) -> list[str]:
    base = res["baseline"]["p50"]
    out = [
        "| tool | workers | goodput: charged / limit, mean (min) | useful tokens / limit "
        "| 429s at server | 413s | errors seen by callers | requests lost | served "
        "| added latency p50 / p99 (ms) | pre-flight count error (Llama 3, median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in res["rows"] if r["refund"] == refund]
    for module in ORDER:
        mine = [r for r in rows if r["module"] == module]
        if module in res.get("unavailable", {}):
            name = load(module).NAME
            out.append(f"| {name} | - | not run: {res['unavailable'][module]} ||||||||| ")
            continue
        for r in mine:
            if "failed" in r:
                out.append(f"| {r['tool']} | {r['mode']} | failed: `{r['failed']}` |||||||||")
                continue
            lost = sum(r["errors"].values()) + r["unfinished"]
            hung = f" ({r['unfinished']} still waiting at the end)" if r["unfinished"] else ""
            out.append(
                f"| {r['tool']} | {r['workers']} | {r['goodput']:.2f} ({r['goodput_min']:.2f}) "
                f"| {r['useful']:.2f} | {r['s429']} of {r['server_requests']} | {r['s413']} "
                f"| {_errors(r)} | {lost} of {r['issued']}{hung} | {r['ok']} "
                f"| {_ms(r['lat_p50'], base)} / {_ms(r['lat_p99'], base)} "
                f"| {_count_cell(res.get('counts', []), r['tool'])} |"
            )
    return out


COUNTERS = {  # what each tool counts with, as table 4 names it
    "cookbook parallel processor": "cookbook processor (cl100k_base + 4 per message)",
    "openlimit": "openlimit (`num_tokens_consumed_by_chat_request`)",
    "LiteLLM Router": "LiteLLM (`litellm.token_counter`)",
    "LangChain InMemoryRateLimiter": "LangChain (`count_tokens_approximately`)",
    "plsno429": "plsno429 (`estimate_tokens`: characters / 4)",
    "tokenguard @guard": "tokenguard (`tg.count_tokens`, every mode)",
}


def count_table(res: dict[str, Any]) -> list[str]:
    out = [
        "| tool (its counter) | model | conversations counted | median error | min | max "
        "| under-counts (the server bills more) | conversations it could not count |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in res.get("counts", []):
        c = {**c, "tool": COUNTERS.get(c["tool"], c["tool"])}
        raised = f"{c['raised']} ({', '.join(c['raised_kind'])})" if c.get("raised") else "0"
        if c.get("median") is None:
            out.append(f"| {c['tool']} | {c['model']} | 0 | - | - | - | - | {raised} |")
            continue
        out.append(
            f"| {c['tool']} | {c['model']} | {c['n']} | {c['median']:+.1%} | {c['min']:+.1%} "
            f"| {c['max']:+.1%} | {c['under']} of {c['n']} | {raised} |"
        )
    return out


def plot(res: dict[str, Any]) -> bool:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False

    def has(key: tuple[str, str | None]) -> bool:
        return any((r["module"], r.get("variant")) == key for r in res["rows"])

    panels = [k for k in PLOTTED if has(k)]
    panels += [k for k in FALLBACK if has(k) and k not in panels][: 8 - len(panels)]
    fig, axes = plt.subplots(2, 4, figsize=(14, 6.2), sharex=True, sharey=True)
    for ax, (module, variant) in zip(axes.flat, panels, strict=False):
        name = load(module).NAME
        for refund, style in ((True, "-"), (False, "--")):
            rows = [
                r
                for r in res["rows"]
                if r["module"] == module
                and r.get("variant") == variant
                and r["refund"] == refund
                and "failed" not in r
            ]
            if not rows:
                continue
            r = rows[0]  # the first mode: threads (processes for Redis)
            name = f"{r['tool']} ({r['workers']})"
            ys = [v / TPM for v in r["per_window"]]
            ax.plot(
                range(1, len(ys) + 1),
                ys,
                style,
                marker="o",
                ms=3,
                color="tab:blue" if refund else "tab:orange",
                label="refunding server" if refund else "non-refunding server",
            )
        ax.axhline(1.0, color="black", lw=1)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel(f"window ({res['window']:g} s each)")
    for ax in axes[:, 0]:
        ax.set_ylabel("charged / limit")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Tokens the server charged per window, against the limit (black line)")
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=110)
    return True


def render(res: dict[str, Any]) -> None:
    has_plot = plot(res)
    mix = conversation_mix()
    w = res["window"]
    configs = []
    for module in ORDER:
        tool = load(module)
        configs.append(f"- **{tool.NAME}**: {tool.CONFIG}")
    reruns = "".join(
        f"\n- rows of {', '.join(r['tools'])} re-run on {r['started']} at commit "
        f"{r['tokenguard_commit']} (limiter: {r.get('limiter', '?')}): "
        f"`.venv-bench/bin/{r['command']}`"
        for r in res.get("reruns", [])
    )
    if reruns:  # say plainly that the tables no longer come from one run
        reruns = "\n\nNot all rows come from that run:" + reruns
    changed = res.get("tokenguard_changed_during_run")
    if changed:  # the shared tree moved under the run: say which rows could have seen it
        reruns += (
            "\n\ntokenguard's working tree changed while the run went on ("
            + ", ".join(f"`{f}`" for f in changed)
            + ", not committed at its end). Threads and tasks run in the process that "
            "imported the tree at the start; the spawned processes of the Redis rows "
            "import it when each row starts, so a Redis row run after an edit measured it."
        )
    for note in res.get("notes", []):  # what was checked after the run, by hand
        reruns += "\n\n" + note
    load_avg = res.get("load")
    load_txt = (
        f"load average at the start {load_avg[0]:.2f} / {load_avg[1]:.2f} / {load_avg[2]:.2f} "
        "(1 / 5 / 15 min), "
        if load_avg
        else ""
    )
    lines = [
        "# Benchmarks: tokenguard side by side with what users would pick instead",
        "",
        "One workload, one machine (2 shared cores), one run. Every figure below comes from",
        "`benchmarks/compare/results.json`, written by:",
        "",
        "```",
        "python -m venv .venv-bench && .venv-bench/bin/pip install -e . "
        "-r benchmarks/requirements-compare.txt",
        ".venv-bench/bin/pip install --ignore-requires-python "
        "-r benchmarks/compare/requirements-py311.txt",
        f".venv-bench/bin/{res['command']}",
        "```",
        "",
        f"(run started {res['started']}, tokenguard at commit {res['tokenguard_commit']}, "
        + (f"limiter `algorithm={res['limiter']!r}`, " if "limiter" in res else "")
        + load_txt
        + f"{res.get('elapsed_s', 0) / 60:.0f} minutes{'; --quick' if res.get('quick') else ''})."
        + reruns,
        "",
        "## The workload",
        "",
        f"- The server: tokenguard's emulator (`tokenguard.emulator.running`, real HTTP on "
        f"loopback) with Groq's free-tier limits for `{MODEL}`: TPM {TPM:,}, RPM {RPM}, "
        f'context {CONTEXT:,}; the "minute" scaled to a {w:g} s window, {res["windows"]} '
        f"windows per run; {LATENCY * 1e3:g} ms of latency; {COMPLETION} tokens generated per "
        f"answer with `max_tokens={MAX_TOKENS}`. Groq bills prompt + `max_tokens` at admission; "
        "table 1's server gives the unused part back when the answer ends, table 2's never does.",
        f"- The callers: 8 threads, and separately 32 asyncio tasks (tools with an asyncio API), "
        f"and 4 processes x 2 threads for tokenguard on Redis, each sending conversations back "
        f"to back from one fixed mix of {len(mix)}: three in four short (1-3 turns, 30-150 "
        "tokens), one in four long (1,000-3,500 tokens). Every request fits the context and "
        "the TPM limit, so a perfect client loses nothing.",
        "- Goodput: tokens the server charged per window (from its request log) / the limit, "
        'mean and minimum over the windows but the first and last. "Useful" counts prompt + '
        "completion only (what a non-refunding server charges beyond it is wasted quota). "
        "Errors seen by callers are exceptions the call raised; lost requests are those plus "
        f"calls still waiting {max(10.0, 8 * w):g} s after the run's end. Added latency: "
        "each served call's time (waits for the limit included) minus the bare SDK call's "
        "p50 on an unlimited emulator with the same latency "
        f"({res['baseline']['p50'] * 1e3:.1f} ms).",
        "- Tools that count a minute as 60 s (openlimit, LiteLLM, plsno429) are given the "
        "limits per real minute (`limit x 60 / window`); they cannot follow the refill within "
        "a scaled minute, and that shows in their rows. With Groq's real 60 s minute the "
        "same arithmetic applies to their per-second behaviour (see each note).",
        "",
        "## How each tool is configured",
        "",
        *configs,
        "",
        "## What the tools do, and what that means for the rows",
        "",
        "- The openai SDK alone, LangChain's limiter (requests only) and plsno429 (reactive) "
        "send first and learn from 429s: their goodput can reach the limit, paid for with "
        "429s at the server and, when the SDK's or the decorator's retries run out, errors "
        "in the callers.",
        "- The cookbook processor, openlimit and llmratelimiter count before sending, with "
        "cl100k_base and a 4-token allowance per message (or the caller's count), not the "
        "Llama 3 tokenizer and chat template the server bills with, so their estimates are "
        "off in both directions (table 4). The cookbook processor and openlimit never give "
        "back unused `max_tokens` (against a refunding server that part of the limit stays "
        "unused); llmratelimiter adjusts a request to its real output after the call.",
        "- openlimit's buckets hold one second of refill at most (`limit / 60`): at Groq's "
        "real 6,000 TPM that is 100 tokens, so no request of more than 100 tokens is ever "
        "admitted; here (limits scaled per real minute) the bucket holds `6,000 / window` "
        "tokens, and a request estimated above that waits until the run ends (counted in "
        '"still waiting").',
        "- LiteLLM's Router keeps its usage per clock minute: with the scaled window it may "
        "spend the whole real-minute budget in a burst, and the server answers 429.",
        "- tokenguard counts exactly (table 4), holds each request until the limiter has "
        "room, reconciles with the usage and headers the server returns (unused `max_tokens` "
        "given back when the server refunds them), and waits out any 429 as the server says. "
        "Its rows use the library's defaults: the limiter is the refilling bucket, the mirror "
        "of how Groq counts (a full minute's tokens at most, refilled continuously), which "
        "starts full; `algorithm='window'` (a sliding window, for servers that count one) is "
        "an option, not measured here unless a row is marked [window] (`--tg-algorithm "
        "window`). On Redis the processes are started, and their callers built, before the "
        "start line.",
        "- Goodput is the mean over fixed windows of the run's clock; a limiter that follows a "
        "refilling bucket can charge a little more than the limit in one such window and less "
        "in the next (the server's own bucket allowed it: the 429 column says whether it did).",
        "",
        "## 1. Refunding server (unused `max_tokens` given back)",
        "",
        *rate_table(res, True),
        "",
        "## 2. Server that does not refund unused `max_tokens`",
        "",
        "One mode per tool (threads; processes for tokenguard on Redis; tasks for "
        "asyncio-only tools).",
        "",
        *rate_table(res, False),
        "",
    ]
    if has_plot:
        lines += [
            "## Tokens per window against the limit",
            "",
            f"![tokens charged per window / limit]({PLOT.name})",
            "",
        ]
    lines += [
        "## 3. Context fill for long conversations",
        "",
        "`benchmarks/bench_fitting.py`'s comparison, run as it is by the command above: the "
        "share of the allowed prompt each trimmer fills (counted exactly), whether the "
        "emulator accepts the result, and whether a tool call is separated from its results "
        "(Groq refuses those with 400).",
        "",
        "```",
        res.get("fitting", "").rstrip(),
        "```",
        "",
        "Configurations: tokenguard `tg.fit(messages, model, max_tokens=256, tpm=6000)`; "
        "LangChain `trim_messages(max_tokens=allowed, strategy='last', include_system=True, "
        "start_on='human')` with `count_tokens_approximately` and with the tiktoken counter "
        "its guide writes; LiteLLM `trim_messages(messages, model='groq/...', "
        "max_tokens=allowed)`; pydantic-ai-harness: " + COMPACTION + ". Its "
        "`keep_tokens` is a floor (the shortest recent suffix holding at least that many), "
        "so it cannot be set to the allowed prompt itself without going over it; half is "
        "what its halving example suggests.",
        "",
        "## 4. Pre-flight count error against the server's usage",
        "",
        "Each tool's count of the prompt (before sending) / the `usage.prompt_tokens` the "
        "emulator returns (Groq's billing: Llama 3 chat template and tokenizer; harmony and "
        "o200k for gpt-oss) - 1, on the workload's conversations and on long chats in English, "
        "code, Cyrillic and CJK with tool calls. An under-count is a request the tool "
        "believes fits but the server refuses or bills above the estimate.",
        "",
        *count_table(res),
        "",
        "llmratelimiter and token-throttle do not count: the caller passes the numbers "
        "(here llmratelimiter is given the cookbook's cl100k count). LangChain's rate "
        "limiter does not count tokens; its row is `count_tokens_approximately`, which "
        "`trim_messages` uses.",
        "",
    ]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines))
