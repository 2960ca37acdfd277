"""The OpenAI-compatible server, started for real on a loopback port and driven by the official
OpenAI client (and raw HTTP where the client hides what is on the wire)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from golden import log_softmax
from server_harness import N_CTX, LiveServer

import realm
from realm.server import ModelRegistry, ModelSpec, create_app
from realm.testing import write_model


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0)


def smol(served):
    """The reference: SmolLM2 loaded in the test process (see server_harness)."""
    return served.reference


SMOL = '{backend="cpu",model="smol"}'


def wait_idle(served, timeout=10.0):
    """Until the server's engine runs nothing and every KV block is free again (its metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        m = served.metrics()
        state = [
            m[f"realm_requests_running{SMOL}"],
            m[f"realm_requests_waiting{SMOL}"],
            m[f"realm_kv_cache_usage_ratio{SMOL}"],
        ]
        if state == [0, 0, 0]:
            return
        assert time.monotonic() < deadline, f"engine not idle: running, waiting, KV use = {state}"
        time.sleep(0.05)


def sse_events(response: httpx.Response) -> list:
    """The ``data:`` payloads of a server-sent-event stream, [DONE] included."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
        else:
            assert line == "", f"unexpected line in the event stream: {line!r}"
    return events


# ----------------------------------------------------------------------------- models, health


def test_health_and_models(served, client):
    assert httpx.get(served.base + "/health").json() == {"status": "ok"}
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smol", "smol-again", "tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.body["code"] == "model_not_found"
    # only the models it was started with: a request cannot name a file
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model=str(served.reference.path), prompt="hi", max_tokens=1)


def test_the_same_file_twice_is_loaded_once(served):
    loaded = {k for k in served.metrics() if k.startswith("realm_model_load_seconds")}
    assert loaded == {
        'realm_model_load_seconds{backend="cpu",model="smol"}',
        'realm_model_load_seconds{backend="cpu",model="tiny"}',
    }  # smol-again is smol


def test_health_is_503_while_loading():
    registry = ModelRegistry()
    live = LiveServer(create_app(registry))
    try:
        response = httpx.get(live.base + "/health")
        assert response.status_code == 503 and response.json()["status"] == "loading"
        assert "retry-after" in response.headers
        refused = httpx.post(live.base + "/v1/completions", json={"model": "smol", "prompt": "hi"})
        assert refused.status_code == 503
    finally:
        live.stop()


# ----------------------------------------------------------------------------- completions


def test_completion_matches_the_library(served, client):
    prompt = "The capital of France is"
    expected = smol(served).generate(prompt, max_tokens=12, temperature=0)
    got = client.completions.create(model="smol", prompt=prompt, max_tokens=12, temperature=0)
    assert got.object == "text_completion" and got.model == "smol"
    assert got.choices[0].text == expected.text
    assert got.choices[0].finish_reason == "length"
    n_prompt = len(smol(served).tokenize(prompt))
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (n_prompt, 12)
    assert got.usage.total_tokens == n_prompt + 12


def test_completion_stream_is_the_same_text_in_pieces(served, client):
    prompt = "Once upon a time"
    whole = client.completions.create(model="smol", prompt=prompt, max_tokens=16, temperature=0)
    chunks = list(
        client.completions.create(model="smol", prompt=prompt, max_tokens=16, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_prompts_as_token_ids_and_lists(served, client):
    ids = smol(served).tokenize("Hello, my name is")
    by_text = client.completions.create(model="smol", prompt="Hello, my name is", max_tokens=6, temperature=0)
    by_ids = client.completions.create(model="smol", prompt=ids, max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    two = client.completions.create(
        model="smol", prompt=["Hello, my name is", "The sky is"], max_tokens=6, temperature=0
    )
    assert [c.index for c in two.choices] == [0, 1]
    assert two.choices[0].text == by_text.choices[0].text
    assert two.choices[1].text == smol(served).generate("The sky is", max_tokens=6, temperature=0).text


def test_stop_strings_end_the_text(served, client):
    full = client.completions.create(model="smol", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    text = full.choices[0].text
    cut = text[2:5]
    stopped = client.completions.create(
        model="smol", prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[cut, "never appears"]
    )
    assert stopped.choices[0].text == text[: text.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"


def test_max_tokens_zero_generates_nothing(client):
    got = client.completions.create(model="smol", prompt="Hi", max_tokens=0)
    assert got.choices[0].text == "" and got.usage.completion_tokens == 0


# ----------------------------------------------------------------------------- chat


def test_chat_matches_the_library(served, client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."}]
    expected = smol(served).chat(messages, max_tokens=10, temperature=0)
    got = client.chat.completions.create(model="smol", messages=messages, max_tokens=10, temperature=0)
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == expected.text
    assert got.usage.prompt_tokens == len(smol(served).chat_tokens(messages))
    # content as a list of text parts is the same message
    parts = [messages[0], {"role": "user", "content": [{"type": "text", "text": "Name a color."}]}]
    again = client.chat.completions.create(model="smol", messages=parts, max_tokens=10, temperature=0)
    assert again.choices[0].message.content == expected.text


def test_chat_stream_on_the_wire(served, client):
    body = {
        "model": "smol",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    whole = client.chat.completions.create(
        **{k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    )
    with httpx.stream("POST", served.base + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len({(c["id"], c["created"], c["model"], c["object"]) for c in chunks}) == 1
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 8
    assert all(c["usage"] is None for c in chunks[:-1])
    last = chunks[-2]["choices"][0]
    assert last["finish_reason"] == "length" and last["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == whole.choices[0].message.content


def test_n_choices_each_run_as_its_own_sequence(served, client):
    messages = [{"role": "user", "content": "Tell me a word."}]
    got = client.chat.completions.create(
        model="smol", messages=messages, max_tokens=8, temperature=0.9, seed=5, n=3
    )
    assert [c.index for c in got.choices] == [0, 1, 2]
    again = client.chat.completions.create(
        model="smol", messages=messages, max_tokens=8, temperature=0.9, seed=5, n=3
    )
    assert [c.message.content for c in got.choices] == [c.message.content for c in again.choices]
    # choice i samples with seed + i: the library with that seed gives the same text
    lib = smol(served).chat(messages, max_tokens=8, temperature=0.9, seed=6)
    assert got.choices[1].message.content == lib.text
    assert got.usage.completion_tokens == 3 * 8 or any(c.finish_reason == "stop" for c in got.choices)


def test_chat_without_a_template_is_a_clear_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "no_chat_template"
    assert "--chat-template" in info.value.body["message"]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_tokens": "10"}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": 5}, "stop"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"logprobs": 21}, "logprobs"),
        ({"suffix": "x"}, "suffix"),
    ],
)
def test_bad_parameters_are_400_naming_them(served, body, param):
    response = httpx.post(served.base + "/v1/completions", json={"model": "smol", "prompt": "hi", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"


def test_unknown_fields_are_ignored(client):
    got = client.completions.create(
        model="smol", prompt="Hi", max_tokens=2, temperature=0, extra_body={"some_future_field": {"x": 1}}
    )
    assert got.usage.completion_tokens == 2


def test_a_prompt_too_long_is_context_length_exceeded(served, client):
    long_prompt = "word " * (N_CTX + 10)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smol", prompt=long_prompt, max_tokens=4)
    assert info.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="smol", prompt="Hi", max_tokens=N_CTX)
    assert info.value.body["code"] == "context_length_exceeded"
    assert info.value.body["param"] == "max_tokens"
    wait_idle(served)


def test_api_key_is_required_when_configured():
    registry = ModelRegistry()
    live = LiveServer(create_app(registry, api_key="s3cret"))
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=live.base + "/v1", api_key="wrong", max_retries=0).models.list()
        keyed = openai.OpenAI(base_url=live.base + "/v1", api_key="s3cret", max_retries=0)
        assert keyed.models.list().data == []
        assert httpx.get(live.base + "/health").status_code == 503  # health needs no key
    finally:
        live.stop()


# ----------------------------------------------------------------------------- many clients


def test_many_concurrent_streams_with_cancellations(served):
    """Twelve clients stream at once, greedy, each its own prompt; four hang up early. Every
    finished stream is exactly its prompt's solo output, and every KV block comes back."""
    model = smol(served)
    prompts = [f"Fact number {i}: the" for i in range(12)]
    solo = [model.generate(p, max_tokens=20, temperature=0).text for p in prompts]
    wait_idle(served)
    cancel = {1, 4, 7, 10}

    async def one(client, i):
        stream = await client.completions.create(
            model="smol", prompt=prompts[i], max_tokens=20, temperature=0, stream=True
        )
        text = ""
        n = 0
        async for chunk in stream:
            text += chunk.choices[0].text
            n += 1
            if i in cancel and n == 3:
                await stream.close()
                return i, None
        return i, text

    async def all_of_them():
        async with openai.AsyncOpenAI(base_url=served.base + "/v1", api_key="x", max_retries=0) as client:
            return await asyncio.gather(*(one(client, i) for i in range(12)))

    steps = served.metrics()[f"realm_engine_steps_total{SMOL}"]
    results = dict(asyncio.run(all_of_them()))
    # they ran together: far fewer engine steps than the ~180 tokens generated
    assert served.metrics()[f"realm_engine_steps_total{SMOL}"] - steps < 120
    for i, text in results.items():
        if i in cancel:
            assert text is None
        else:
            assert text == solo[i], f"stream {i} differs from its solo run"
    wait_idle(served)


