"""Structured outputs on real llama.cpp (SmolLM2-135M) through the worker app, with the openai client as
LangChain's `with_structured_output` drives it: a small schema yields a small object that ends by itself,
and a schema whose grammar would cost too much is a 400 naming the limit."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from pydantic import BaseModel

MODEL = "SmolLM2-135M-Instruct"
MESSAGES = [{"role": "user", "content": "Alice is 30 years old."}]


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, smollm_engine: Any) -> str:
    return live_server(text_app(smollm_engine)) + "/v1"


def between_tokens(text: str) -> str:
    """The JSON text without its strings: what the grammar's whitespace rule governs."""
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


@pytest.mark.parametrize("seed", range(4))
def test_a_two_field_schema_ends_with_a_small_object(client: openai.OpenAI, seed: int) -> None:
    # No temperature and no max_tokens of its own, as LangChain sends it; 200 is only a safety net.
    result = client.chat.completions.parse(model=MODEL, messages=MESSAGES, response_format=Person, seed=seed,
                                           max_tokens=200)
    choice = result.choices[0]
    assert choice.finish_reason == "stop" and result.usage.completion_tokens < 50, choice.message.content
    assert isinstance(choice.message.parsed, Person)
    assert not re.search(r"\s\s|[\t\n\r]", between_tokens(choice.message.content or ""))


def test_a_schema_past_a_bound_is_a_400_naming_it_and_the_model_still_serves(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"bio": {"type": "string", "maxLength": 30000}}, "required": ["bio"]}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5, response_format={
            "type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    error = caught.value.body
    assert error["param"] == "response_format" and "maxLength is 30000" in error["message"], error
    result = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=60, temperature=0,
                                            response_format={"type": "json_object"})
    if result.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(result.choices[0].message.content or ""), dict)
