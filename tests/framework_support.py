"""What every framework recipe's test checks: that its requests really went through the
guard, not only that replies came back."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import tokenguard as tg
from tokenguard.emulator import Emulator, running

RECIPES = Path(__file__).resolve().parent.parent / "examples" / "frameworks"
# The recipes import their shared ``_endpoint`` module the way a script run from there does.
sys.path.insert(0, str(RECIPES))
# LiteLLM fetches a price list at import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _endpoint import MODEL, Endpoint  # noqa: E402

__all__ = ["MODEL", "Endpoint", "check_guarded", "recipe", "tight_endpoint"]


def recipe(name: str) -> ModuleType:
    """The recipe ``examples/frameworks/<name>_recipe.py``, imported as a script there would
    be. Each test module imports only its own, so a framework whose release breaks its
    import fails that framework's tests and no others."""
    return importlib.import_module(f"{name}_recipe")


#: A burst of 5 requests holding ~1,050 tokens each overflows this bucket twice over.
TPM, WINDOW = 3_000, 1.0


@contextmanager
def tight_endpoint(refunds: bool | None = None) -> Iterator[tuple[Endpoint, Emulator]]:
    """The emulator with a small limit, and a limiter of the same size for the recipe."""
    with running(model=MODEL, tpm=TPM, rpm=1_000, window=WINDOW) as em:
        limiter = tg.Limiter(tpm=TPM, rpm=1_000, window=WINDOW, refunds=refunds)
        yield Endpoint(em.base_url, em.root_url, "test", limiter), em


def check_guarded(events: list[tg.events.Event], em: Emulator, calls: int) -> list[dict[str, Any]]:
    """Every request the server saw went through the guard: one usage event each, whose
    pre-flight prompt count is the server's; none refused; the burst was held."""
    seen = [e.fields() for e in events if e.name == "tokenguard.guard.request"]
    assert len(seen) == calls, [e.name for e in events]
    assert [r.status for r in em.log] == [200] * calls  # no 429: the limiter held the burst
    for f in seen:
        counted = f["tokenguard.estimated_tokens"] - f["tokenguard.completion_reserve"]
        assert counted == f["gen_ai.usage.input_tokens"]
    assert sorted(f["gen_ai.usage.input_tokens"] for f in seen) == sorted(
        r.prompt_tokens for r in em.log
    )
    assert sum(f["tokenguard.wait_s"] for f in seen) > 0  # the burst had to wait
    return seen
