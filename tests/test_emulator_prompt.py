"""The emulator's prompt counting against hand-worked examples (Groq's Llama templates)."""

from __future__ import annotations

from typing import Any

import pytest

import tokenguard as tg
from tokenguard._tokenizer_data import get_encoding
from tokenguard.emulator import count_prompt_tokens, render_prompt
from tokenguard.emulator._completion import WORDS, completion_text
from tokenguard.emulator._prompt import count_text_tokens

BOT, START, END, EOT, NN = 128000, 128006, 128007, 128009, 271
SYSTEM, USER, ASSISTANT = 9125, 882, 78191
HELLO = 9906
# "Cutting Knowledge Date: December 2023\nToday Date: 26 July 2024\n\n", token by token
# (Groq writes today's date; every month name is one token and the day two digits):
# Cut|ting| Knowledge| Date|:| December| |202|3|\n|Today| Date|:| |26| July| |202|4|\n\n
CUTTING_KNOWLEDGE = [38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198]
CUTTING_KNOWLEDGE += [15724, 2696, 25, 220, 1627, 5887, 220, 2366, 19, 271]

CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "How are you?"},
]


def encode(text: str) -> list[int]:
    return list(get_encoding("llama3").encode(text, allowed_special="all"))


def test_hello_on_llama3_is_eleven_hand_worked_tokens() -> None:
    messages = [{"role": "user", "content": "Hello"}]
    text = render_prompt(messages, None, "llama3")
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    expected = [BOT, START, USER, END, NN, HELLO, EOT, START, ASSISTANT, END, NN]
    assert encode(text) == expected
    assert count_prompt_tokens(messages, None, "llama3") == 11


def test_conversation_on_llama3() -> None:
    # 1 BOS + system 4+4+1 + user "Hi" 4+1+1 + assistant "Hello!" 4+2+1
    # + user "How are you?" 4+4+1 + generation prompt 4 = 36
    expected = [BOT]
    expected += [START, SYSTEM, END, NN, 2675, 527, 51637, 13, EOT]
    expected += [START, USER, END, NN, 13347, EOT]
    expected += [START, ASSISTANT, END, NN, HELLO, 0, EOT]
    expected += [START, USER, END, NN, 4438, 527, 499, 30, EOT]
    expected += [START, ASSISTANT, END, NN]
    assert encode(render_prompt(CONVERSATION, None, "llama3")) == expected
    assert count_prompt_tokens(CONVERSATION, None, "llama3") == 36


def test_hello_on_llama31_pays_the_cutting_knowledge_block() -> None:
    messages = [{"role": "user", "content": "Hello"}]
    expected = [BOT, START, SYSTEM, END, NN, *CUTTING_KNOWLEDGE, EOT]
    expected += [START, USER, END, NN, HELLO, EOT, START, ASSISTANT, END, NN]
    assert encode(render_prompt(messages, None, "llama3.1")) == expected
    assert count_prompt_tokens(messages, None, "llama3.1") == 36


def test_conversation_on_llama31_merges_the_system_message_into_the_first_block() -> None:
    text = render_prompt(CONVERSATION, None, "llama3.1")
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 July 2024\n\n"
        "You are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    )
    assert text.count("<|start_header_id|>system") == 1
    expected = [BOT, START, SYSTEM, END, NN, *CUTTING_KNOWLEDGE, 2675, 527, 51637, 13, EOT]
    expected += [START, USER, END, NN, 13347, EOT]
    expected += [START, ASSISTANT, END, NN, HELLO, 0, EOT]
    expected += [START, USER, END, NN, 4438, 527, 499, 30, EOT]
    expected += [START, ASSISTANT, END, NN]
    assert encode(text) == expected
    assert count_prompt_tokens(CONVERSATION, None, "llama3.1") == 56


def test_every_system_message_joins_the_one_block_at_the_front() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Be kind. "},
        {"role": "system", "content": "Be brief."},
    ]
    text = render_prompt(messages, None, "llama3.1")
    assert text.count("<|start_header_id|>system") == 1
    assert "2024\n\nBe kind. \nBe brief.<|eot_id|><|start_header_id|>user" in text
    generic = render_prompt(messages, None, "llama3")
    assert generic.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind. \nBe brief."
    )


