"""instructor: structured output from an instrumented client.

Needs: pip install instructor (or this project's `frameworks` extra). instructor patches
the ``create`` of the client it is given; give it an instrumented one and every attempt,
its validation retries included, goes through the guard (counted, held, one usage event
each). Runs against Groq when GROQ_API_KEY is set, else the emulator (whose replies are
fixed words, not JSON: there instructor's validation fails and retries, which shows every
attempt guarded).

    python examples/frameworks/instructor_recipe.py
"""

from __future__ import annotations

import instructor
import openai
from _endpoint import MODEL, Endpoint, endpoint, summary
from instructor.core.exceptions import InstructorRetryException
from pydantic import BaseModel

import tokenguard as tg


class City(BaseModel):
    name: str
    country: str


def structured_client(at: Endpoint) -> instructor.Instructor:
    client = tg.instrument(
        openai.OpenAI(base_url=at.base_url, api_key=at.api_key, max_retries=0),
        limiter=at.limiter,
    )
    # MD_JSON asks for the JSON in the prompt: counted exactly. Mode.JSON sends a
    # response_format, whose cost on Groq is not known exactly; it is counted high.
    return instructor.from_openai(client, mode=instructor.Mode.MD_JSON)


def city(client: instructor.Instructor, text: str, retries: int = 2) -> City:
    return client.chat.completions.create(
        model=MODEL,
        response_model=City,
        messages=[{"role": "user", "content": f"Which city is this about? {text}"}],
        max_tokens=1_000,
        max_retries=retries,
    )


def main() -> None:
    with endpoint() as at, summary("instructor"):
        client = structured_client(at)
        try:
            print(city(client, "The Eiffel Tower is in the capital of France."))
        except InstructorRetryException as exc:
            print(f"no valid City after {exc.n_attempts} attempts (the emulator writes no JSON)")


if __name__ == "__main__":
    main()