def test_a_client_that_disconnects_frees_its_blocks(served):
    # 500 tokens take several seconds here; the engine must be idle well before that.
    body = {"model": "smol", "prompt": "A long story:", "max_tokens": 500, "temperature": 0}
    before = served.metrics()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(served.base + "/v1/completions", json=body, timeout=0.5)
    wait_idle(served, timeout=2.0)
    after = served.metrics()
    assert 0 < after[f"realm_engine_steps_total{SMOL}"] - before[f"realm_engine_steps_total{SMOL}"] < 250
    aborted = 'realm_request_success_total{backend="cpu",finished_reason="abort",model="smol"}'
    assert after[aborted] - before.get(aborted, 0) == 1


# ----------------------------------------------------------------------------- the rest


def test_tokenize_and_detokenize(served):
    model = smol(served)
    response = httpx.post(served.base + "/tokenize", json={"model": "smol", "content": "Hello world"})
    assert response.json()["tokens"] == model.tokenize("Hello world")
    back = httpx.post(
        served.base + "/detokenize", json={"model": "smol", "tokens": response.json()["tokens"]}
    )
    assert back.json()["content"] == model.detokenize(model.tokenize("Hello world"))


def test_metrics_count_what_was_served(served, client):
    def scrape():
        text = httpx.get(served.base + "/metrics").text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    before = scrape()
    client.completions.create(model="smol", prompt="Count: one, two,", max_tokens=5, temperature=0)
    after = scrape()
    key = 'realm_generation_tokens_total{backend="cpu",model="smol"}'
    assert after[key] - before.get(key, 0) == 5
    done = 'realm_request_success_total{backend="cpu",finished_reason="length",model="smol"}'
    assert after[done] - before.get(done, 0) == 1
    assert after['realm_requests_running{backend="cpu",model="smol"}'] == 0
    assert 0 <= after['realm_kv_cache_usage_ratio{backend="cpu",model="smol"}'] <= 1
    assert after['realm_model_load_seconds{backend="cpu",model="smol"}'] > 0
    ttft = 'realm_time_to_first_token_seconds_count{backend="cpu",model="smol"}'
    assert after[ttft] - before.get(ttft, 0) == 1
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="Hi")
    missing = 'realm_request_errors_total{code="model_not_found"}'
    assert scrape()[missing] - after.get(missing, 0) == 1


