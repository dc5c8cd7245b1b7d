"""One row's callers, in a process of their own: ``python -m benchmarks.compare.row SPEC OUT``.

The parent (run.py) keeps the emulator and reads the server's side from its log; this
process imports the tool, builds its caller, runs the workers or the arrivals, and writes
what the callers saw to OUT as JSON. Every tool runs this way, so a tool that needs
another Python (envs.py) runs on the same terms as the others, and no tool's threads
share an interpreter lock with the emulator. The start instant travels as wall-clock
time (this process's monotonic clock is not the parent's).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import tokenguard as tg  # noqa: E402

from .tools import load, warm  # noqa: E402
from .workload import (  # noqa: E402
    COMPLETION,
    Env,
    Traffic,
    conversation_mix,
    run_processes,
    run_tasks,
    run_threads,
    schedule,
)


def counts(spec: dict[str, Any]) -> dict[str, Any]:
    """Each of a tool's counters on each chat and model: a count, or the exception's name."""
    tool = load(spec["counts"])
    if tool.unavailable():
        return {"unavailable": tool.unavailable()}
    counters = {"": tool.count, **getattr(tool, "EXTRA_COUNTS", {})}
    note = getattr(tool, "counter_note", lambda label, model: None)
    out: dict[str, dict[str, list[int | str]]] = {}
    notes: dict[str, dict[str, str | None]] = {}
    for label, count in counters.items():
        for model in spec["models"]:
            got: list[int | str] = []
            for chat in spec["chats"]:
                try:
                    n = count([dict(m) for m in chat], model)
                except Exception as exc:  # a counter that cannot read the conversation
                    got.append(type(exc).__name__)
                    continue
                if n is None:
                    break
                got.append(int(n))
            if got:
                out.setdefault(label, {})[model] = got
                notes.setdefault(label, {})[model] = note(label, model)
    return {"counters": out, "notes": notes}


def run(spec: dict[str, Any]) -> dict[str, Any]:
    if "counts" in spec:
        return counts(spec)
    env = Env(**spec["env"])
    traffic = Traffic(**spec["traffic"])
    tool = load(spec["module"])
    why = tool.unavailable()  # imports the tool before the clock starts
    if why:
        return {"unavailable": why}
    costs = [tg.count_tokens(m, env.model) for m in conversation_mix()]
    warm(tool, conversation_mix()[0], env.model)
    arrivals = None
    if traffic.kind != "closed":
        charged = [c + COMPLETION for c in costs]  # what a refunding server keeps
        arrivals = schedule(traffic, spec["duration"], env.window, env.tpm, env.rpm, charged)
    mode, workers, grace = spec["mode"], spec["workers"], spec["grace"]
    if mode == "processes":
        stats = run_processes(
            spec["module"],
            env,
            costs,
            workers,
            spec["threads_per_process"],
            spec["duration"],
            grace,
        )
    elif mode == "threads":
        stats = run_threads(
            lambda: tool.sync_caller(env), workers, spec["duration"], grace, costs, 0, arrivals
        )
    else:
        stats = run_tasks(
            lambda: tool.async_caller(env), workers, spec["duration"], grace, costs, arrivals
        )
    out = asdict(stats)
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    out["arrivals"] = None if arrivals is None else len(arrivals)
    return out


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.disable(logging.CRITICAL)  # libraries' retry warnings would flood the output
    warnings.simplefilter("ignore")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # No network here: a tokenizer download fails at once instead of after a minute of
    # retries (the tool then falls back as it would offline; table 4 says to what).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tg.events.use_logging(False)
    try:
        result = run(spec)
    except Exception as exc:  # the row fails with its reason; the run goes on
        result = {"failed": repr(exc)[:300]}
    Path(sys.argv[2]).write_text(json.dumps(result))
    # Abandoned worker threads (calls still waiting after the grace) must not hold us.
    os._exit(0)


if __name__ == "__main__":
    main()
