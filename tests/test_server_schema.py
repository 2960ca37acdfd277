"""`realm serve` against its own OpenAPI schema: schemathesis generates requests from
``/openapi.json`` (valid and invalid bodies for every operation) and none may get a 5xx
(503 aside: it is the documented "busy, retry" answer).

This checks that the schema matches what the server really accepts and that no input, however
odd, reaches an unhandled error. The number of examples is bounded so that CI stays quick.
"""

from __future__ import annotations

import collections

import schemathesis
from hypothesis import HealthCheck, given, settings

EXAMPLES_PER_OPERATION = 25


def test_no_generated_request_gets_a_server_error(served):
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("POST", "/tokenize"),
        ("POST", "/detokenize"),
    }
    answered: collections.Counter = collections.Counter()
    for operation in operations:
        # as generated (the model id is almost never a served one), then with a served model
        # named, so that odd parameters reach tokenizing, the templates and the engine
        for strategy in (operation.as_strategy(), operation.as_strategy().map(_naming_tiny)):

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def no_server_error(case):
                response = case.call(timeout=120)
                code = response.json().get("error", {}).get("code") if response.status_code == 400 else None
                answered[(case.path, response.status_code, code)] += 1
                assert response.status_code < 500 or response.status_code == 503, (
                    f"{case.method} {case.path} answered {response.status_code}: {response.text[:500]}"
                )

            no_server_error()
    # some generated requests got past validation to the model: answered, or measured against
    # its context (random max_tokens are mostly too large)
    reached = [
        k
        for k in answered
        if k[0] == "/v1/completions" and (k[1] == 200 or k[2] == "context_length_exceeded")
    ]
    assert reached, f"no generated completion request reached the model: {dict(answered)}"


def _naming_tiny(case):
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "tiny"
    return case
