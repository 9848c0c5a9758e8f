"""The OpenAI API of a real server (SmolLM2 with 8 slots, MiniLM for embeddings), through the
official `openai` client, sync and async, and through httpx."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import numpy as np
import openai
import pytest

import llamabind as lb
from live_server import MINILM, SMOL, LiveServer
from testutil import make_llama

PROMPTS = ["The capital of France is", "Water boils at", "Once upon a time", "The three primary colors are",
           "def fibonacci(n):", "The largest planet is", "In 1969, astronauts", "A recipe for pancakes:"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CITY = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                         "population": {"type": "integer", "minimum": 0}},
        "required": ["name", "population"], "additionalProperties": False}


def test_models_list_both(server: LiveServer) -> None:
    models = server.openai().models.list()
    ids = [m.id for m in models.data]
    assert ids == [SMOL, MINILM]
    assert server.openai().models.retrieve(SMOL).id == SMOL


def test_completion_matches_in_process_llama(server: LiveServer, smollm2_path: Path) -> None:
    got = server.openai().completions.create(model=SMOL, prompt="The capital of France is", max_tokens=12,
                                             temperature=0)
    with make_llama(smollm2_path) as llm:
        want = llm.create_completion("The capital of France is", max_tokens=12, temperature=0)
    assert got.choices[0].text == want["choices"][0]["text"]
    assert got.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == \
        (want["usage"]["prompt_tokens"], want["usage"]["completion_tokens"])
    assert got.model == SMOL and got.object == "text_completion" and got.id.startswith("cmpl-")


def test_chat_streamed_equals_whole(server: LiveServer) -> None:
    client = server.openai()
    ask = [{"role": "user", "content": "Name a primary color."}]
    whole = client.chat.completions.create(model=SMOL, messages=ask, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=SMOL, messages=ask, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_completion_stream_usage_and_stop(server: LiveServer) -> None:
    client = server.openai()
    kw = dict(model=SMOL, prompt="1, 2, 3, 4,", max_tokens=24, temperature=0, stop=[" 7"])
    whole = client.completions.create(**kw)
    assert whole.choices[0].finish_reason == "stop"
    assert " 7" not in whole.choices[0].text and whole.choices[0].text.startswith(" 5")
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_seed_and_n(server: LiveServer) -> None:
    client = server.openai()
    kw = dict(model=SMOL, prompt="My favourite animal is", max_tokens=10, temperature=1.0, extra_body={"top_k": 0})
    a = client.completions.create(**kw, seed=7, n=3)
    b = client.completions.create(**kw, seed=7, n=3)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1  # choices differ from one another
    one = client.completions.create(**kw, seed=7)
    assert one.choices[0].text == a.choices[0].text
    # The prompt counts once, every choice's tokens count.
    assert a.usage is not None and one.usage is not None
    assert a.usage.prompt_tokens == one.usage.prompt_tokens and a.usage.completion_tokens > one.usage.completion_tokens
    streamed: dict[int, str] = {}
    for chunk in client.completions.create(**kw, seed=7, n=3, stream=True):
        streamed[chunk.choices[0].index] = streamed.get(chunk.choices[0].index, "") + chunk.choices[0].text
    assert [streamed[i] for i in range(3)] == [c.text for c in a.choices]


def test_prompt_list_gives_a_choice_per_prompt(server: LiveServer) -> None:
    out = server.openai().completions.create(model=SMOL, prompt=PROMPTS[:3], max_tokens=6, temperature=0)
    alone = [server.openai().completions.create(model=SMOL, prompt=p, max_tokens=6, temperature=0).choices[0].text
             for p in PROMPTS[:3]]
    assert [c.text for c in out.choices] == alone


def test_logprobs(server: LiveServer) -> None:
    client = server.openai()
    chat = client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=5,
                                          temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    assert "".join(t.token for t in content) == chat.choices[0].message.content
    # greedy: each chosen token is the most likely one
    assert all(t.top_logprobs[0].token == t.token for t in content)
    text = client.completions.create(model=SMOL, prompt="The sky is", max_tokens=4, temperature=0, logprobs=3)
    lp = text.choices[0].logprobs
    assert lp is not None and len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(top) == 3 for top in lp.top_logprobs)


def test_json_object_and_schema(server: LiveServer) -> None:
    client = server.openai()
    ask = [{"role": "user", "content": "Give me a city and its population as JSON."}]
    reply = client.chat.completions.create(model=SMOL, messages=ask, max_tokens=200, temperature=0,
                                           response_format={"type": "json_object"})
    # The grammar holds the reply to a JSON object; this small model may not close it in time.
    content = reply.choices[0].message.content
    assert content.lstrip().startswith("{")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    schema_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    reply = client.chat.completions.create(model=SMOL, messages=ask, max_tokens=48, temperature=0,
                                           response_format=schema_format)
    jsonschema.validate(json.loads(reply.choices[0].message.content), CITY)
    chunks = client.chat.completions.create(model=SMOL, messages=ask, max_tokens=48, temperature=0,
                                            response_format=schema_format, stream=True)
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in chunks)), CITY)


@pytest.mark.parametrize("stream", [False, True])
def test_tools(server: LiveServer, stream: bool) -> None:
    client = server.openai()
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    kw = dict(model=SMOL, messages=ask, tools=[WEATHER], max_tokens=48, temperature=0)
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        if stream:
            calls: dict[int, dict[str, str]] = {}
            finish = None
            for chunk in client.chat.completions.create(**kw, tool_choice=choice, stream=True):
                delta = chunk.choices[0].delta
                for call in delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
                    entry["name"] += call.function.name or ""
                    entry["arguments"] += call.function.arguments or ""
                finish = chunk.choices[0].finish_reason or finish
            found = list(calls.values())
        else:
            reply = client.chat.completions.create(**kw, tool_choice=choice)
            finish = reply.choices[0].finish_reason
            found = [{"name": c.function.name, "arguments": c.function.arguments}
                     for c in reply.choices[0].message.tool_calls]
        assert finish == "tool_calls" and found and found[0]["name"] == "get_weather"
        jsonschema.validate(json.loads(found[0]["arguments"]), WEATHER["function"]["parameters"])
    reply = client.chat.completions.create(**kw, tool_choice="none")
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].finish_reason in ("stop", "length")


def test_eight_concurrent_streams_each_get_their_greedy_text(server: LiveServer) -> None:
    async def one(client: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await client.completions.create(model=SMOL, prompt=prompt, max_tokens=20, temperature=0,
                                                 stream=True)
        return "".join([c.choices[0].text async for c in stream])

    async def alone() -> list[str]:
        async with server.async_openai() as client:
            return [await one(client, p) for p in PROMPTS]

    async def together() -> list[str]:
        async with server.async_openai() as client:
            return list(await asyncio.gather(*(one(client, p) for p in PROMPTS)))

    first = asyncio.run(alone())
    peak_before = server.metric("llamabind_active_slots", model=SMOL)
    second = asyncio.run(together())
    assert second == first and all(first)
    assert peak_before == 0
    assert server.wait_metric("llamabind_active_slots", 0, model=SMOL) == 0


def test_async_chat(server: LiveServer) -> None:
    async def main() -> tuple[str, str]:
        async with server.async_openai() as client:
            ask = [{"role": "user", "content": "Name a planet."}]
            whole = await client.chat.completions.create(model=SMOL, messages=ask, max_tokens=8, temperature=0)
            stream = await client.chat.completions.create(model=SMOL, messages=ask, max_tokens=8, temperature=0,
                                                          stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
        return whole.choices[0].message.content, text

    whole, streamed = asyncio.run(main())
    assert whole == streamed and whole


def test_embeddings_match_in_process(server: LiveServer, minilm_path: Path) -> None:
    texts = ["A man is eating food.", "A cat sleeps on the sofa."]
    client = server.openai()
    as_base64 = client.embeddings.create(model=MINILM, input=texts)  # the client asks for base64
    as_float = client.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    with lb.Llama(str(minilm_path), embedding=True, n_ctx=0, verbose=False) as llm:
        want = np.asarray(llm.embed(texts, normalize=True))
    for got in (as_base64, as_float):
        vectors = np.asarray([d.embedding for d in got.data])
        assert vectors.shape == (2, 384) and np.allclose(vectors, want, atol=1e-5)
        assert got.usage.prompt_tokens > 0 and got.model == MINILM
    assert client.embeddings.create(model=MINILM, input="one text").data[0].index == 0
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=SMOL, input="a generation model")
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MINILM, input=[[1, 2, 3]])


def test_tokenize_and_detokenize(server: LiveServer, smollm2_path: Path) -> None:
    with lb.Llama(str(smollm2_path), vocab_only=True, verbose=False) as llm:
        want = llm.tokenize(b"Hello world", add_bos=False, special=True)
        want_bos = llm.tokenize(b"Hello world", add_bos=True, special=True)
    with server.http() as http:
        assert http.post("/tokenize", json={"content": "Hello world"}).json() == {"tokens": want}
        pieces = http.post("/tokenize", json={"content": "Hello world", "with_pieces": True}).json()["tokens"]
        assert "".join(p["piece"] for p in pieces) == "Hello world"
        assert http.post("/detokenize", json={"tokens": want}).json() == {"content": "Hello world"}
        assert http.post("/extras/tokenize", json={"input": "Hello world"}).json() == {"tokens": want_bos}
        assert http.post("/extras/tokenize/count", json={"input": "Hello world"}).json() == {"count": len(want_bos)}
        assert http.post("/extras/detokenize", json={"tokens": want}).json() == {"text": "Hello world"}
        bad = http.post("/detokenize", json={"tokens": [10**9]})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_error_shapes(server: LiveServer) -> None:
    client = server.openai()
    with pytest.raises(openai.NotFoundError) as nf:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=1)
    assert nf.value.code == "model_not_found" and nf.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=SMOL, prompt="x", max_tokens=1, temperature=-1)
    assert bad.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=SMOL, prompt="word " * 2000, max_tokens=1)
    assert "context" in long.value.message
    with pytest.raises(openai.BadRequestError) as grammar:
        client.completions.create(model=SMOL, prompt="x", max_tokens=1, extra_body={"grammar": "root ::= ("})
    assert grammar.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):  # the stream's 400 comes before any event
        client.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "x " * 2000}], stream=True)
    with server.http() as http:
        r = http.post("/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
        r = http.get("/v1/nothing-here")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # The server keeps serving.
    assert client.completions.create(model=SMOL, prompt="Hi", max_tokens=2, temperature=0).choices


def test_extra_samplers_and_logit_bias(server: LiveServer) -> None:
    client = server.openai()
    base = dict(model=SMOL, prompt="The capital of France is", max_tokens=4, temperature=0)
    plain = client.completions.create(**base).choices[0].text
    with server.http() as http:
        first = http.post("/tokenize", json={"content": plain}).json()["tokens"][0]
    banned = client.completions.create(**base, logit_bias={str(first): -100}).choices[0].text
    assert banned != plain
    dry = client.completions.create(**base, extra_body={"dry_multiplier": 0.8, "top_k": 1})
    assert dry.choices[0].text
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**base, extra_body={"xtc_probability": "high"})


def test_health_docs_and_metrics(server: LiveServer) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    with server.http() as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert http.get("/docs").status_code == 200
        assert "/v1/chat/completions" in http.get("/openapi.json").json()["paths"]
        text = http.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("llamabind_requests", "llamabind_prompt_tokens", "llamabind_completion_tokens",
                 "llamabind_request_duration_seconds", "llamabind_time_to_first_token_seconds",
                 "llamabind_active_slots", "llamabind_queue_depth", "llamabind_slots", "llamabind_model_loaded"):
        assert name in families, name
    assert server.metric("llamabind_slots", model=SMOL) == 8
    assert server.metric("llamabind_model_loaded", model=MINILM) == 1
    assert server.metric("llamabind_requests_total", model=SMOL, endpoint="/v1/completions", status="200") > 0
    assert server.metric("llamabind_completion_tokens_total", model=SMOL) > 0
