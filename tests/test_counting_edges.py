"""A body with blanks at its end is encoded once: the derived count equals two encodes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard._tokenizer_data import available, get_encoding
from tokenguard.counting._groq_llama import body_value, body_values, trailing_edge
from tokenguard.counting._tokenizers import server_counter, server_counter_many

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


# Bodies longer than the ending that keys what trailing blanks add, ending in runs of
# punctuation of every length (some longer than the key, reaching into the text before).
LONG_BODIES = st.tuples(
    st.lists(st.sampled_from(PIECES), min_size=4, max_size=16).map("".join),
    st.lists(st.sampled_from([*".,;:!?)]}>|/-'\"", "<|eot_id|>"]), max_size=24).map("".join),
    st.lists(st.sampled_from(["\n", "\r\n", " ", "\t", "\n\n"]), min_size=1, max_size=3).map(
        "".join
    ),
).map("".join)


@pytest.mark.parametrize("name", ["llama3", "llama4"])
@settings(max_examples=400, deadline=None)
@given(body=LONG_BODIES)
def test_what_an_ending_adds_is_kept_for_every_body_with_that_ending(name: str, body: str) -> None:
    if not available(name):
        pytest.skip(f"{name} tokenizer data not installed")
    # One counting function per encoding: what an ending adds, learnt from earlier
    # examples' bodies, is reused for this one, and must give the count of two encodes.
    count = server_counter(get_encoding(name))
    assert server_counter(get_encoding(name)) is count
    assert body_value(count)(body) == body_value(count, split_edges=False)(body)


@pytest.mark.parametrize("name", ["llama3", "llama4"])
def test_an_ending_kept_from_one_body_counts_another_exactly(name: str) -> None:
    if not available(name):
        pytest.skip(f"{name} tokenizer data not installed")
    count = server_counter(get_encoding(name))
    value, twice = body_value(count), body_value(count, split_edges=False)
    # The same last 16 characters and blanks, different text before them: letters, a
    # space, a newline, punctuation (which joins the run), a special token.
    run = ")]}" * 6 + "\n"
    for before in ("word", "word ", "word\n", "word.", "x<|eot_id|>", ""):
        for ending in ("return 0;\n}\n", "call(a, b);\n", run, "done." + "\n" * 3):
            body = f"{before}{'padding text ' * 2}{ending}"
            assert value(body) == twice(body), body
        # A run longer than the key: what it adds is not kept, each body is worked out.
        body = run[:-1] + before + run
        assert value(body) == twice(body), body


# Lists of bodies, some without edge blanks (counted together), some with, with pieces
# that make a special token's marker across two bodies ("...<" then "|..."), and now and
# then a body too long for one call.
BATCHES = st.lists(
    st.one_of(
        BODIES,
        st.sampled_from(
            ["ends with <", "|starts the next", "<|eot_id|> in", "<|eot|> in", "x" * 60_000]
        ),
    ),
    max_size=8,
)


@pytest.mark.parametrize("name", ["llama3", "llama4"])
@settings(max_examples=200, deadline=None)
@given(bodies=BATCHES)
def test_bodies_counted_together_count_as_each_alone(name: str, bodies: list[str]) -> None:
    if not available(name):
        pytest.skip(f"{name} tokenizer data not installed")
    enc = get_encoding(name)
    count = server_counter(enc)
    together = body_values(count, server_counter_many(enc))(bodies)
    assert together == [body_value(count, split_edges=False)(b) for b in bodies]