def test_a_last_assistant_message_is_left_open() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]
    for template in ("llama3", "llama3.1"):
        text = render_prompt(messages, None, template)
        assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nHel")


def test_llama3_pads_two_turns_of_one_role_with_an_empty_turn() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    text = render_prompt(messages, None, "llama3")
    assert "a<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n<|eot_id|>" in text
    assert count_prompt_tokens(messages, None, "llama3") == 1 + 6 + 5 + 6 + 4


@pytest.mark.parametrize("template", ["llama3", "llama3.1"])
def test_content_is_kept_as_sent_parts_joined_and_names_ignored(template: str) -> None:
    plain = count_prompt_tokens([{"role": "user", "content": "Hello"}], None, template)
    parts = [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]
    assert count_prompt_tokens([{"role": "user", "content": parts}], None, template) == plain
    named = [{"role": "user", "content": "Hello", "name": "alice"}]
    assert count_prompt_tokens(named, None, template) == plain
    padded = [{"role": "user", "content": "  Hello \n"}]
    assert count_prompt_tokens(padded, None, template) > plain


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
TOOL_MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
]


def test_tools_on_llama31_follow_groqs_own_prompt() -> None:
    text = render_prompt(TOOL_MESSAGES, TOOLS, "llama3.1", tool_choice="required")
    function = (
        '{"name":"get_weather","description":null,"parameters":'
        '{"properties":{"city":{"type":"string"}},"type":"object"}}'
    )
    assert (
        "Today Date: 26 July 2024\n\n\nYou have access to the following functions:\n\n"
        "Use the function 'get_weather' to ''\n" + function + "\n\n\nThink very carefully"
    ) in text
    assert "- You can make multiple function calls, but put each function call" in text
    assert (
        "- Put the entire function call reply on one line\n\n"
        "You must use at least one function to answer the user query.\n\nBe brief.<|eot_id|>"
    ) in text
    assert (
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '<function=get_weather>{"city":"Paris"}</function><|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\nsunny<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n<function="
    ) in text
    assert text.endswith("<function=")
    single = render_prompt(TOOL_MESSAGES, TOOLS, "llama3.1", parallel_tool_calls=False)
    assert "- Only call one function at a time\n" in single
    assert single.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_tool_choice_none_on_llama31_keeps_only_the_sentence() -> None:
    text = render_prompt(TOOL_MESSAGES, TOOLS, "llama3.1", tool_choice="none")
    assert "get_weather'" not in text
    assert "2024\n\nFor this specific request, you are NOT allowed to make any function calls." in (
        text
    )
    assert "without using any functions.\n\nBe brief." in text


def test_tool_json_is_go_encoding() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "a < b & c",
                "parameters": {"z": 1.0, "a": [1e-7, 1e21, 0.5], "m": "\u2028"},
            },
        }
    ]
    text = render_prompt([{"role": "user", "content": "x"}], tools, "llama3.1")
    assert (
        '{"name":"f","description":"a \\u003c b \\u0026 c","parameters":'
        '{"a":[1e-7,1e+21,0.5],"m":"\\u2028","z":1}}'
    ) in text


def test_unknown_template_is_refused() -> None:
    with pytest.raises(ValueError, match="llama3"):
        render_prompt([{"role": "user", "content": "x"}], None, "chatml")


def test_completion_words_are_single_tokens_and_texts_have_exact_counts() -> None:
    for word in WORDS:
        assert len(encode(word)) == 1, word
    for n in range(60):
        assert len(encode(completion_text(n))) == n


def test_pathological_whitespace_is_counted_not_crashed() -> None:
    # tiktoken's regex engine refuses a million spaces; the emulator counts in slices.
    assert count_text_tokens(" " * 1_000_000) > 0


# -- gpt-oss: harmony + o200k ----------------------------------------------------------

HARMONY_HELLO = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every "
    "message.<|end|><|start|>developer<|message|><|end|>"
    "<|start|>user<|message|>hello<|end|><|start|>assistant"
)