def test_openapi_schema_describes_the_endpoints(served):
    schema = httpx.get(served.base + "/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/detokenize"):
        assert path in schema["paths"]
    chat = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "max_completion_tokens", "stream_options", "top_k", "min_p"} <= set(chat)


def test_realm_serve_options_from_the_environment_logs_and_sigterm(tmp_path):
    """`realm serve` takes options from REALM_* variables, logs a line per request without
    the prompt, and on SIGTERM ends an open stream, closes the models and exits 0."""
    import signal

    from server_harness import ServerProcess

    path = write_model(tmp_path / "m.gguf", n_ctx=512, n_layer=8, n_embd=256, n_ff=1024)
    env = {"REALM_API_KEY": "k3y", "REALM_DEVICE": "numpy", "REALM_MAX_RUNNING": "4"}
    live = ServerProcess([str(path), "--alias", "mine"], tmp_path / "log.txt", env=env)
    try:
        assert httpx.get(live.base + "/v1/models").status_code == 401  # the key came from the environment
        client = openai.OpenAI(base_url=live.base + "/v1", api_key="k3y", max_retries=0)
        secret = "a prompt that must not reach the log"
        got = client.completions.create(model="mine", prompt=secret, max_tokens=3, temperature=0)
        n = got.usage.completion_tokens
        stream = client.completions.create(model="mine", prompt="go", max_tokens=400, stream=True)
        next(iter(stream))  # a stream is open when the signal comes
        assert live.stop(signal.SIGTERM) == 0
        log = live.log()
    finally:
        if live.proc.poll() is None:
            live.stop(signal.SIGKILL)
    assert secret not in log
    assert f"POST /v1/completions 200 prompt_tokens={got.usage.prompt_tokens} generated_tokens={n}" in log
    assert "GET /v1/models 401" in log
    assert log.rstrip().endswith("realm: stopped")


