"""The official OpenAI Node client (npm package ``openai``) against a live realm server.

Needs ``node`` and ``npm ci --prefix tests/node_client`` (.ci/run does both). Without them the
test skips, unless REALM_REQUIRE_NODE=1 (CI), where it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

CLIENT_DIR = Path(__file__).parent / "node_client"


def _node_or_skip() -> str:
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (CLIENT_DIR / "node_modules" / "openai").is_dir():
        missing = "the openai npm package is not installed: npm ci --prefix tests/node_client"
    if missing:
        if os.environ.get("REALM_REQUIRE_NODE") == "1":
            pytest.fail(f"REALM_REQUIRE_NODE=1 but {missing}")
        pytest.skip(missing)
    return node


def test_the_node_client_gets_what_the_python_client_gets(served):
    node = _node_or_skip()
    done = subprocess.run(
        [node, str(CLIENT_DIR / "client.mjs"), served.base + "/v1", "smol"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=CLIENT_DIR,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    py = openai.OpenAI(base_url=served.base + "/v1", api_key="unused", max_retries=0)
    completion = py.completions.create(
        model="smol", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    chat = py.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0
    )
    assert got["models"] == ["smol", "smol-again", "tiny"]
    assert got["completion"] == completion.choices[0].text
    assert got["chat"] == chat.choices[0].message.content
    assert got["streamed"] == got["chat"] and got["finish"] == "length"
    assert got["usage"]["completion_tokens"] == 8
    assert got["notFound"] == {"status": 404, "code": "model_not_found"}
