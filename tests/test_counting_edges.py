"""A body with blanks at its end is encoded once: the derived count equals two encodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard._tokenizer_data import available, get_encoding
from tokenguard.counting._groq_llama import body_value, trailing_edge
from tokenguard.counting._tokenizers import server_counter

# Letters, digits, punctuation and symbols, blanks of every kind, marks, special tokens.
PIECES = [*"ab Z9.,!?;:'\"-_/()[]{}<>|$+=#*\n\r\t", "é", "中", "🙂", "\u0301", "\xa0", "\x1c"]
PIECES += ["<|eot_id|>", "'s", "123", "<|", "\n}", ".\n", " ...", "\n/"]
BODIES = st.tuples(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map("".join),
    st.lists(st.sampled_from([" ", "\t", "\n", "\r", "\r\n"]), max_size=4).map("".join),
).map("".join)


@pytest.mark.parametrize("name", ["llama3", "llama4"])
@settings(max_examples=400, deadline=None)
@given(body=BODIES)
def test_derived_count_equals_two_encodes(name: str, body: str) -> None:
    if not available(name):
        pytest.skip(f"{name} tokenizer data not installed")
    count = server_counter(get_encoding(name))
    assert body_value(count)(body) == body_value(count, split_edges=False)(body)


def test_common_endings_are_derived() -> None:
    # Prose and code end this way: each is settled without a second encode.
    for body in ("Done.\n", "return 0;\n}\n", "it's fine \n", "x = 1\n\n", "'quoted'\r\n"):
        assert trailing_edge(body, body.strip()) is not None
    for body in ("  leading", "end\n\x1c", "path.\n/\n"):
        assert trailing_edge(body, body.strip()) is None