def test_log_prompts_logs_them(tmp_path):
    from server_harness import ServerProcess

    path = write_model(tmp_path / "m.gguf", n_ctx=128)
    live = ServerProcess([str(path), "--device", "numpy", "--log-prompts"], tmp_path / "log.txt")
    try:
        httpx.post(
            live.base + "/v1/completions", json={"model": "m", "prompt": "say cheese", "max_tokens": 1}
        )
    finally:
        assert live.stop() == 0
    assert 'prompt for m: "say cheese"' in live.log()


def test_a_bad_environment_variable_is_named(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "realm", "serve", str(write_model(tmp_path / "m.gguf"))],
        env={**__import__("os").environ, "REALM_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "$REALM_PORT must be int, got 'eighty'" in done.stderr


def test_the_grafana_dashboard_uses_metrics_the_server_exports(served, client):
    import re
    from pathlib import Path

    client.completions.create(model="smol", prompt="Hi", max_tokens=2, temperature=0)
    with pytest.raises(openai.NotFoundError):  # so that the error counter has a sample
        client.completions.create(model="nope", prompt="Hi")
    exported = set(re.findall(r"^(realm_\w+)", httpx.get(served.base + "/metrics").text, re.M))
    dashboard = (Path(__file__).parent.parent / "docs" / "grafana-realm.json").read_text()
    used = set(re.findall(r"\b(realm_\w+)", dashboard))
    assert used and used <= exported, f"the dashboard names metrics the server lacks: {used - exported}"


def test_chat_template_given_at_start_serves_a_model_without_one(tmp_path):
    from realm.testing.vocab import CHATML_TEMPLATE

    path = write_model(tmp_path / "plain.gguf", n_ctx=128, metadata={"tokenizer.chat_template": None})
    registry = ModelRegistry()
    live = LiveServer(create_app(registry))
    try:
        registry.load_all(
            [ModelSpec(str(path), "plain")],
            lambda p: realm.load(p, device="numpy"),
            chat_template=CHATML_TEMPLATE,
        )
        model = registry.get("plain").model
        messages = [{"role": "user", "content": "hi"}]
        client = openai.OpenAI(base_url=live.base + "/v1", api_key="x", max_retries=0)
        got = client.chat.completions.create(model="plain", messages=messages, max_tokens=4, temperature=0)
        expected = model.chat(messages, max_tokens=4, temperature=0, chat_template=CHATML_TEMPLATE)
        assert got.choices[0].message.content == expected.text
        assert got.usage.prompt_tokens == len(model.chat_tokens(messages, chat_template=CHATML_TEMPLATE))
    finally:
        live.stop()


def test_chat_logprobs_are_the_models_log_probabilities(served, client):
    model = smol(served)
    messages = [{"role": "user", "content": "Name a fruit."}]
    got = client.chat.completions.create(
        model="smol", messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    entries = got.choices[0].logprobs.content
    assert len(entries) == got.usage.completion_tokens == 6
    prompt = model.chat_tokens(messages)
    tokens = [model.tokenize(e.token, add_bos=False, special=True) for e in entries]
    assert all(len(t) == 1 for t in tokens), "each entry is one token's text"
    ids = prompt + [t[0] for t in tokens]
    logits = model.logits(ids)  # the library's logits at every position
    for k, entry in enumerate(entries):
        expected = log_softmax(logits[len(prompt) - 1 + k])
        token = ids[len(prompt) + k]
        assert entry.logprob == pytest.approx(expected[token], abs=1e-4)
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the likeliest
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    streamed = client.chat.completions.create(
        model="smol",
        messages=messages,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    stream_entries = [
        e for c in streamed if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert [(e.token, round(e.logprob, 6)) for e in stream_entries] == [
        (e.token, round(e.logprob, 6)) for e in entries
    ]


def test_completion_echo_scores_every_prompt_token(served, client):
    """What an evaluation harness does: echo the prompt with max_tokens=0 and read each token's
    log-probability given the tokens before it."""
    model = smol(served)
    text = "The quick brown fox jumps over the lazy dog"
    ids = model.tokenize(text)
    got = client.completions.create(model="smol", prompt=ids, max_tokens=0, echo=True, logprobs=2)
    choice = got.choices[0]
    assert choice.text == model.detokenize(ids)
    lp = choice.logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    logits = model.logits(ids)
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(log_softmax(logits[i - 1])[ids[i]], abs=1e-4)
        assert len(lp.top_logprobs[i]) <= 2
    assert lp.text_offset == sorted(lp.text_offset)
    # with generated tokens after the echoed prompt: the prompt's scores, then the new tokens'
    more = client.completions.create(
        model="smol", prompt=ids, max_tokens=3, echo=True, logprobs=1, temperature=0
    )
    assert more.choices[0].logprobs.token_logprobs[: len(ids)] == lp.token_logprobs
    assert len(more.choices[0].logprobs.tokens) == len(ids) + 3
    assert more.choices[0].text.startswith(choice.text)
    wait_idle(served)


def test_frequency_and_presence_penalties_reach_the_sampler(served, client):
    from realm.engine.request import Request as EngineRequest
    from realm.generate import SamplingParams

    model = smol(served)
    prompt = "one one one one one one"
    ids = model.tokenize(prompt)
    params = SamplingParams(temperature=0, frequency_penalty=1.5, presence_penalty=0.5)
    expected = model.engine.submit(EngineRequest(ids, params, 12)).result()
    plain = client.completions.create(model="smol", prompt=prompt, max_tokens=12, temperature=0)
    got = client.completions.create(
        model="smol", prompt=prompt, max_tokens=12, temperature=0, frequency_penalty=1.5, presence_penalty=0.5
    )
    assert got.choices[0].text == expected
    assert got.choices[0].text != plain.choices[0].text  # the penalties changed the greedy path


def test_a_full_queue_is_503_with_retry_after(tmp_path):
    from realm.engine.request import Request as EngineRequest

    path = write_model(tmp_path / "m.gguf", n_ctx=512)
    registry = ModelRegistry()
    live = LiveServer(create_app(registry))
    try:
        registry.load_all(
            [ModelSpec(str(path), "m")], lambda p: realm.load(p, device="numpy", n_seq_max=1, max_waiting=0)
        )
        engine = registry.get("m").model.engine
        # one long request holds the only sequence slot, and no request may wait
        running = engine.submit(EngineRequest([1, 2, 3], max_tokens=500, ignore_eos=True))
        try:
            response = httpx.post(
                live.base + "/v1/completions", json={"model": "m", "prompt": "b", "max_tokens": 2}
            )
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "server_busy"
        finally:
            running.cancel()
        assert (
            httpx.post(
                live.base + "/v1/completions", json={"model": "m", "prompt": "b", "max_tokens": 2}
            ).status_code
            == 200
        )
    finally:
        live.stop()
