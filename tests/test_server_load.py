"""A load test of `realm serve`: 32 concurrent streaming clients, 128 chat requests of mixed
lengths sharing a system prompt, every eighth hung up early. Every stream that finishes is
well formed and equals its request's solo greedy output (nothing cross-wired), every request
is accounted for in the metrics, the shared prompt's blocks come from the prefix cache, and
the server does not grow: the load runs twice, and memory after the second run is within 10%
of before it. (The first run grows the KV buffers to what 32 sequences need; they keep that
size, as a preallocated pool would, and keep freed blocks as prefix cache.)"""

from __future__ import annotations

import asyncio

import openai

SYSTEM = (
    "You are a careful assistant for a small bakery. Answer every question in one short, "
    "friendly sentence, and never mention that you are an assistant."
)
N_REQUESTS = 128
CONCURRENCY = 32
LENGTHS = (8, 16, 24, 32)
SMOL = '{backend="cpu",model="smol"}'


def _messages(i: int) -> list[dict]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Customer {i} asks: how many rolls are in {i % 7 + 2} dozen?"},
    ]


def test_32_clients_128_requests(served):
    model = served.reference
    cancel = {i for i in range(N_REQUESTS) if i % 8 == 3}
    # each request's solo greedy output, by the library in this process (batch-invariant: the
    # same tokens alone or batched); grouped by length, since a batch shares max_tokens
    expected: dict[int, str] = {}
    for length in LENGTHS:
        wanted = [i for i in range(N_REQUESTS) if LENGTHS[i % len(LENGTHS)] == length and i not in cancel]
        done = model.generate_batch(
            [model.chat_tokens(_messages(i)) for i in wanted], max_tokens=length, temperature=0
        )
        expected.update({i: c.text for i, c in zip(wanted, done, strict=True)})
    _load_once(served, cancel, expected)  # grows the KV buffers to their working size
    rss_before = served.rss_bytes()
    _load_once(served, cancel, expected)

    rss_after = served.rss_bytes()
    assert rss_after <= 1.10 * rss_before, (
        f"server memory grew from {rss_before >> 20} to {rss_after >> 20} MiB"
    )


def _load_once(served, cancel: set[int], expected: dict[int, str]) -> None:
    before = served.metrics()

    async def one(client, gate, i):
        async with gate:
            stream = await client.chat.completions.create(
                model="smol",
                messages=_messages(i),
                max_tokens=LENGTHS[i % len(LENGTHS)],
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = []
            async for chunk in stream:
                chunks.append(chunk)
                if i in cancel and len(chunks) == 3:
                    await stream.close()
                    return i, None
            return i, chunks

    async def run_all():
        gate = asyncio.Semaphore(CONCURRENCY)
        async with openai.AsyncOpenAI(
            base_url=served.base + "/v1", api_key="x", max_retries=0, timeout=300
        ) as client:
            return await asyncio.gather(*(one(client, gate, i) for i in range(N_REQUESTS)))

    results = dict(asyncio.run(run_all()))
    assert sorted(results) == list(range(N_REQUESTS)), "a request was lost"
    for i, chunks in results.items():
        if i in cancel:
            continue
        assert chunks is not None
        assert len({(c.id, c.created, c.model) for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        *body, last_choice, usage = chunks
        assert usage.choices == [] and usage.usage is not None
        assert last_choice.choices[0].finish_reason in ("stop", "length")
        text = "".join(c.choices[0].delta.content or "" for c in body)
        assert text == expected[i], f"request {i}: {text!r} != solo {expected[i]!r}"
        assert 0 < usage.usage.completion_tokens <= LENGTHS[i % len(LENGTHS)]

    after = served.metrics()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    finished = sum(
        delta(f'realm_request_success_total{{backend="cpu",finished_reason="{r}",model="smol"}}')
        for r in ("stop", "length", "abort")
    )
    assert finished == N_REQUESTS
    assert delta('realm_request_success_total{backend="cpu",finished_reason="abort",model="smol"}') == len(
        cancel
    )
    # the shared system prompt's full blocks were found in the prefix cache, not recomputed
    assert delta(f"realm_prefix_cache_hits_total{SMOL}") >= 16 * (N_REQUESTS - 1)
    assert after[f"realm_requests_running{SMOL}"] == 0 and after[f"realm_kv_cache_usage_ratio{SMOL}"] == 0