def test_gpt_oss_hello_renders_harmony_with_an_empty_developer_message() -> None:
    from tokenguard.emulator import count_harmony_tokens, render_harmony

    messages = [{"role": "user", "content": "hello"}]
    assert render_harmony(messages) == HARMONY_HELLO
    # Groq billed 72 for exactly this request (shared groq-cases).
    assert count_harmony_tokens(messages) == 72


def test_gpt_oss_tool_forms_render_as_groq_bills_them() -> None:
    from tokenguard.emulator import render_harmony

    tools = [{"type": "function", "function": {"name": "f", "description": "Do it."}}]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "dropped",
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "assistant", "content": "ok"},
    ]
    text = render_harmony(messages, tools, reasoning_effort="high")
    assert "Reasoning: high\n\n" in text
    assert text.count("Calls to these tools must go to the commentary channel") == 1
    assert (
        "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n# Tools\n\n## functions\n\n"
        "namespace functions {\n\n// Do it.\ntype f = () => any;\n\n} // namespace functions"
        "<|end|>"
    ) in text
    assert "dropped" not in text
    assert (
        "<|start|>assistant to=functions.f<|channel|>commentary json<|message|>{}<|call|>"
        "<|start|>functions.f<|message|>done<|end|>"
        "<|start|>assistant<|channel|>final<|message|>ok<|end|><|start|>assistant"
    ) in text


def test_gpt_oss_is_billed_by_harmony_over_http() -> None:
    import openai

    from tokenguard.emulator import running

    with running(model="openai/gpt-oss-20b") as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
        reply = client.chat.completions.create(
            model="openai/gpt-oss-20b",
            messages=[{"role": "user", "content": "hello"}],
            reasoning_effort="medium",
            max_tokens=8,
        )
        assert reply.usage is not None
        assert reply.usage.prompt_tokens == 72
        bad_format: Any = {"type": "xml"}
        with pytest.raises(openai.BadRequestError, match="response_format"):
            client.chat.completions.create(
                model="openai/gpt-oss-20b",
                messages=[{"role": "user", "content": "hello"}],
                response_format=bad_format,
            )


GPT_OSS = ("openai/gpt-oss-20b", "openai/gpt-oss-120b")
WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


@pytest.mark.parametrize("model", GPT_OSS)
@pytest.mark.parametrize("tools", [None, WEATHER])
def test_a_developer_message_on_gpt_oss_is_billed_as_tokenguard_counts_it(
    model: str, tools: list[Any] | None
) -> None:
    # GROQ.md and GROQ-RENDER.md: gpt-oss reads a leading developer message as it reads a
    # system one, harmony's developer message "# Instructions" (tools in the same message).
    import openai

    from tokenguard.emulator import running

    messages: Any = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    as_system: Any = [{**messages[0], "role": "system"}, messages[1]]
    extra: dict[str, Any] = {"tools": tools} if tools else {}
    with running(model=model) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
        billed = []
        for sent in (messages, as_system):
            reply = client.chat.completions.create(
                model=model, messages=sent, max_tokens=4, **extra
            )
            assert reply.usage is not None
            billed.append(reply.usage.prompt_tokens)
    counted = tg.count_request(messages, model=model, **extra)
    assert counted.exact
    assert counted.prompt_tokens == billed[0] == billed[1]


@pytest.mark.parametrize(
    "model",
    [
        "llama-3.1-8b-instant",
        "llama3-8b-8192",
        "meta-llama/llama-4-scout-17b-16e-instruct",
        "qwen/qwen3-32b",
        "moonshotai/kimi-k2-instruct-0905",
    ],
)
def test_a_developer_message_is_refused_where_groq_is_not_known_to_take_it(model: str) -> None:
    # Only gpt-oss is documented to take one; the emulator claims no more.
    import openai

    from tokenguard.emulator import running

    with running(model=model) as em:
        client = openai.OpenAI(base_url=em.base_url, api_key="test", max_retries=0)
        with pytest.raises(openai.BadRequestError, match=r"'messages\.1' : .*'role'"):
            client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "user", "content": "Hi"},
                    {"role": "developer", "content": "Be terse."},
                ],
                max_tokens=4,
            )
