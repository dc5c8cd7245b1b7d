"""How models without an exact tokenizer at hand are estimated (the documented margins).

A raw estimate is the messages' text counted with the best tokenizer available offline
(cl100k_base at worst, the least efficient on non-English text) times a margin, plus a
per-request and a per-message allowance for the template's framing; calibration
(``_calibration``) then brings it toward the truth.

Invariant: the raw estimate is never below the server's count on the families' samples.
The formula and the reasons for each margin: docs/counting-internals.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._tokenizer_data import available

__all__ = ["IMAGE_TOKENS", "EstimateRule", "estimate_rule"]

#: Tokens charged per image: Llama 3.2 Vision's largest image (4 tiles of 1,601 tokens);
#: Llama 4 tiles an image into at most 16 tiles of 144 tokens plus one, which is less.
IMAGE_TOKENS = 6_404


@dataclass(frozen=True)
class EstimateRule:
    """One way to estimate a tokenizer family: an encoding and its margins."""

    encoding: str
    margin: float
    per_request: int
    per_message: int
    digits_single: bool = False
    #: Whether the template writes tool definitions as compact JSON (else 4-space indents).
    tools_compact: bool = False
    #: Extra ``per_message`` units a tool result costs (a header the estimate cannot see).
    tool_result_units: int = 0
    #: Whether Groq's gateway puts empty turns in to make user and assistant alternate
    #: (the Hugging Face template families): a unit more for each message that needs one.
    gateway_pads: bool = False


_RULES: dict[str, tuple[EstimateRule, ...]] = {
    # gpt-oss uses o200k_harmony = o200k_base + harmony's special tokens.
    "o200k_harmony": (
        EstimateRule("o200k_base", 1.02, 96, 8),
        EstimateRule("cl100k_base", 1.10, 96, 8),
    ),
    "o200k_base": (
        EstimateRule("o200k_base", 1.0, 16, 6),
        EstimateRule("cl100k_base", 1.10, 16, 6),
    ),
    "cl100k_base": (EstimateRule("cl100k_base", 1.0, 16, 6),),
    # Qwen2/3: a cl100k-derived vocabulary whose pre-tokenizer splits digits one by one.
    "qwen2": (EstimateRule("cl100k_base", 1.10, 32, 8, digits_single=True),),
    "qwen3": (EstimateRule("cl100k_base", 1.10, 32, 8, digits_single=True),),
    # Kimi K2 (no tokenizer data offline): its template's text is known and cl100k_base
    # counts it within a few tokens of Groq (one billed case: 170 for 171), so a 5% margin
    # bounds it. per_request covers the generation prompt, a default system message and
    # the tool_declare frame (28 tokens); per_message a message's frame (4) and one more;
    # a tool result three times that more for its "## Return of functions.NAME:N" line,
    # whose NAME the estimate does not see (room for 7 tokens of it). Tools are compact.
    "kimi": (
        EstimateRule(
            "cl100k_base", 1.05, 28, 5, tools_compact=True, tool_result_units=3, gateway_pads=True
        ),
    ),
    "llama4": (EstimateRule("cl100k_base", 1.10, 32, 8),),
    # Llama 3 tokenizer but an unknown template, or its data missing: the first
    # 100,256 Llama 3 ranks are cl100k's, so cl100k never counts fewer in practice.
    "llama3": (
        EstimateRule("llama3", 1.02, 64, 8),
        EstimateRule("cl100k_base", 1.02, 64, 8),
    ),
}
_UNKNOWN = (EstimateRule("cl100k_base", 1.15, 128, 12, digits_single=True),)


def estimate_rule(family: str) -> EstimateRule:
    """The rule for ``family``: its first rule whose encoding is available offline."""
    rules = _RULES.get(family, _UNKNOWN)
    for rule in rules:
        if available(rule.encoding):
            return rule
    return _UNKNOWN[0]
