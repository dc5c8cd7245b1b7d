"""The public options are typed: mypy accepts the intended uses (``tests/typing/typing_api.py``,
part of the main mypy run) and refuses each misuse in ``tests/typing/typing_misuse.py``."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import tokenguard as tg

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent
MISUSE = ROOT / "tests" / "typing" / "typing_misuse.py"


def test_the_typed_options_are_the_fields_of_guard_options() -> None:
    fields = {f.name: f.type for f in dataclasses.fields(tg.GuardOptions)}
    # The annotations are the same source text (a TypedDict keeps it as a ForwardRef).
    typed = {k: getattr(v, "__forward_arg__", v) for k, v in tg.GuardKwargs.__annotations__.items()}
    assert typed == fields
    assert tg.InstrumentKwargs.__optional_keys__ == set(fields) - {"messages_arg", "model_arg"}
    assert not tg.GuardKwargs.__required_keys__


@pytest.mark.slow
def test_mypy_refuses_each_misuse_and_nothing_else() -> None:
    expected: dict[int, str] = {}
    for n, line in enumerate(MISUSE.read_text().splitlines(), start=1):
        if "# E: " in line:
            expected[n] = line.split("# E: ", 1)[1].strip()
    out, err, _ = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-error-summary", str(MISUSE)]
    )
    assert not err, err
    found: dict[int, list[str]] = {}
    for line in out.splitlines():
        m = re.match(r".*typing_misuse\.py:(\d+): error: (.*)", line)
        if m:
            found.setdefault(int(m[1]), []).append(m[2])
    assert sorted(found) == sorted(expected), out
    for n, part in expected.items():
        assert any(part in message for message in found[n]), (n, part, found[n])
